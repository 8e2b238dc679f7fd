//! [`AsyncQueue`] (feature `tokio`): `wait().await` on a queue, through tokio's reactor.

use std::fmt;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::{Batch, Error, Queue, Result};

/// A [`Queue`] whose [`wait`](AsyncQueue::wait) is a future (feature `tokio`): the
/// queue's [`notify_fd`](Queue::notify_fd) registered with tokio's reactor
/// ([`AsyncFd`]).
///
/// Control calls go through [`queue`](AsyncQueue::queue) (`add`, `modify`, `remove`,
/// `ready`, `wake`: they never block on events). Share it between tasks in an `Arc`:
/// several tasks may wait at once, and every event goes to exactly one of them.
///
/// ```
/// use kevent::{AsyncQueue, Queue, Source, Token, Trigger};
///
/// # fn main() -> std::io::Result<()> {
/// let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
/// rt.block_on(async {
///     let queue = AsyncQueue::new(Queue::builder().capacity(64).build()?)?;
///     queue.queue().add(&Source::user(1), Token(1), Trigger::Edge)?;
///     let q = queue.queue();
///     std::thread::scope(|s| {
///         s.spawn(|| q.ready(&Source::user(1)));
///     });
///     let batch = queue.wait(16).await?;
///     assert_eq!(batch.iter().map(|e| e.token()).collect::<Vec<_>>(), [Token(1)]);
///     Ok(())
/// })
/// # }
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub struct AsyncQueue {
    fd: AsyncFd<Queue>,
}

impl AsyncQueue {
    /// Arms `queue`'s notify fd and registers it, for readability, with the reactor of the
    /// current tokio runtime (which must have I/O enabled).
    ///
    /// # Panics
    /// Outside a tokio runtime, or in one without I/O enabled (as [`AsyncFd::new`]).
    ///
    /// # Errors
    /// As [`Queue::notify_fd`] (which this arms; a [`connect`](Queue::connect)ed queue
    /// works too). The reactor's registration error otherwise. The queue is dropped in
    /// either case.
    pub fn new(queue: Queue) -> Result<AsyncQueue> {
        queue.notify_fd()?;
        // SAFETY: the fd is the queue's handle, an `OwnedFd` inside the queue's shared
        // state: it stays open, and `as_raw_fd` returns that same number, for as long as
        // the queue lives — and the `AsyncFd` owns the queue until it is dropped or
        // `into_inner` gives it back.
        let fd = unsafe { AsyncFd::register_with_interest(queue, Interest::READABLE) }
            .map_err(|e| Error::wrap("kevent AsyncQueue: registering with tokio", e.into()))?;
        Ok(AsyncQueue { fd })
    }

    /// The queue, for control calls (and for [`Queue::wait`] with a timeout of zero).
    pub fn queue(&self) -> &Queue {
        self.fd.get_ref()
    }

    /// Deregisters from the reactor and gives the queue back (still armed).
    pub fn into_inner(self) -> Queue {
        self.fd.into_inner()
    }

    /// Waits until events are ready, then claims up to `max` of them (as
    /// [`Queue::wait`]); the [`Batch`] commits when dropped, as ever.
    ///
    /// It returns as soon as events are published, and never busy-waits: the task sleeps
    /// in the reactor, and is woken when the notify fd becomes readable; readiness is
    /// cleared only after a zero-timeout wait found the ring empty (and reset the fd
    /// before its last look, so a publish that races with it is a new readiness, not a
    /// lost one). An empty batch means a [`wake`](Queue::wake) happened while this wait
    /// was pending.
    ///
    /// **Cancel-safe**: the only await is for readiness; events are claimed in the same
    /// poll that returns them. Dropping the future (in `tokio::select!`, or with
    /// `tokio::time::timeout` — how to wait with a deadline) loses no event.
    ///
    /// # Errors
    /// As [`Queue::wait`] (`EINVAL` for `max == 0`, `BrokenPipe` when the queue
    /// closed...), and the reactor's errors.
    pub async fn wait(&self, max: usize) -> Result<Batch<'_>> {
        let queue = self.queue();
        if max == 0 {
            return queue.wait(max, Some(Duration::ZERO)); // its EINVAL
        }
        // Wake-ups from now on end this wait (as Queue::wait's do).
        let kicks = queue.ring().kicks();
        loop {
            let mut ready = self
                .fd
                .readable()
                .await
                .map_err(|e| Error::wrap("kevent async wait", e))?;
            let batch = queue.wait(max, Some(Duration::ZERO))?;
            if !batch.is_empty() {
                // Readiness stays set: more may wait, and the next call looks first.
                return Ok(batch);
            }
            // The empty wait reset the notify fd, then found the ring empty: sleep until
            // the next publish writes it again. (clear_ready keeps readiness the reactor
            // reported since `ready` was taken.)
            ready.clear_ready();
            if queue.ring().kicks() != kicks {
                return Ok(batch);
            }
        }
    }
}

impl fmt::Debug for AsyncQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncQueue")
            .field("queue", self.fd.get_ref())
            .finish()
    }
}

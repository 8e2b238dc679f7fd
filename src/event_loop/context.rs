//! [`Loop`] itself (QEMU's `AioContext`): what it holds, how it is made and dropped, and
//! the calls that attach work to it.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};

use super::adaptive::Adaptive;
use super::bh::{Bh, BhCallback};
use super::external::External;
use super::handler::{FdHandler, HandlerTable};
use super::lock;
use super::notifier::EventNotifier;
use super::poll::Work;
use super::stats::{bump, Counters, LoopStats};
use super::timer::TimerList;
use super::wake::Waker;
use crate::{Error, Queue, Result};

/// Events a poll claims at most, by default.
const DEFAULT_MAX_EVENTS: usize = 64;

/// Loop ids, process-wide: they name the per-thread frames.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// What the handles of a loop ([`Bh`], [`EventNotifier`], [`Timer`](crate::Timer)) reach
/// from any thread.
pub(super) struct Shared {
    pub(super) waker: Waker,
    /// The lock-free list of queued bottom halves and notifiers (see the module docs).
    bh_tx: Sender<Work>,
    pub(super) timers: Mutex<TimerList>,
    /// Bottom halves and notifiers on the list, not yet taken by a poll (a hint for
    /// [`Loop::compute_timeout`]; `notified` is what keeps a loop from sleeping past them).
    pub(super) queued: AtomicUsize,
    /// Idle bottom halves scheduled and not yet run (they cap the timeout at 10 ms).
    pub(super) idle_bhs: AtomicUsize,
    pub(super) counters: Counters,
    /// The first error met and not yet taken.
    error: Mutex<Option<Error>>,
}

impl Shared {
    /// Queues a bottom half or notifier; `false` if the loop is gone.
    pub(super) fn push(&self, work: Work) -> bool {
        self.queued.fetch_add(1, Ordering::Relaxed);
        let sent = self.bh_tx.send(work).is_ok();
        if !sent {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
        sent
    }

    /// `aio_notify`, keeping an error for [`Loop::take_error`].
    pub(super) fn notify(&self) {
        if let Err(e) = self.waker.notify(&self.counters) {
            self.record(e);
        }
    }

    /// Counts an error, and keeps it if it is the first not taken yet.
    pub(super) fn record(&self, e: Error) {
        bump(&self.counters.errors);
        let mut slot = lock(&self.error);
        if slot.is_none() {
            *slot = Some(e);
        }
    }
}

/// An event loop on a kevent queue: QEMU's `AioContext` and `aio_poll` (ARCHITECTURE.md §9).
///
/// * **fd handlers** — read, write and poll callbacks per fd
///   ([`set_fd_handler`](Loop::set_fd_handler)), each a kevent on the queue;
/// * **event notifiers** — flags set from any thread
///   ([`event_notifier`](Loop::event_notifier));
/// * **bottom halves** — callbacks scheduled from any thread, lock-free ([`bh`](Loop::bh),
///   [`schedule_oneshot`](Loop::schedule_oneshot));
/// * **timers** — nanosecond deadlines on `CLOCK_MONOTONIC` or `CLOCK_REALTIME`
///   ([`timer`](Loop::timer)); the nearest is the wait's timeout;
/// * **attached queues** — another queue's events, one batch per poll
///   ([`attach_queue`](Loop::attach_queue)): how several processes, each with a loop of
///   its own, drive one shared queue's handlers, each event dispatched once;
/// * **[`poll`](Loop::poll)** — one iteration, nestable, with external sources left alone
///   in nested polls and drained sections, and optional adaptive busy polling.
///
/// Every callback gets `&Loop`, so it can poll, schedule and (un)register without
/// capturing the loop. (A callback that captures an `Arc<Loop>` makes a reference cycle:
/// delete or remove it before dropping the loop.)
///
/// A loop must be the only consumer of its queue: its handler tokens are meaningful only
/// to it, and a waker wakes one sleeper of the queue, which must be one of its threads. It is `Send + Sync`: run it in one thread
/// ([`IoThread`](crate::IoThread)) and give it work from others through an `Arc<Loop>` or
/// the handles, or poll it from several threads (each event is dispatched by one).
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::sync::Arc;
/// use std::time::Duration;
/// use kevent::{Clock, Loop};
///
/// let lp = Arc::new(Loop::new()?);
/// let ran = Arc::new(AtomicU32::new(0));
///
/// // A bottom half scheduled from another thread wakes the sleeping loop.
/// let r = ran.clone();
/// let bh = lp.bh(move |_lp, _bh| {
///     r.fetch_add(1, Ordering::Relaxed);
/// });
/// let remote = bh.clone();
/// let t = std::thread::spawn(move || remote.schedule());
/// while ran.load(Ordering::Relaxed) == 0 {
///     lp.poll(true);
/// }
/// t.join().unwrap();
///
/// // A timer 2 ms away is the next poll's timeout.
/// let fired = lp.timer(Clock::Monotonic, |_lp, _t| {});
/// fired.arm_after(Duration::from_millis(2));
/// assert!(lp.compute_timeout().expect("a deadline") <= Duration::from_millis(2));
/// while fired.is_armed() {
///     lp.poll(true);
/// }
/// bh.delete();
/// # Ok::<(), kevent::Error>(())
/// ```
pub struct Loop {
    pub(super) queue: Arc<Queue>,
    pub(super) shared: Arc<Shared>,
    pub(super) handlers: HandlerTable,
    pub(super) external: External,
    pub(super) adaptive: Adaptive,
    /// The receiving end of the bottom-half list: a lock only between this loop's
    /// polling threads, never taken by a scheduler.
    pub(super) bh_rx: Mutex<Receiver<Work>>,
    max_events: AtomicUsize,
    /// The notify fds of the queues attached with [`Loop::attach_queue`].
    pub(super) attached: Mutex<Vec<std::os::fd::RawFd>>,
    pub(super) id: u64,
}

impl Loop {
    /// `aio_context_new`: a loop on a queue of its own (the default 1024 entries).
    ///
    /// # Errors
    /// As [`Builder::build`](crate::Builder::build).
    #[doc(alias = "aio_context_new")]
    pub fn new() -> Result<Loop> {
        Loop::with_queue(Arc::new(Queue::new()?))
    }

    /// A loop on `queue`, which it must be the only consumer of (see the type's docs):
    /// its sleeping threads are woken with the queue's explicit wake-up, which reaches
    /// one sleeper of the queue.
    ///
    /// # Errors
    /// `EOPNOTSUPP`: `queue` was inherited across `fork` (use
    /// [`Queue::for_this_process`]).
    pub fn with_queue(queue: Arc<Queue>) -> Result<Loop> {
        queue.wake_count()?;
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let (bh_tx, bh_rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            waker: Waker::new(Arc::downgrade(&queue)),
            bh_tx,
            timers: Mutex::default(),
            queued: AtomicUsize::new(0),
            idle_bhs: AtomicUsize::new(0),
            counters: Counters::default(),
            error: Mutex::new(None),
        });
        Ok(Loop {
            queue,
            shared,
            handlers: HandlerTable::default(),
            external: External::default(),
            adaptive: Adaptive::default(),
            bh_rx: Mutex::new(bh_rx),
            max_events: AtomicUsize::new(DEFAULT_MAX_EVENTS),
            attached: Mutex::default(),
            id,
        })
    }

    /// The loop's queue.
    pub fn queue(&self) -> &Arc<Queue> {
        &self.queue
    }

    /// How many events a poll claims at most (default 64). Fewer spread the events of a
    /// loop polled by several threads more evenly; more save waits.
    pub fn set_max_events(&self, max: usize) {
        self.max_events.store(max.max(1), Ordering::Relaxed);
    }

    /// How many events a poll claims at most.
    pub fn max_events(&self) -> usize {
        self.max_events.load(Ordering::Relaxed)
    }

    /// `aio_set_fd_handler`: sets, replaces or — with no callbacks — removes the handler
    /// of `fd`. From any thread and any callback (the running handler's own fd
    /// included). The loop watches `fd` until [`remove_fd_handler`](Loop::remove_fd_handler):
    /// remove it before closing the fd, as with epoll. An fd that is ready already is
    /// dispatched at the next poll.
    ///
    /// # Errors
    /// As [`Queue::add`] (`EBADF`: not an open fd; `EPERM`: a file epoll cannot watch)
    /// and [`Queue::modify`] when the callbacks change the mask.
    #[doc(alias = "aio_set_fd_handler")]
    pub fn set_fd_handler(&self, fd: &impl AsFd, handler: FdHandler) -> Result<()> {
        let fd = fd.as_fd().as_raw_fd();
        self.handlers.set(&self.queue, fd, handler)
    }

    /// Removes the handler of `fd`; returns whether there was one. Its events not yet
    /// dispatched are dropped — safe during dispatch, from the handler itself too.
    ///
    /// # Errors
    /// As [`Queue::remove`].
    pub fn remove_fd_handler(&self, fd: &impl AsFd) -> Result<bool> {
        self.handlers.remove(&self.queue, fd.as_fd().as_raw_fd())
    }

    /// `aio_bh_new`: a bottom half running `callback` in this loop; not scheduled yet.
    #[doc(alias = "aio_bh_new")]
    pub fn bh(&self, callback: impl Fn(&Loop, &Bh) + Send + Sync + 'static) -> Bh {
        Bh::new(&self.shared, BhCallback::Many(Arc::new(callback)))
    }

    /// `aio_bh_schedule_oneshot`: runs `callback` once at the loop's next iteration.
    /// From any thread (share the loop in an `Arc`); lock-free, a system call only if the
    /// loop sleeps.
    #[doc(alias = "aio_bh_schedule_oneshot")]
    pub fn schedule_oneshot(&self, callback: impl FnOnce(&Loop) + Send + 'static) {
        Bh::oneshot(&self.shared, Box::new(callback));
    }

    /// `aio_set_event_notifier`: a notifier whose `handler` this loop runs after each
    /// [`set`](EventNotifier::set).
    #[doc(alias = "aio_set_event_notifier")]
    pub fn event_notifier(
        &self,
        handler: impl Fn(&Loop, &EventNotifier) + Send + Sync + 'static,
    ) -> EventNotifier {
        EventNotifier::new(&self.shared, false, Arc::new(handler))
    }

    /// A notifier of an external source: as [`event_notifier`](Loop::event_notifier), but
    /// not dispatched in nested polls and drained sections (see
    /// [`drained_begin`](Loop::drained_begin)).
    pub fn external_event_notifier(
        &self,
        handler: impl Fn(&Loop, &EventNotifier) + Send + Sync + 'static,
    ) -> EventNotifier {
        EventNotifier::new(&self.shared, true, Arc::new(handler))
    }

    /// `aio_notify`: makes the loop's current or next blocking poll return (without
    /// progress, unless there is work). From any thread; a system call only if the loop
    /// sleeps. One sleeping thread of the loop is woken.
    #[doc(alias = "aio_notify")]
    pub fn notify(&self) {
        self.shared.notify();
    }

    /// The loop's counters.
    pub fn stats(&self) -> LoopStats {
        self.shared.counters.snapshot(self.adaptive.poll_ns())
    }

    /// The first error the loop met and kept since the last call (a queue error in
    /// [`poll`](Loop::poll), a failed wake-up, a failed (un)registration of an external
    /// handler's kevent), or `None`.
    pub fn take_error(&self) -> Option<Error> {
        lock(&self.shared.error).take()
    }
}

impl Drop for Loop {
    /// Unregisters the loop's kevents from its queue, disarms its timers and drops the
    /// bottom halves and notifiers still queued. Handles kept elsewhere stay valid and do
    /// nothing: scheduling or arming them has no effect (a bottom half scheduled then may
    /// still say [`is_scheduled`](Bh::is_scheduled); it never runs).
    fn drop(&mut self) {
        lock(&self.shared.timers).close();
        self.handlers.clear(&self.queue);
        self.external.clear();
        // Dropping the receiver with the loop discards what is still queued; later sends
        // fail (`Shared::push`).
    }
}

impl fmt::Debug for Loop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loop")
            .field("id", &self.id)
            .field("queue", &self.queue)
            .field("poll_params", &self.poll_params())
            .field("external_enabled", &self.is_external_enabled())
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_and_its_handles_can_be_shared_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Loop>();
        send_sync::<Bh>();
        send_sync::<EventNotifier>();
        send_sync::<crate::Timer>();
    }

    #[test]
    fn dropping_the_loop_unregisters_its_fd_handlers_and_leaves_no_kevent() {
        let queue = Arc::new(Queue::new().unwrap());
        let (r, _w) = std::io::pipe().unwrap();
        let lp = Loop::with_queue(queue.clone()).unwrap();
        lp.set_fd_handler(&r, FdHandler::new().read(|_| {}))
            .unwrap();
        assert_eq!(queue.stats().registered, 1, "the fd handler's kevent only");
        drop(lp);
        let fd = crate::Source::poll(&r, crate::PollMask::IN);
        assert!(queue.remove(&fd).is_err(), "the fd kevent is gone");
        assert_eq!(queue.stats().registered, 0);
    }

    #[test]
    fn handles_outliving_the_loop_do_nothing() {
        let lp = Loop::new().unwrap();
        let bh = lp.bh(|_, _| panic!("the loop is gone"));
        let t = lp.timer(crate::Clock::Monotonic, |_, _| {});
        drop(lp);
        bh.schedule();
        t.arm_after(std::time::Duration::from_millis(1));
        assert!(!t.is_armed());
    }
}

//! [`Queue`]: one kevent queue — its ring, its producer, and this process's consumer.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kevent_ring::Ring;
use kevent_syscalls as sys;

use crate::{Batch, Builder, Error, Result, Stats};

/// A kevent queue.
///
/// Made with [`Queue::builder`]; kevents are registered with [`add`](Queue::add) and
/// friends; events are taken with [`wait`](Queue::wait), which returns a [`Batch`] that
/// commits when dropped. `Queue` is `Send + Sync`: share it between threads by reference
/// (`std::thread::scope`) or in an `Arc`, and call `wait` from as many threads as you
/// like — claims are lock-free and every thread gets different events.
///
/// Dropping the queue in the process that created it stops its producer thread, closes
/// every fd it made (its timerfds, the sockets it served; never yours) and
/// makes waiters elsewhere — other processes included — return an error. Dropping a
/// [`connect`](Queue::connect)ed queue detaches this consumer.
///
/// # The handle fd, and other event loops
///
/// [`AsRawFd`]/[`AsFd`] give *the handle fd*: the number `kevent_init` returns, an fd of
/// this process (an eventfd) that stands for the queue. It becomes readable when events
/// are ready **only after [`notify_fd`](Queue::notify_fd) has armed it**; that is how the
/// queue nests in another event loop (epoll, mio, tokio).
pub struct Queue {
    inner: Arc<sys::Instance>,
}

impl Queue {
    /// A [`Builder`] with the defaults (1024 entries, no spin).
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A queue with the defaults; the same as `Queue::builder().build()`.
    ///
    /// # Errors
    /// As [`Builder::build`].
    pub fn new() -> Result<Queue> {
        Queue::builder().build()
    }

    pub(crate) fn from_inner(inner: Arc<sys::Instance>) -> Queue {
        Queue { inner }
    }

    /// The queue value to act through, refusing a parent's copy in a `fork`ed child.
    pub(crate) fn inner(&self, op: &str) -> Result<&sys::Instance> {
        if self.inner.is_local() {
            Ok(&self.inner)
        } else {
            Err(Error::errno(
                libc::EOPNOTSUPP,
                format!(
                    "{op}: this Queue value was inherited across fork from the process that \
                     made it; call Queue::for_this_process in the child"
                ),
            ))
        }
    }

    /// Serves the queue on a Unix socket at `path`, so that other processes of the same
    /// user (or root) can [`connect`](Queue::connect) to it: they map the ring, become
    /// consumers, and control the queue through the socket. The socket file is removed
    /// when the queue is dropped. Every queue also serves an abstract socket that
    /// [`for_this_process`](Queue::for_this_process) uses after `fork`.
    ///
    /// # Errors
    /// `EADDRINUSE`: `path` exists. `EOPNOTSUPP`: this process did not create the queue.
    pub fn listen(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        self.inner("kevent listen")?
            .listen(path)
            .map_err(|e| Error::wrap(&format!("kevent listen on {}", path.display()), e))
    }

    /// Attaches to the queue another process serves at `path` (see
    /// [`listen`](Queue::listen)). The result is a full `Queue` for this process: `wait`
    /// claims from the shared ring as a consumer of its own, and `add`/`modify`/`remove`/
    /// `ready` go through the socket (fds travel with `SCM_RIGHTS`; the id of an fd
    /// kevent is *your* fd number). If this process dies with a batch uncommitted, its
    /// events are delivered again to another consumer, flagged
    /// [`Event::is_redelivered`](crate::Event::is_redelivered).
    ///
    /// # Errors
    /// `ENOENT`/`ECONNREFUSED`: nobody serves `path`. `InvalidData`: not a ring of this
    /// ABI. `WouldBlock`: the consumer table is full.
    pub fn connect(path: impl AsRef<Path>) -> Result<Queue> {
        let path = path.as_ref();
        let inner = sys::Instance::connect(path)
            .map_err(|e| Error::wrap(&format!("kevent connect to {}", path.display()), e))?;
        Ok(Queue::from_inner(inner))
    }

    /// The queue as a `fork`ed child should use it: in the process that made (or
    /// connected) the queue, another handle to the same attachment (the queue closes
    /// when the last one is dropped); in a child, a new
    /// attachment with its own consumer record, controlled through the creator's socket.
    /// A child must not use the parent's `Queue` value itself (its methods answer
    /// `EOPNOTSUPP`).
    ///
    /// Forking a process that has threads (the producer runs in one) is only sound if the
    /// child does nothing but async-signal-safe work before `exec`, or the threads did
    /// not hold locks; the safe way to run consumers in other processes is to spawn them
    /// and let them [`connect`](Queue::connect).
    ///
    /// # Errors
    /// As [`connect`](Queue::connect).
    pub fn for_this_process(&self) -> Result<Queue> {
        let inner = self
            .inner
            .for_this_process()
            .map_err(|e| Error::wrap("kevent attach after fork", e))?;
        Ok(Queue::from_inner(inner))
    }

    /// Number of ring entries.
    pub fn capacity(&self) -> usize {
        self.inner.ring().capacity() as usize
    }

    /// The producer's counters.
    pub fn stats(&self) -> Stats {
        Stats::of(self.inner.ring())
    }

    /// The shared ring itself: positions, consumer table, slot states. For inspection
    /// (this is what `kevent stat` reads); taking events behind the queue's back through
    /// it breaks the accounting of [`Batch`].
    pub fn ring(&self) -> &Ring {
        self.inner.ring()
    }

    /// Changes how long waiters spin before sleeping (see [`Builder::spin`]).
    pub fn set_spin(&self, spin: Duration) {
        self.inner.set_spin(spin);
    }

    /// The queue's fd for another event loop (epoll, mio, tokio): readable while events
    /// may be waiting. The first call arms it — from then on every publish makes it
    /// readable, and a [`wait`](Queue::wait) of this process that finds the ring empty
    /// resets it. Register it for readability; on readiness, call `wait` with
    /// `Some(Duration::ZERO)` until it returns an empty batch. It is the same fd as
    /// [`as_raw_fd`](AsRawFd::as_raw_fd).
    ///
    /// Exactly: it is an eventfd that every publish *writes* (so each publish is also an
    /// edge for an edge-triggered registration, as mio's and tokio's are), and that a
    /// `wait` finding nothing to claim *reads* (resets) before it looks at the ring one
    /// last time. So once a zero-timeout wait has returned an empty batch, every entry
    /// published since is announced by a new write: draining until empty loses nothing,
    /// with level- or edge-triggered registrations. Stopping at a non-empty batch can
    /// leave entries no further edge announces. It may also be readable with nothing to
    /// take (another consumer took it, or a [`wake`](Queue::wake)): the drain then
    /// finds an empty batch at once. Remove a level-triggered source at EOF, or the
    /// drain never ends (see [`Event::is_read_closed`](crate::Event::is_read_closed)).
    ///
    /// The features `mio` (`impl mio::event::Source for Queue`) and `tokio`
    /// ([`AsyncQueue`](crate#other-event-loops)) are built on it.
    ///
    /// Arming costs the queue one optimisation: the producer thread no longer parks
    /// while this process's consumers take events (a loop asleep on this fd is not
    /// taking them).
    ///
    /// A [`connect`](Queue::connect)ed consumer has one too: arming sends it to the
    /// owner through the queue's socket, and the owner writes it wherever it writes its
    /// own; the owner forgets it when this consumer's connection closes (and it is
    /// re-armed if the connection is remade).
    ///
    /// # Errors
    /// `EOPNOTSUPP`: a value inherited across `fork` (use
    /// [`for_this_process`](Queue::for_this_process)), or a queue attached without a
    /// socket to its owner. The socket's errors when the owner cannot be reached.
    pub fn notify_fd(&self) -> Result<BorrowedFd<'_>> {
        self.inner("kevent notify_fd")?
            .notify_fd()
            .map_err(|e| Error::wrap("kevent notify_fd", e))
    }

    /// `kevent_wait`: waits until events are ready, then claims up to `max` of them (at
    /// most the ring's capacity) for the caller. `timeout` `None` waits for ever;
    /// `Some(Duration::ZERO)` only looks.
    ///
    /// The [`Batch`] owns the claimed entries until it is committed — explicitly, or when
    /// it is dropped. An empty batch means the timeout passed, or someone called
    /// [`wake`](Queue::wake).
    ///
    /// # Errors
    /// `EINVAL`: `max == 0`. `EINTR`: a signal handler ran during the wait (call again).
    /// [`BrokenPipe`](std::io::ErrorKind::BrokenPipe) (`EPIPE`): the queue was closed, or
    /// — for a queue of another process — its owner died.
    /// [`InvalidData`](std::io::ErrorKind::InvalidData): the ring was found corrupt.
    #[doc(alias = "kevent_wait")]
    pub fn wait(&self, max: usize, timeout: Option<Duration>) -> Result<Batch<'_>> {
        if max == 0 {
            return Err(Error::errno(
                libc::EINVAL,
                "kevent wait: max must be at least 1 event",
            ));
        }
        let kicks = self.inner("kevent wait")?.ring().kicks();
        self.wait_since(kicks, max, timeout)
    }

    /// The count of explicit wake-ups so far: a waiter that announces its sleep to its
    /// wakers first (the event loop) reads it before announcing, and waits with
    /// [`wait_since`](Queue::wait_since).
    pub(crate) fn wake_count(&self) -> Result<u32> {
        Ok(self.inner("kevent wait")?.ring().kicks())
    }

    /// An explicit wake-up without the kernel's lock (`kevent_syscalls::Instance::wake_one`).
    pub(crate) fn wake_one(&self) -> Result<()> {
        self.inner("kevent wake")?.wake_one();
        Ok(())
    }

    /// [`wait`](Queue::wait), which also ends on an explicit wake-up made since `kicks`
    /// was read ([`wake_count`](Queue::wake_count)).
    pub(crate) fn wait_since(
        &self,
        kicks: u32,
        max: usize,
        timeout: Option<Duration>,
    ) -> Result<Batch<'_>> {
        if max == 0 {
            return Err(Error::errno(
                libc::EINVAL,
                "kevent wait: max must be at least 1 event",
            ));
        }
        let inner = self.inner("kevent wait")?;
        let deadline = timeout.map(|t| {
            let ns = t.as_nanos().min(u128::from(u64::MAX)) as u64;
            kevent_ring::Deadline::Monotonic(kevent_ring::monotonic_now().saturating_add(ns))
        });
        let spec = inner.wait_spec(None, deadline);
        let (claim, outcome) = inner
            .next_batch_since(max.min(self.capacity()) as u64, &spec, kicks)
            .map_err(|e| Error::wrap("kevent wait", e))?;
        let failed = match outcome {
            kevent_ring::WaitOutcome::Closed if inner.ring().owner_died() => Some(Error::errno(
                libc::EPIPE,
                "kevent wait: the queue's owner died (its process ended without closing it)",
            )),
            kevent_ring::WaitOutcome::Closed => Some(Error::state(
                io::ErrorKind::BrokenPipe,
                "kevent wait: the queue was closed (its producer stopped)",
            )),
            kevent_ring::WaitOutcome::Broken => Some(Error::state(
                io::ErrorKind::InvalidData,
                "kevent wait: the ring is broken (its shared memory was found corrupt)",
            )),
            kevent_ring::WaitOutcome::Interrupted => Some(Error::errno(
                libc::EINTR,
                "kevent wait: interrupted by a signal",
            )),
            _ => None,
        };
        match failed {
            Some(e) => Err(e),
            None => Ok(Batch::new(&self.inner, claim)),
        }
    }
}

impl AsRawFd for Queue {
    /// The handle fd (see the type's docs: readable on events once
    /// [`notify_fd`](Queue::notify_fd) has armed it).
    fn as_raw_fd(&self) -> RawFd {
        self.inner.handle()
    }
}

impl AsFd for Queue {
    /// The handle fd (see the type's docs: readable on events once
    /// [`notify_fd`](Queue::notify_fd) has armed it).
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the handle is an `OwnedFd` inside `self.inner`, which `self` keeps alive
        // for the borrow's lifetime; it is closed only when the inner queue is dropped.
        unsafe { BorrowedFd::borrow_raw(self.inner.handle()) }
    }
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("handle", &self.inner.handle())
            .field("ring", self.inner.ring())
            .finish()
    }
}

//! [`Builder`]: how a [`Queue`] is made (`kevent_init`).

use std::sync::Arc;
use std::time::Duration;

use kevent_ring::layout::{MAX_CAPACITY, MIN_CAPACITY};
use kevent_syscalls as sys;

use crate::{Error, Queue, Result};

/// Configures and creates a [`Queue`]; from [`Queue::builder`].
///
/// ```
/// # use kevent::Queue;
/// # use std::time::Duration;
/// let queue = Queue::builder()
///     .capacity(256)
///     .spin(Duration::from_micros(5))
///     .build()?;
/// assert_eq!(queue.capacity(), 256);
/// # Ok::<(), kevent::Error>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "a Builder does nothing until .build()"]
pub struct Builder {
    capacity: usize,
    spin: Option<Duration>,
    reap_interval: Duration,
    lease: Duration,
    remote_signals: bool,
    peer_limits: Option<sys::PeerLimits>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            capacity: sys::KEVENT_DEFAULT_RING as usize,
            spin: None,
            reap_interval: sys::DEFAULT_REAP_INTERVAL,
            lease: sys::DEFAULT_LEASE,
            remote_signals: false,
            peer_limits: None,
        }
    }
}

impl Builder {
    /// Ring entries (`kevent_init`'s `num`), rounded up to a power of two; 2 to 2^24,
    /// default 1024. A full ring loses nothing (ready kevents wait in the producer's
    /// backlog), but every kevent can be pending at once only if the ring holds as many
    /// entries as there are registrations.
    pub fn capacity(mut self, entries: usize) -> Self {
        self.capacity = entries;
        self
    }

    /// How long a waiting consumer spins re-checking the ring before it sleeps on the
    /// futex (default [`kevent_syscalls::DEFAULT_SPIN`]: none). Waking a sleeper costs
    /// tens of microseconds; spinning costs CPU. `Duration::ZERO` never spins.
    pub fn spin(mut self, spin: Duration) -> Self {
        self.spin = Some(spin);
        self
    }

    /// How soon the events a dead consumer process had claimed are delivered again
    /// (default [`kevent_syscalls::DEFAULT_REAP_INTERVAL`], 100 ms): the producer checks
    /// the liveness locks of long-claimed entries' owners this often. At least
    /// [`kevent_syscalls::MIN_REAP_INTERVAL`] (1 ms): [`build`](Builder::build) answers
    /// `EINVAL` below.
    pub fn reap_interval(mut self, interval: Duration) -> Self {
        self.reap_interval = interval;
        self
    }

    /// How long a live consumer (stopped, or stuck in a loop) may hold the oldest
    /// unreleased event while the ring is full, events wait for room, or events committed
    /// after it wait for their release (the ring releases in order, and a level-triggered
    /// kevent is reported again only once its entry is released), before that event is
    /// delivered to another consumer, flagged
    /// [`Event::is_redelivered`](crate::Event::is_redelivered) (default
    /// [`kevent_syscalls::DEFAULT_LEASE`], 2 s). Its late commit is then a no-op. So no
    /// single consumer can stall the queue; at-least-once delivery is the price.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Whether processes that [`connect`](Queue::connect) may add [`Source::signal`]
    /// kevents (default `false`: they get `EPERM`). A signal kevent changes this
    /// process's disposition of that signal while it is registered (the previous one
    /// comes back when the last such kevent goes), so allow it only for trusted peers.
    ///
    /// [`Source::signal`]: crate::Source::signal
    pub fn remote_signals(mut self, allow: bool) -> Self {
        self.remote_signals = allow;
        self
    }

    /// What this process holds, at most, for each process that
    /// [`connect`](Queue::connect)s: its registrations (one more is refused with
    /// `ENOSPC`) and the fds held for them (`EMFILE`), and for all of them together
    /// (default [`PeerLimits::default`](crate::PeerLimits): 16,384 registrations per
    /// process, fds an eighth of this process's `RLIMIT_NOFILE` per process and half of
    /// it for all). Each process has its own kevents, which go when it disconnects or
    /// dies.
    pub fn peer_limits(mut self, limits: crate::PeerLimits) -> Self {
        self.peer_limits = Some(limits);
        self
    }

    /// `kevent_init`: creates the ring (a sealed memfd), the producer's epoll set and
    /// its thread.
    ///
    /// # Errors
    /// `EINVAL`: a capacity outside 2..=2^24, or a reap interval below 1 ms.
    /// `EMFILE`/`ENOMEM`: out of fds or memory.
    #[doc(alias = "kevent_init")]
    pub fn build(self) -> Result<Queue> {
        let n = self.capacity;
        if !(MIN_CAPACITY as usize..=MAX_CAPACITY as usize).contains(&n) {
            return Err(Error::errno(
                libc::EINVAL,
                format!(
                    "kevent queue: capacity {n} is out of range: it must be \
                     {MIN_CAPACITY}..={MAX_CAPACITY} (rounded up to a power of two)"
                ),
            ));
        }
        let inner: Arc<sys::Instance> = sys::Instance::create_with(n as u32, 0, self.reap_interval)
            .map_err(|e| Error::wrap(&format!("kevent queue of {n} entries"), e))?;
        if let Some(spin) = self.spin {
            inner.set_spin(spin);
        }
        if self.lease != sys::DEFAULT_LEASE {
            inner
                .set_lease(self.lease)
                .map_err(|e| Error::wrap("kevent queue: lease", e))?;
        }
        if self.remote_signals {
            inner
                .allow_remote_signals(true)
                .map_err(|e| Error::wrap("kevent queue: remote signals", e))?;
        }
        if let Some(limits) = self.peer_limits {
            inner
                .set_peer_limits(limits)
                .map_err(|e| Error::wrap("kevent queue: peer limits", e))?;
        }
        Ok(Queue::from_inner(inner))
    }
}

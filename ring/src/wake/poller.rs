//! The other two places a participant sleeps, and how every waker reaches them.
//!
//! A consumer sleeps on the ring's futex (`wait.rs`), but two more sleepers exist
//! (ARCHITECTURE.md §3, W1–W5):
//!
//! * **The poller:** a consumer of the owning process that, finding nothing, blocks on the
//!   queue's *sources* (the kernel's epoll fd) itself rather than on the futex, so that a
//!   readiness edge costs it one wake-up instead of two (producer thread, then consumer).
//!   It is counted in `pollers` and also listens to a *bell* (an eventfd of the owning
//!   process, or in another process the queue's doorbell, which the owner relays).
//! * **The parked producer:** while consumers of the owning process harvest the sources
//!   themselves, the producer thread parks on the shared futex word `park` instead of
//!   sitting in `epoll_wait` (where every edge would wake it for nothing). It says so in
//!   `unwatched`.
//!
//! Every waker goes through [`Ring::wake`]: store the news (an entry, a kick, `closed`),
//! SeqCst fence, read `waiters` and `pollers`; `FUTEX_WAKE` up to `n` futex sleepers, and
//! if that reached fewer than `n` while a poller exists, ring the bell. A poller
//! announces itself the same way a futex sleeper does — `pollers += 1`, SeqCst fence,
//! re-check — so either its re-check sees the news or the waker sees it (store-buffer
//! pattern; the fences forbid both missing). The bell is an eventfd, a counter: a ring
//! before the poller blocks makes its wait return at once.
//!
//! A futex sleeper needs somebody to watch the sources: the producer thread, or a poller
//! (which publishes what it finds, waking sleepers for all it does not claim itself).
//! Three parties each store, fence (SeqCst) and then read the others' words:
//!
//! * a futex sleeper: `waiters += 1`; reads `unwatched` and `pollers`;
//! * the producer before parking: `unwatched = 1`; reads `waiters` and `pollers`;
//! * a poller leaving: `pollers -= 1`; reads `unwatched` and `waiters`.
//!
//! Whichever of them comes last in the fences' total order sees the other two, and
//! acts: the sleeper or the leaving poller unparks the producer; the producer does not
//! park. So nobody sleeps on the futex while the sources go unwatched, and no periodic
//! tick is needed to rescue anyone. (The producer also parks at most `PARK_MAX` at a
//! time, which bounds how long a source can go unpublished while nobody sleeps at all.)

use crate::sync::{fence, Ordering};
use crate::wake::wait::WaitSpec;
use crate::{Ring, WaitOutcome};

/// How the ring reaches a poller: an eventfd (real use) or a hook (loom models).
pub(crate) struct Bell {
    #[cfg(not(loom))]
    fd: std::sync::OnceLock<crate::WakeFd>,
    #[cfg(loom)]
    hook: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl Bell {
    pub(crate) fn new() -> Bell {
        Bell {
            #[cfg(not(loom))]
            fd: std::sync::OnceLock::new(),
            #[cfg(loom)]
            hook: std::sync::OnceLock::new(),
        }
    }

    pub(crate) fn ring(&self) {
        #[cfg(not(loom))]
        if let Some(fd) = self.fd.get() {
            // Never blocks (`wakefd.rs`); an error means nobody reads it any more.
            let _ = fd.ring();
        }
        #[cfg(loom)]
        if let Some(hook) = self.hook.get() {
            hook();
        }
    }
}

impl Ring {
    /// Sets the fd that [`Ring::wake`] rings to reach a poller: in the owning process a
    /// private eventfd its pollers watch, elsewhere the queue's doorbell (the owner
    /// relays it). Set once; later calls are ignored.
    #[cfg(not(loom))]
    pub fn set_bell(&self, fd: crate::WakeFd) {
        let _ = self.bell.fd.set(fd);
    }

    /// Loom models: what ringing the bell does (the model's poller primitive).
    #[cfg(loom)]
    pub fn set_bell_hook(&self, hook: impl Fn() + Send + Sync + 'static) {
        let _ = self.bell.hook.set(Box::new(hook));
    }

    /// Rings the bell unconditionally (a waker that knows a poller must look).
    pub fn ring_bell(&self) {
        self.bell.ring();
    }

    /// Poller: announces that this thread is about to block on the sources. Returns the
    /// outcome to return instead, if there is one already (then it is not announced).
    /// After an announcement that returned `None`, block on the sources *and* the bell,
    /// then call [`Ring::poller_leave`].
    pub fn poller_enter(&self, spec: &WaitSpec) -> Option<WaitOutcome> {
        let wake = &self.header().wake;
        wake.pollers.fetch_add(1, Ordering::Relaxed);
        // SeqCst fence: the poller's half of the handshake with `wake` (module docs).
        fence(Ordering::SeqCst);
        let outcome = self.check(spec);
        if outcome.is_some() {
            self.poller_leave();
        }
        outcome
    }

    /// Poller: no longer blocked on the sources. If futex sleepers remain while the
    /// producer is parked, it is unparked to watch the sources for them (module docs).
    pub fn poller_leave(&self) {
        let wake = &self.header().wake;
        // Never below zero, whatever another process wrote.
        let _ = wake
            .pollers
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| p.checked_sub(1));
        // SeqCst fence: the leaving poller's part of the three-way handshake.
        fence(Ordering::SeqCst);
        if wake.waiters.load(Ordering::Relaxed) > 0 {
            self.unpark_producer();
        }
    }

    /// Consumers blocked on the sources (see the module docs).
    pub fn pollers(&self) -> u32 {
        self.header().wake.pollers.load(Ordering::Relaxed)
    }

    /// The explicit wake-up count (see [`WaitSpec::kicks`]).
    pub fn kicks(&self) -> u32 {
        self.header().wake.kicks.load(Ordering::Acquire)
    }

    /// An explicit wake-up (kevent's `READY` with no events): moves `kicks`, then wakes
    /// `n` sleepers (futex or poller). A waiter that asked for it returns
    /// [`WaitOutcome::Woken`].
    pub fn kick(&self, n: u32) -> usize {
        // Release: a waiter that sees the new count (Acquire) sees what came before it.
        self.header().wake.kicks.fetch_add(1, Ordering::Release);
        self.wake(n)
    }

    /// Producer thread: tries to park. Returns the `park` word's value to sleep on
    /// ([`Ring::park_wait`]), or `None` if a consumer sleeps on the futex and no poller
    /// watches the sources for it. Call [`Ring::unparked`] when done either way.
    pub fn park_begin(&self) -> Option<u32> {
        let wake = &self.header().wake;
        let v = wake.park.load(Ordering::Acquire);
        wake.unwatched.store(1, Ordering::Relaxed);
        // SeqCst fence: the producer's part of the park handshake (module docs).
        fence(Ordering::SeqCst);
        if wake.waiters.load(Ordering::Relaxed) > 0 && wake.pollers.load(Ordering::Relaxed) == 0 {
            wake.unwatched.store(0, Ordering::Relaxed);
            return None;
        }
        Some(v)
    }

    /// Producer thread: sleeps while `park` still holds `v`, until `deadline`.
    #[cfg(not(loom))]
    pub fn park_wait(&self, v: u32, deadline: Option<crate::Deadline>) {
        let _ = crate::wake::futex::wait(&self.header().wake.park, v, deadline);
    }

    /// Producer thread (loom model): sleeps while `park` still holds `v`.
    #[cfg(loom)]
    pub fn park_wait(&self, v: u32) {
        let _ = self.park_parking.wait(&self.header().wake.park, v);
    }

    /// Producer thread: watching the sources again.
    pub fn unparked(&self) {
        self.header().wake.unwatched.store(0, Ordering::Relaxed);
    }

    /// Whether the producer is parked (for inspection).
    pub fn producer_parked(&self) -> bool {
        self.header().wake.unwatched.load(Ordering::Relaxed) != 0
    }

    /// A futex sleeper, after its announcement and fence: unparks the producer if it is
    /// parked and no poller watches the sources (module docs).
    pub(crate) fn sleeper_needs_watch(&self) {
        if self.header().wake.pollers.load(Ordering::Relaxed) == 0 {
            self.unpark_producer();
        }
    }

    /// Unparks the producer thread if it is parked.
    pub fn unpark_producer(&self) {
        let wake = &self.header().wake;
        if wake.unwatched.load(Ordering::Relaxed) != 0 {
            wake.unwatched.store(0, Ordering::Relaxed);
            wake.park.fetch_add(1, Ordering::Release);
            self.futex_wake_park();
        }
    }

    #[cfg(not(loom))]
    fn futex_wake_park(&self) {
        crate::wake::futex::wake(&self.header().wake.park, 1);
    }

    #[cfg(loom)]
    fn futex_wake_park(&self) {
        self.park_parking.wake(1);
    }

    /// The bell, for [`Ring::wake`].
    pub(crate) fn bell(&self) -> &Bell {
        &self.bell
    }
}

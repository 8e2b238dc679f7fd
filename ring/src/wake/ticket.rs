//! [`TicketLock`]: a first-come, first-served lock for the simulated kernel.
//!
//! Whoever acts as the kernel holds one lock: a thread in `kevent_ctl`, the poller turning
//! its reports into entries, the producer thread. With a barging lock (std's `Mutex`), a
//! thread that calls `kevent_ctl` in a loop re-takes the lock before a woken waiter has
//! even been scheduled (a cross-core wake-up costs tens of microseconds here): measured,
//! a poller with a timer's report in hand waited up to 12.7 ms behind 1,000 ADDs. A
//! ticket lock serves in arrival order, as the kernel's own `epoll` mutex hands off to a
//! starving waiter.
//!
//! ```text
//!  lock:   t = next++ ; until serving == t: spin briefly, then
//!          sleepers += 1, SeqCst fence, re-check, futex_wait(serving, seen), sleepers -= 1
//!  unlock: serving += 1 (Release), SeqCst fence, if sleepers > 0: futex_wake(serving, all)
//! ```
//!
//! The fences close the store-buffer window between a sleeper's announcement and the
//! unlocker's read of it (as in `wait.rs`); `futex_wait` sleeps only while `serving`
//! still holds the value the sleeper saw. All sleepers are woken (only the next ticket
//! proceeds; the others sleep again): the kernel lock has a handful of contenders.
//! `try_lock` takes the lock only if nobody holds it or waits for it. A loom model is in
//! `ring/tests/loom_lock.rs`, section m.

use crate::sync::{fence, spin_hint, AtomicU32, Ordering};

/// A FIFO lock without data (the caller keeps the data beside it; see the module docs).
pub struct TicketLock {
    next: AtomicU32,
    serving: AtomicU32,
    sleepers: AtomicU32,
    #[cfg(loom)]
    parking: crate::wake::futex::Parking,
}

/// Spins of a waiter before it sleeps: a critical section of the kernel is a few
/// microseconds; a sleep and its wake-up cost more. (Under loom a spin is a yield, and
/// the sleep is what the model checks.)
#[cfg(not(loom))]
const SPINS: u32 = 200;
#[cfg(loom)]
const SPINS: u32 = 0;

impl Default for TicketLock {
    fn default() -> Self {
        Self::new()
    }
}

impl TicketLock {
    /// An unlocked lock.
    pub fn new() -> TicketLock {
        TicketLock {
            next: AtomicU32::new(0),
            serving: AtomicU32::new(0),
            sleepers: AtomicU32::new(0),
            #[cfg(loom)]
            parking: crate::wake::futex::Parking::new(),
        }
    }

    /// Takes the lock, after everyone who asked before.
    pub fn lock(&self) {
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        let mut spins = 0;
        loop {
            // Acquire: the previous holder's writes (its Release unlock) are ours.
            let seen = self.serving.load(Ordering::Acquire);
            if seen == ticket {
                return;
            }
            // (Under loom SPINS is 0 and this is never true, on purpose.)
            #[cfg_attr(loom, allow(clippy::absurd_extreme_comparisons))]
            if spins < SPINS {
                spins += 1;
                spin_hint();
                continue;
            }
            self.sleepers.fetch_add(1, Ordering::Relaxed);
            // SeqCst fence: the sleeper's half of the handshake (module docs).
            fence(Ordering::SeqCst);
            if self.serving.load(Ordering::Acquire) == seen {
                self.sleep(seen);
            }
            self.sleepers.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Takes the lock if nobody holds it or waits for it.
    pub fn try_lock(&self) -> bool {
        // Acquire: if the lock turns out free, its last holder's writes (its Release
        // unlock of `serving`) are ours. The CAS on `next` cannot give that: the holders
        // take tickets with Relaxed increments. (A loom model found the lost update.)
        let serving = self.serving.load(Ordering::Acquire);
        self.next
            .compare_exchange(
                serving,
                serving.wrapping_add(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Releases the lock to the next ticket. Only the holder may call it.
    pub fn unlock(&self) {
        // Release: the holder's writes go to the next holder.
        self.serving.fetch_add(1, Ordering::Release);
        // SeqCst fence: the unlocker's half of the handshake (module docs).
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::Relaxed) > 0 {
            self.wake_all();
        }
    }

    #[cfg(not(loom))]
    fn sleep(&self, seen: u32) {
        let _ = crate::wake::futex::wait_private(&self.serving, seen);
    }

    #[cfg(loom)]
    fn sleep(&self, seen: u32) {
        let _ = self.parking.wait(&self.serving, seen);
    }

    #[cfg(not(loom))]
    fn wake_all(&self) {
        crate::wake::futex::wake_private(&self.serving, u32::MAX);
    }

    #[cfg(loom)]
    fn wake_all(&self) {
        self.parking.wake(u32::MAX);
    }
}

impl std::fmt::Debug for TicketLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let serving = self.serving.load(Ordering::Relaxed);
        let next = self.next.load(Ordering::Relaxed);
        f.debug_struct("TicketLock")
            .field("held", &(next != serving))
            .field("waiting", &next.wrapping_sub(serving).saturating_sub(1))
            .finish()
    }
}

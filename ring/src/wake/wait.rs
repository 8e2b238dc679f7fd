//! Waiting for entries without lost wake-ups, and waking without needless system calls.
//!
//! The handshake is the classic store-buffer pattern, closed with a SeqCst fence on each
//! side (ARCHITECTURE.md §3):
//!
//! ```text
//!  waiter                                  waker (producer, or a consumer passing on)
//!  s = seq                                 publish: kidx = k            (Release)
//!  waiters += 1                            fence(SeqCst)
//!  fence(SeqCst)                           if waiters > 0:
//!  if claimable / stale / closed: return       seq += 1
//!  futex_wait(seq, s)                          futex_wake(seq, n)
//!  waiters -= 1
//! ```
//!
//! Either the waiter's re-check sees the publish, or the waker's read sees the waiter
//! (the fences forbid both missing). In the second case the waker bumps `seq` before
//! waking, so a waiter that has not reached `futex_wait` yet finds `seq != s` and does not
//! sleep. When nobody sleeps the waker pays one fence and one load, no system call.
//!
//! Before sleeping a waiter may spin briefly: on this class of machine waking a thread
//! asleep on the other core costs 27–49 µs, while a spinning one is reached in under
//! 100 ns (MEASURED.md).

use std::time::Duration;
#[cfg(not(loom))]
use std::time::Instant;

#[cfg(not(loom))]
use crate::sync::spin_hint;
use crate::sync::{fence, Ordering};
use crate::wake::futex::FutexWake;
use crate::wake::owner::{OwnerWatch, FUTEX_OWNER_DIED};
use crate::wake::time::Deadline;
use crate::Ring;

/// Why [`Ring::wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// There are entries to claim.
    Ready,
    /// `uidx` differs from the caller's `old_uidx`: its view is stale.
    Stale,
    /// The deadline passed.
    TimedOut,
    /// A signal interrupted the sleep (`EINTR`).
    Interrupted,
    /// Someone asked for a wake-up with nothing to claim (kevent's `READY` with no
    /// entries).
    Woken,
    /// The producer has stopped.
    Closed,
    /// The ring is marked broken.
    Broken,
}

/// How long to wait.
#[derive(Debug, Clone, Copy, Default)]
pub struct WaitSpec {
    /// Return `Stale` as soon as `uidx` differs from this.
    pub old_uidx: Option<u64>,
    /// Give up at this absolute time (`None`: wait forever).
    pub deadline: Option<Deadline>,
    /// Spin this long re-checking before going to sleep.
    pub spin: Duration,
    /// Return `Woken` once an explicit wake-up ([`Ring::kick`]) happened since the wait
    /// began (`kicks` differs from [`WaitSpec::kicks`]); otherwise only entries, a
    /// stale view, the deadline, a signal, close or breakage end the wait.
    pub return_on_wake: bool,
    /// [`Ring::kicks`] when the wait began (read it before looking for entries).
    pub kicks: u32,
    /// The consumer waiting, if it has a record: its sleep is also counted there, so that
    /// the reaper can take a dead sleeper back out of `waiters`.
    pub sleeper: Option<crate::ConsumerId>,
}

impl Ring {
    /// Whether a wait for `spec` is over, and why (what [`Ring::wait`] checks before and
    /// after every sleep).
    pub fn wait_over(&self, spec: &WaitSpec) -> Option<WaitOutcome> {
        self.check(spec)
    }

    pub(crate) fn check(&self, spec: &WaitSpec) -> Option<WaitOutcome> {
        // `closed` and `kicks` are read (Acquire) before `kidx`: an entry published
        // before the close or the kick that ends the wait is then seen too, and taken,
        // instead of the wait returning Closed or Woken past it (a loom model found a
        // WAKEUP_ALL entry left to nobody that way).
        let closed = self.is_closed();
        let kicked = spec.return_on_wake && self.kicks() != spec.kicks;
        // The owner's producer thread ended without closing the queue (`owner.rs`):
        // nobody will publish again.
        let died = self.owner_word().load(Ordering::Acquire) & FUTEX_OWNER_DIED != 0;
        if self.broken().is_some() {
            Some(WaitOutcome::Broken)
        } else if self.has_claimable() {
            Some(WaitOutcome::Ready)
        } else if spec.old_uidx.is_some_and(|u| u != self.uidx()) {
            Some(WaitOutcome::Stale)
        } else if closed {
            Some(WaitOutcome::Closed)
        } else if died {
            // Closed for everyone, once; what was published before is still taken.
            self.note_owner_died();
            Some(WaitOutcome::Closed)
        } else if kicked {
            Some(WaitOutcome::Woken)
        } else {
            None
        }
    }

    /// Waits until there is something to claim, the caller's view is stale, the deadline
    /// passes, or the ring closes. Works across processes (shared futex).
    pub fn wait(&self, spec: &WaitSpec) -> std::io::Result<WaitOutcome> {
        if let Some(outcome) = self.check(spec) {
            return Ok(outcome);
        }
        self.spin(spec);
        if crate::wake::time::deadline_passed(spec.deadline) {
            // A zero (or past) timeout: answer without registering as a sleeper or
            // entering the futex.
            return Ok(self.check(spec).unwrap_or(WaitOutcome::TimedOut));
        }
        let wake = &self.header().wake;
        loop {
            // Read seq before announcing ourselves: a waker that bumps it after this
            // point makes the futex_wait below return at once.
            let s = wake.seq.load(Ordering::Acquire);
            let rec = spec.sleeper.and_then(|id| self.record(id));
            // Record first, ring second (and the reverse on the way out): a consumer that
            // dies in between leaves at most one count the reaper cannot see.
            if let Some(rec) = rec {
                rec.sleeping.fetch_add(1, Ordering::Relaxed);
            }
            wake.waiters.fetch_add(1, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            let leave = || {
                // Never below zero, whatever another process wrote meanwhile.
                let dec = |w: u32| Some(w.saturating_sub(1));
                let _ = wake
                    .waiters
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, dec);
                if let Some(rec) = rec {
                    let _ = rec
                        .sleeping
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, dec);
                }
            };
            // Somebody must watch the sources while we sleep (see `poller.rs`).
            self.sleeper_needs_watch();
            // And the owner's death must wake us too (`owner.rs`): announced before the
            // re-check, which looks at the owner word.
            let owner = self.watch_owner();
            if let Some(outcome) = self.check(spec) {
                leave();
                return Ok(outcome);
            }
            let woke = match owner {
                OwnerWatch::Alive(w) => self.futex_wait2(s, w, spec.deadline),
                OwnerWatch::Unheld | OwnerWatch::Died => self.futex_wait(s, spec.deadline),
            };
            leave();
            match woke? {
                FutexWake::TimedOut => {
                    return Ok(self.check(spec).unwrap_or(WaitOutcome::TimedOut))
                }
                FutexWake::Interrupted => {
                    return Ok(self.check(spec).unwrap_or(WaitOutcome::Interrupted))
                }
                FutexWake::Woken => {
                    // Woken for an entry another consumer took first: sleep on. (Only an
                    // explicit wake-up, seen by `check`, returns without an entry.)
                    if let Some(outcome) = self.check(spec) {
                        return Ok(outcome);
                    }
                }
            }
        }
    }

    #[cfg(not(loom))]
    fn spin(&self, spec: &WaitSpec) {
        if spec.spin.is_zero() {
            return;
        }
        let start = Instant::now();
        let mut i = 0u32;
        while self.check(spec).is_none() {
            spin_hint();
            i = i.wrapping_add(1);
            // Reading the clock costs ~20 ns; look at it every 64 spins. A spin never
            // outlasts the wait's deadline.
            if i.is_multiple_of(64)
                && (start.elapsed() >= spec.spin
                    || crate::wake::time::deadline_passed(spec.deadline))
            {
                break;
            }
        }
    }

    #[cfg(loom)]
    fn spin(&self, _spec: &WaitSpec) {}

    #[cfg(not(loom))]
    fn futex_wait(&self, s: u32, deadline: Option<Deadline>) -> std::io::Result<FutexWake> {
        crate::wake::futex::wait(&self.header().wake.seq, s, deadline)
    }

    #[cfg(loom)]
    fn futex_wait(&self, s: u32, _deadline: Option<Deadline>) -> std::io::Result<FutexWake> {
        self.parking.wait(&self.header().wake.seq, s)
    }

    /// Sleeps on the wake-up word and the owner word at once (`owner.rs`).
    #[cfg(not(loom))]
    fn futex_wait2(
        &self,
        s: u32,
        owner: u32,
        deadline: Option<Deadline>,
    ) -> std::io::Result<FutexWake> {
        crate::wake::futex::wait2(
            &self.header().wake.seq,
            s,
            self.owner_word(),
            owner,
            deadline,
        )
    }

    #[cfg(loom)]
    fn futex_wait2(
        &self,
        s: u32,
        owner: u32,
        _deadline: Option<Deadline>,
    ) -> std::io::Result<FutexWake> {
        self.parking
            .wait2(&self.header().wake.seq, s, self.owner_word(), owner)
    }

    /// Wakes up to `n` sleeping consumers, if there are any (no system call otherwise):
    /// futex sleepers first, then — if that reached fewer than `n` — the poller, through
    /// the bell (see `poller.rs`). Returns how many it woke (the bell counts as one).
    pub fn wake(&self, n: u32) -> usize {
        let wake = &self.header().wake;
        // SeqCst fence: the other half of the handshake (see the module docs). Our
        // publish (or claim, or kick) is ordered before the reads of `waiters`/`pollers`.
        fence(Ordering::SeqCst);
        if n == 0 {
            return 0;
        }
        let (waiters, pollers) = (
            wake.waiters.load(Ordering::Relaxed),
            wake.pollers.load(Ordering::Relaxed),
        );
        let mut woken = 0;
        if waiters > 0 {
            wake.seq.fetch_add(1, Ordering::Release);
            self.header()
                .stats
                .wake_calls
                .fetch_add(1, Ordering::Relaxed);
            woken = self.futex_wake(n);
        }
        if pollers > 0 && woken < n as usize {
            // A sleeper counted in `waiters` but not yet in the futex is not counted in
            // `woken` (it sees `seq` move and does not sleep): the poller may then wake
            // too, for nothing — it sleeps again, it never returns empty.
            self.bell().ring();
            woken += 1;
        }
        woken
    }

    /// Wakes every sleeping consumer, futex sleepers and the poller alike — also those
    /// the shared `waiters` count does not show (a peer may have overwritten it): unlike
    /// [`Ring::wake`] this always bumps `seq` and makes the `FUTEX_WAKE`. For the rare
    /// wakers: close, breakage, the owner's death, the reaper healing a sleeper count.
    pub fn wake_all(&self) -> usize {
        // SeqCst fence: as in `wake` (the news before the wake-up).
        fence(Ordering::SeqCst);
        self.header().wake.seq.fetch_add(1, Ordering::Release);
        let mut woken = self.futex_wake(u32::MAX);
        if self.header().wake.pollers.load(Ordering::Relaxed) > 0 {
            self.bell().ring();
            woken += 1;
        }
        woken
    }

    /// Number of consumers asleep (or about to sleep) on the ring.
    pub fn sleepers(&self) -> u32 {
        self.header().wake.waiters.load(Ordering::Relaxed)
    }

    #[cfg(not(loom))]
    fn futex_wake(&self, n: u32) -> usize {
        crate::wake::futex::wake(&self.header().wake.seq, n)
    }

    #[cfg(loom)]
    fn futex_wake(&self, n: u32) -> usize {
        self.parking.wake(n)
    }
}

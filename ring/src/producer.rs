//! The single producer: write an entry, mark it READY, publish `kidx`, wake sleepers.
//!
//! Only one thread (the simulated kernel's producer) publishes, so `kidx` is kept
//! privately and only *stored* to shared memory; the shared copy is never read back. What
//! the producer does read from shared memory — `uidx`, `cidx` and the state of the slot
//! it is about to fill — it validates, because any attached process can write it. A value
//! outside what the protocol allows marks the ring broken instead of being trusted.

use std::ops::Range;
use std::sync::Arc;

use crate::state::{SlotState, Status};
use crate::sync::Ordering;
use crate::{Broken, Ring, Ukevent};

/// Why [`Producer::push`] did not publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// Every slot is in use: keep the entry in the backlog until commits free room.
    Full,
    /// The ring is corrupt (and now marked broken).
    Broken(Broken),
}

/// The producer's end of a ring. There must be exactly one per ring.
pub struct Producer {
    ring: Arc<Ring>,
    /// Next position to fill (private; the shared `kidx` lags until `flush`).
    kidx: u64,
    /// `kidx` as last stored to shared memory.
    published: u64,
    /// `uidx` as last read (validated).
    uidx: u64,
    /// Entries pushed since the last flush asked for every waiter to wake.
    wake_all: bool,
}

impl Producer {
    /// The producer of `ring`, starting from the positions in its header.
    pub fn new(ring: Arc<Ring>) -> Result<Producer, Broken> {
        let kidx = ring.header().kidx.pos.load(Ordering::Acquire);
        let uidx = ring.uidx();
        if uidx > kidx || kidx - uidx > ring.capacity() {
            ring.mark_broken(Broken::UserIndex);
            return Err(Broken::UserIndex);
        }
        Ok(Producer {
            ring,
            kidx,
            published: kidx,
            uidx,
            wake_all: false,
        })
    }

    /// The ring.
    pub fn ring(&self) -> &Arc<Ring> {
        &self.ring
    }

    /// The next position [`Producer::push`] fills.
    #[inline]
    pub fn position(&self) -> u64 {
        self.kidx
    }

    /// Re-reads and validates `uidx`: it may only move forward, and never past what was
    /// published.
    fn refresh_uidx(&mut self) -> Result<u64, Broken> {
        // Acquire: pairs with the Release CAS in `Ring::advance`, so the consumers' reads
        // of the slots below the new `uidx` happen before we overwrite them.
        let u = self.ring.uidx();
        if u < self.uidx || u > self.published {
            self.ring.mark_broken(Broken::UserIndex);
            return Err(Broken::UserIndex);
        }
        self.uidx = u;
        Ok(u)
    }

    /// Free slots, counting entries pushed but not yet flushed as used.
    pub fn room(&mut self) -> Result<u64, Broken> {
        let u = self.refresh_uidx()?;
        Ok(self.ring.capacity() - (self.kidx - u))
    }

    /// Writes `ev` into the next slot and marks it READY. Consumers see it after the next
    /// [`Producer::flush`]. Returns the entry's position.
    ///
    /// Finding the ring full, it reads `uidx` again, so it may fill a slot whose release
    /// the caller has not seen through [`Producer::released`]: a caller that checks the
    /// claim stamps ([`Ring::was_claimed`]) must check the slot's previous entry before
    /// it pushes (the kernel's `try_push` does; loom section h models it).
    pub fn push(&mut self, ev: &Ukevent, wake_all: bool) -> Result<u64, PushError> {
        if let Some(b) = self.ring.broken() {
            return Err(PushError::Broken(b));
        }
        if self.kidx - self.uidx >= self.ring.capacity() {
            self.refresh_uidx().map_err(PushError::Broken)?;
            if self.kidx - self.uidx >= self.ring.capacity() {
                return Err(PushError::Full);
            }
        }
        let pos = self.kidx;
        let slot = self.ring.slot(pos);
        let lap = self.ring.lap(pos);
        // Acquire: pairs with the Release reset in `advance` (the previous lap's
        // consumers are done with the words we are about to overwrite).
        let found = slot.state.load(Ordering::Acquire);
        if found != SlotState::new(lap, 0, Status::Empty).encode() {
            self.ring.mark_broken(Broken::SlotState);
            return Err(PushError::Broken(Broken::SlotState));
        }
        for (word, value) in slot.words.iter().zip(ev.to_words()) {
            // Relaxed: ordered before the READY store below, which is Release.
            word.store(value, Ordering::Relaxed);
        }
        // Nobody has claimed this entry yet (see `consumer.rs`, the claim stamp).
        slot.claim.store(crate::layout::NO_CLAIM, Ordering::Relaxed);
        // Release: a consumer that acquires READY sees the words above.
        slot.state.store(
            SlotState::new(lap, 0, Status::Ready).encode(),
            Ordering::Release,
        );
        self.kidx += 1;
        self.wake_all |= wake_all;
        Ok(pos)
    }

    /// Publishes everything pushed since the last flush (one store of `kidx`) and wakes
    /// sleepers: one per new entry, or all of them if an entry asked for `WAKEUP_ALL`.
    /// Makes no system call when nobody sleeps. Returns how many entries it published.
    pub fn flush(&mut self) -> u64 {
        self.flush_reserving(0)
    }

    /// [`Producer::flush`] by a consumer that publishes on its own behalf and will claim
    /// up to `reserve` of the new entries itself right after: it wakes `reserve` fewer
    /// sleepers (a sleeper woken for an entry its waker takes is a wasted wake-up).
    /// `WAKEUP_ALL` still wakes everyone.
    pub fn flush_reserving(&mut self, reserve: u64) -> u64 {
        let n = self.kidx - self.published;
        if n == 0 {
            return 0;
        }
        // Release: a consumer that reads this kidx (Acquire) may claim up to it.
        self.ring
            .header()
            .kidx
            .pos
            .store(self.kidx, Ordering::Release);
        self.published = self.kidx;
        // The producer is the only writer of `posted`: a plain store, no RMW.
        let posted = &self.ring.header().stats.posted;
        // Wrapping: the word is shared memory, any value may be found there.
        posted.store(
            posted.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
        if std::mem::take(&mut self.wake_all) {
            // Every sleeper returns, with an entry or `Woken` (ARCHITECTURE.md §3, W1).
            self.ring.kick(u32::MAX);
        } else {
            let wake = n.saturating_sub(reserve);
            self.ring.wake(wake.min(u64::from(u32::MAX)) as u32);
        }
        n
    }

    /// Positions released (passed by `uidx`) since the previous call, validated. The
    /// caller maps them back to its kevents to re-arm level-triggered ones.
    pub fn released(&mut self, since: u64) -> Result<Range<u64>, Broken> {
        let u = self.refresh_uidx()?;
        Ok(since.min(u)..u)
    }

    /// Checks the claim position against the producer's own view: it must lie within
    /// `uidx..=kidx`. Called periodically by the producer (the ring's watchdog).
    pub fn check_claim_index(&mut self) -> Result<(), Broken> {
        let u = self.refresh_uidx()?;
        let c = self.ring.cidx();
        if c < u || c > self.published {
            self.ring.mark_broken(Broken::ClaimIndex);
            return Err(Broken::ClaimIndex);
        }
        Ok(())
    }
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("kidx", &self.kidx)
            .field("published", &self.published)
            .field("uidx", &self.uidx)
            .finish()
    }
}

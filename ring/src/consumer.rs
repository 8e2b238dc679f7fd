//! The consumers' side of the protocol: claim, take, complete, advance.
//!
//! **Claim** reserves a contiguous run of published positions with one CAS on `cidx`
//! (Vyukov's bounded MPMC queue reserves the same way), then takes ownership of each slot
//! with a CAS READY → CLAIMED(me). Reserving first keeps consumers from fighting over the
//! same slot; the per-slot CAS makes ownership exact, so the reaper can tell whose entries
//! a dead process held. A slot whose CAS fails was taken by the reaper (its reservation
//! stalled for longer than the reaper's grace period) and is simply not ours.
//!
//! **Complete** is a CAS CLAIMED(me) → DONE(me). It fails harmlessly if the slot is not ours
//! (already completed, or reclaimed), which makes commits idempotent.
//!
//! **Advance**: whoever finds the slot at `uidx` DONE resets it to EMPTY for the next lap
//! (CAS) and then moves `uidx` past it (CAS). Anyone who finds the slot already reset
//! helps move `uidx`. Resetting *before* moving `uidx` means the producer never sees room
//! whose slot is not yet free. `uidx` only moves over the contiguous DONE prefix, so
//! entries completed out of order are released in order. A DONE slot without an owner
//! was never claimed (no step writes one; the kernel's take-backs write
//! DONE([`RECLAIMED`])): the advance stops there and the reaper re-delivers it, so an
//! entry flipped from READY to DONE by a stray write is not lost silently.

use crate::state::{SlotState, Status, RECLAIMED};
use crate::sync::{fence, spin_hint, Ordering};
use crate::{Ring, Ukevent};

/// A consumer's id: its index in the consumer table plus one (0 means "nobody").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConsumerId(pub u16);

/// A run of positions `start..end` reserved by one [`Ring::claim`]. Each of them is this
/// consumer's unless the reaper took it; [`Ring::take`] tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// First position claimed.
    pub start: u64,
    /// One past the last position claimed.
    pub end: u64,
    /// How many of them this consumer actually owns.
    pub owned: u64,
}

impl Claim {
    /// Number of positions reserved.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether nothing was claimed.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

impl Ring {
    /// Whether there are published entries nobody has claimed.
    #[inline]
    pub fn has_claimable(&self) -> bool {
        // Acquire on kidx: pairs with the producer's Release publish.
        self.cidx() < self.kidx()
    }

    /// Claims up to `max` published entries for consumer `me`.
    pub fn claim(&self, me: ConsumerId, max: u64) -> Claim {
        let h = self.header();
        let mut c = h.cidx.pos.load(Ordering::Relaxed);
        let (start, end) = loop {
            // Acquire: the slots below kidx were filled and marked READY before the
            // producer's Release store of kidx.
            let k = h.kidx.pos.load(Ordering::Acquire);
            if k > h
                .uidx
                .pos
                .load(Ordering::Acquire)
                .saturating_add(self.capacity())
            {
                // More published than the ring holds: kidx was overwritten.
                self.mark_broken(crate::Broken::ClaimIndex);
            }
            if c >= k || max == 0 || self.broken().is_some() {
                return Claim {
                    start: c,
                    end: c,
                    owned: 0,
                };
            }
            let n = (k - c).min(max).min(self.capacity());
            // Relaxed suffices for the reservation itself: ownership (and the visibility
            // of the entry) is established by the per-slot CAS below.
            match h
                .cidx
                .pos
                .compare_exchange_weak(c, c + n, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break (c, c + n),
                Err(now) => {
                    c = now;
                    spin_hint();
                }
            }
        };
        let mut owned = 0;
        for pos in start..end {
            let lap = self.lap(pos);
            let slot = self.slot(pos);
            // Acquire: pairs with the producer's Release store of READY (the entry's
            // words are visible to us once we own the slot).
            match slot.state.compare_exchange(
                SlotState::new(lap, 0, Status::Ready).encode(),
                SlotState::new(lap, me.0, Status::Claimed).encode(),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    // The claim stamp, checked by the producer at release. Relaxed: our
                    // completion (Release) orders it before the advance that releases
                    // the slot, and the producer reads it after acquiring `uidx`.
                    slot.claim.store(pos, Ordering::Relaxed);
                    owned += 1;
                }
                Err(found) => {
                    if !self.may_find_in_a_claim(found, lap) {
                        self.mark_broken(crate::Broken::ClaimState);
                    }
                }
            }
        }
        if let Some(rec) = self.record(me) {
            rec.claimed.fetch_add(owned, Ordering::Relaxed);
        }
        // A consumer that leaves claimable entries behind passes the baton to a sleeper.
        // Checking `waiters` first, without the fence, is enough: a waiter that registers
        // after this load re-checks for claimable entries after its own fence and finds
        // the ones we left; only one that is asleep already needs the wake, and its
        // registration is long visible.
        if end < h.kidx.pos.load(Ordering::Acquire)
            && (h.wake.waiters.load(Ordering::Relaxed) > 0
                || h.wake.pollers.load(Ordering::Relaxed) > 0)
        {
            self.wake(1);
        }
        Claim { start, end, owned }
    }

    /// Whether `found` is a state a slot of lap `lap` may hold when a consumer that
    /// reserved it fails to claim it, or one the ring heals from: taken back by the
    /// kernel (REMOVE, the reaper: DONE([`RECLAIMED`])), already released and reused (a
    /// later lap), or a stray claim or completion of this lap — which the reaper, the
    /// lease and the claim stamp deliver again. What nothing heals — undecodable, an
    /// older lap, EMPTY of this lap below `kidx`, READY with an owner — marks the ring
    /// broken: an error for everyone rather than a stall.
    fn may_find_in_a_claim(&self, found: u64, lap: u64) -> bool {
        let Some(st) = SlotState::decode(found) else {
            return false;
        };
        if st.lap == lap {
            return matches!(st.status, Status::Claimed | Status::Done);
        }
        // Laps are stored modulo 2^40: "later" is less than half the lap space ahead.
        st.lap.wrapping_sub(lap) & crate::state::LAP_MASK < (crate::state::LAP_MASK >> 1)
    }

    /// Whether the entry at `pos` was claimed: its claim stamp names `pos` (the producer
    /// checks this when `uidx` passes the entry, before it reuses the slot). A DONE
    /// without it was never claimed — a stray write turned READY into DONE — and is
    /// delivered again rather than lost silently.
    #[inline]
    pub fn was_claimed(&self, pos: u64) -> bool {
        self.slot(pos).claim.load(Ordering::Relaxed) == pos
    }

    /// The entry at `pos` if consumer `me` owns it (claimed and not yet completed).
    #[inline]
    pub fn take(&self, me: ConsumerId, pos: u64) -> Option<Ukevent> {
        let slot = self.slot(pos);
        let want = SlotState::new(self.lap(pos), me.0, Status::Claimed).encode();
        // Acquire: pairs with the producer's Release publish (via our claim CAS, which
        // already acquired it; loading again keeps `take` correct on its own).
        if slot.state.load(Ordering::Acquire) != want {
            return None;
        }
        let mut words = [0u64; 5];
        for (w, word) in words.iter_mut().zip(slot.words.iter()) {
            *w = word.load(Ordering::Relaxed);
        }
        Some(Ukevent::from_words(words))
    }

    /// Marks `pos` DONE if `me` owns it. Returns whether it did (false: already completed,
    /// reclaimed, or never ours — all harmless, commits are idempotent). Does not advance
    /// `uidx`; call [`Ring::advance`] after a batch.
    pub fn complete(&self, me: ConsumerId, pos: u64) -> bool {
        let done = self.complete_slot(me, pos);
        if done {
            if let Some(rec) = self.record(me) {
                rec.completed.fetch_add(1, Ordering::Relaxed);
            }
        }
        done
    }

    fn complete_slot(&self, me: ConsumerId, pos: u64) -> bool {
        let lap = self.lap(pos);
        // Release: our reads of the entry happen before anyone resets the slot.
        self.slot(pos)
            .state
            .compare_exchange(
                SlotState::new(lap, me.0, Status::Claimed).encode(),
                SlotState::new(lap, me.0, Status::Done).encode(),
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Completes every position in `range` that `me` owns and advances `uidx`. Returns
    /// how many it completed.
    pub fn complete_range(&self, me: ConsumerId, range: std::ops::Range<u64>) -> u64 {
        let mut n = 0;
        for pos in range {
            n += u64::from(self.complete_slot(me, pos));
        }
        if n > 0 {
            if let Some(rec) = self.record(me) {
                rec.completed.fetch_add(n, Ordering::Relaxed);
            }
        }
        self.advance();
        n
    }

    /// The kevent commit: "I am done with every entry I claimed below `upto`". Completes
    /// `me`'s claimed slots in `uidx..upto` and advances `uidx`. Returns how many it
    /// completed (0 if they were already committed: commits are idempotent).
    pub fn commit_below(&self, me: ConsumerId, upto: u64) -> u64 {
        let from = self.uidx();
        let to = upto
            .min(self.cidx())
            .min(from.saturating_add(self.capacity()));
        let n = if from < to {
            self.complete_range(me, from..to)
        } else {
            0
        };
        if n == 0 {
            self.advance();
        }
        n
    }

    /// Moves `uidx` over the contiguous prefix of DONE slots, resetting each to EMPTY for
    /// its next lap. Lock-free: several consumers may run it at once. Returns the new
    /// `uidx`.
    pub fn advance(&self) -> u64 {
        let h = self.header();
        let cap = self.capacity();
        let mut u = h.uidx.pos.load(Ordering::Acquire);
        // The position at which we last fenced before giving up (see below).
        let mut fenced_at = None;
        // Bounded: about two laps of work per call, so garbage in shared memory cannot
        // spin us.
        let mut budget = 2 * cap + 2;
        while budget > 0 {
            budget -= 1;
            // Reset the run of DONE slots at `u` (or find them reset by a helper), then
            // move uidx over the whole run with one CAS.
            let c = h.cidx.pos.load(Ordering::Acquire);
            let mut end = u;
            while end < c && end - u < cap && self.release_one(end) {
                end += 1;
            }
            if end > u {
                // Release: the producer's Acquire load of uidx sees the reset slots.
                match h
                    .uidx
                    .pos
                    .compare_exchange(u, end, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => u = end,
                    // A helper moved it (over part of our run, or more): go on from there.
                    Err(now) => u = now,
                }
                continue;
            }
            // About to stop at `u`. Another consumer may have completed (or claimed and
            // completed) the slot at `u` while we read a stale `cidx`/state, and have
            // stopped itself because it read our `uidx` stale: a store-buffer pattern. A
            // SeqCst fence on this path in both of us means at least one sees the other's
            // writes; re-check once per position. (Found by the loom models.)
            if fenced_at == Some(u) {
                break;
            }
            fence(Ordering::SeqCst);
            fenced_at = Some(u);
            u = h.uidx.pos.load(Ordering::Acquire);
        }
        u
    }

    /// Resets the slot at `u` from DONE to EMPTY for its next lap, or finds it already
    /// reset. Returns whether `uidx` may move past `u`. An ownerless DONE is refused (see
    /// the module docs): the reaper re-delivers it.
    fn release_one(&self, u: u64) -> bool {
        let lap = self.lap(u);
        let next = SlotState::new(lap + 1, 0, Status::Empty).encode();
        let state = &self.slot(u).state;
        // Acquire: the completer's Release (its reads of the entry happen before).
        let found = state.load(Ordering::Acquire);
        match SlotState::decode(found) {
            Some(st) if st.status == Status::Done && st.lap == lap && st.owner != 0 => {}
            // Someone else reset it; help them move uidx.
            _ => return found == next,
        }
        // AcqRel: acquire as above, release to the producer's Acquire load of the state.
        match state.compare_exchange(found, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => true,
            Err(now) => now == next,
        }
    }

    /// Reclaims a slot for redelivery (the reaper's move): CLAIMED(`owner`) or, with
    /// `owner == ConsumerId(0)`, an orphaned READY slot below `cidx` (or an ownerless
    /// DONE one, see the module docs), becomes DONE([`RECLAIMED`]). The caller
    /// re-publishes the entry from its own records. Returns whether it took it.
    pub fn reclaim(&self, owner: ConsumerId, pos: u64) -> bool {
        let lap = self.lap(pos);
        let from: &[SlotState] = if owner.0 == 0 {
            &[
                SlotState::new(lap, 0, Status::Ready),
                SlotState::new(lap, 0, Status::Done),
            ]
        } else {
            &[SlotState::new(lap, owner.0, Status::Claimed)]
        };
        let to = SlotState::new(lap, RECLAIMED, Status::Done).encode();
        // AcqRel: like `complete` (Release) and `claim` (Acquire) in one.
        from.iter().any(|from| {
            self.slot(pos)
                .state
                .compare_exchange(from.encode(), to, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })
    }

    /// Loom models: a stray write to the state word of `pos` (from `from` to `to`).
    #[cfg(loom)]
    pub fn model_write_state(&self, pos: u64, from: u64, to: u64) -> bool {
        self.slot(pos)
            .state
            .compare_exchange(from, to, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// The decoded state of the slot holding `pos` (for the reaper and inspectors).
    #[inline]
    pub fn slot_state(&self, pos: u64) -> Option<SlotState> {
        SlotState::decode(self.slot(pos).state.load(Ordering::Acquire))
    }
}

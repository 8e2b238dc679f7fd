//! The reaper: crash recovery for consumers in other processes (DESIGN.md §5).
//!
//! Every half interval the producer looks at the consumer table. A consumer whose
//! liveness lock is gone (its process died, however it died) or that departed has its
//! CLAIMED slots reclaimed and their entries delivered again, flagged `REDELIVERED`
//! (at-least-once delivery), before its record is freed. A slot left READY below `cidx`
//! (a consumer died between reserving a run and owning its slots) is reclaimed when it is
//! seen in that state on two consecutive looks. So a crashed consumer never stalls the
//! ring and loses nothing. The same pass is the ring's watchdog: it checks `cidx`.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use kevent_ring::{ConsumerId, Liveness, RecordState, SlotState, Status};

use crate::kernel::Kernel;

/// Default time within which a dead consumer's entries are delivered again.
pub const DEFAULT_REAP_INTERVAL: Duration = Duration::from_millis(100);

pub(crate) struct Reaper {
    interval: Duration,
    last: Instant,
    /// The producer's own description of the memfd (never holds consumer locks).
    memfd: OwnedFd,
    /// Positions seen READY below `cidx` on the previous look.
    suspects: Vec<u64>,
    /// `uidx` when the slot there held a state word that is not ours, on the previous look.
    garbage_at: Option<u64>,
}

impl Reaper {
    pub(crate) fn new(memfd: OwnedFd, interval: Duration) -> Reaper {
        Reaper {
            interval,
            last: Instant::now(),
            memfd,
            suspects: Vec::new(),
            garbage_at: None,
        }
    }

    /// Whether `id` is a live consumer now (it may have registered after the table was
    /// read, and claimed at once).
    fn registered_since(&self, ring: &kevent_ring::Ring, id: ConsumerId) -> bool {
        let active = ring.record(id).is_some_and(|rec| {
            RecordState::from_word(rec.state.load(std::sync::atomic::Ordering::Acquire))
                == RecordState::Active
        });
        active && Liveness::is_alive(self.memfd.as_fd(), id).unwrap_or(true)
    }

    /// One look, if it is time; returns how long the producer may sleep before the next.
    pub(crate) fn tick(&mut self, kernel: &mut Kernel) -> Option<Duration> {
        let half = self.interval / 2;
        let since = self.last.elapsed();
        if since < half {
            return Some(half - since);
        }
        self.last = Instant::now();
        if kernel.producer.check_claim_index().is_err() {
            return None; // broken: nothing more to reap
        }
        let ring = kernel.ring().clone();
        let mut dead = Vec::new();
        let mut live = Vec::new();
        for (id, state, _pid) in ring.consumers() {
            match state {
                RecordState::Free => {}
                RecordState::Departed => dead.push(id),
                RecordState::Active => {
                    if Liveness::is_alive(self.memfd.as_fd(), id).unwrap_or(true) {
                        live.push(id);
                    } else {
                        dead.push(id);
                    }
                }
            }
        }
        let cap = ring.capacity();
        // Validated just above by check_claim_index: uidx <= cidx <= kidx.
        let (u, c) = (ring.uidx(), ring.cidx());
        if c < u {
            return None;
        }
        // A state word at uidx that is not ours, twice in a row: the ring can never move
        // again. Say so instead of stalling silently.
        if u < c && ring.slot_state(u).is_none() {
            if self.garbage_at == Some(u) {
                ring.mark_broken(kevent_ring::Broken::SlotState);
                return None;
            }
            self.garbage_at = Some(u);
        } else {
            self.garbage_at = None;
        }
        // Claims in the name of a consumer that is not a live record (dead, departed,
        // free, or no record at all: garbage) are reclaimed; claims of live ones are not.
        let claims_stuck = (u..c.min(u.saturating_add(cap))).any(|pos| {
            ring.slot_state(pos).is_some_and(|st| {
                st.status == Status::Claimed && !live.contains(&ConsumerId(st.owner))
            })
        });
        if dead.is_empty() && self.suspects.is_empty() && !claims_stuck {
            return Some(half);
        }
        let mut suspects = Vec::new();
        for pos in u..c.min(u.saturating_add(cap)) {
            let Some(st) = ring.slot_state(pos) else {
                continue;
            };
            if st.lap != SlotState::new(pos / cap, 0, Status::Empty).lap {
                continue;
            }
            match st.status {
                Status::Claimed
                    if !live.contains(&ConsumerId(st.owner))
                        && !self.registered_since(&ring, ConsumerId(st.owner))
                        && ring.reclaim(ConsumerId(st.owner), pos) =>
                {
                    kernel.redeliver(pos);
                }
                Status::Ready if !dead.is_empty() || self.suspects.contains(&pos) => {
                    if self.suspects.contains(&pos) {
                        if ring.reclaim(ConsumerId(0), pos) {
                            kernel.redeliver(pos);
                        }
                    } else {
                        suspects.push(pos);
                    }
                }
                _ => {}
            }
        }
        self.suspects = suspects;
        for id in dead {
            ring.free_record(id);
        }
        ring.advance();
        kernel.service(0);
        Some(half)
    }
}

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
}

impl Reaper {
    pub(crate) fn new(memfd: OwnedFd, interval: Duration) -> Reaper {
        Reaper {
            interval,
            last: Instant::now(),
            memfd,
            suspects: Vec::new(),
        }
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
        for (id, state, _pid) in ring.consumers() {
            match state {
                RecordState::Free => {}
                RecordState::Departed => dead.push(id),
                RecordState::Active => {
                    if !Liveness::is_alive(self.memfd.as_fd(), id).unwrap_or(true) {
                        dead.push(id);
                    }
                }
            }
        }
        if dead.is_empty() && self.suspects.is_empty() {
            return Some(half);
        }
        let cap = ring.capacity();
        let (u, c) = (ring.uidx(), ring.cidx());
        let mut suspects = Vec::new();
        for pos in u..c.min(u + cap) {
            let Some(st) = ring.slot_state(pos) else {
                continue;
            };
            if st.lap != SlotState::new(pos / cap, 0, Status::Empty).lap {
                continue;
            }
            match st.status {
                Status::Claimed
                    if dead.contains(&ConsumerId(st.owner))
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
        kernel.service();
        Some(half)
    }
}

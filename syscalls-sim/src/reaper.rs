//! The reaper: crash recovery for consumers in other processes (ARCHITECTURE.md §5).
//!
//! Every half interval the producer looks at the consumer table. A consumer whose
//! liveness lock is gone (its process died, however it died) or that departed has its
//! CLAIMED slots reclaimed and their entries delivered again, flagged `REDELIVERED`
//! (at-least-once delivery), before its record is freed. A slot left READY below `cidx`
//! (a consumer died between reserving a run and owning its slots) is reclaimed when it is
//! seen in that state on two consecutive looks. So a crashed consumer never stalls the
//! ring and loses nothing. The same pass is the ring's watchdog: it checks `cidx`.
//!
//! * **Liveness is per process.** The lock is an open-file-description lock, which a
//!   child forked without exec shares; so a consumer is also dead once the process that
//!   registered it (its pid, with the start time seen first, against pid reuse) is gone
//!   or a zombie — a helper it forked cannot keep its entries hostage.
//! * **Leases.** A *live* consumer that holds the claim at `uidx` longer than the lease
//!   (stopped, looping) while the ring is needed (full, a backlog waits, or entries
//!   committed after it wait for their in-order release, their slots not yet free for
//!   reuse) has that entry taken back and
//!   delivered again, flagged; its late commit is a no-op. So no single consumer stalls
//!   the queue. Counted in `stats.expired`.
//! * **Bounded work.** When nothing changed since the last look (same `uidx`, `cidx` and
//!   live consumers, nobody died) the slots are not scanned again: a stalled ring of
//!   2^24 slots costs nothing per tick.
//! * **Sleep accounting.** If the consumers' own sleep counts say someone sleeps while
//!   the shared `waiters` says nobody does (a peer zeroed it), everyone is woken so that
//!   they re-register.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use kevent_ring::{ConsumerId, Liveness, RecordState, SlotState, Status};

use crate::kernel::Kernel;

/// Default time within which a dead consumer's entries are delivered again.
pub const DEFAULT_REAP_INTERVAL: Duration = Duration::from_millis(100);

/// The shortest reap interval a queue takes (`EINVAL` below): the reaper looks every
/// half interval, and a shorter one would keep the producer thread busy doing nothing.
pub const MIN_REAP_INTERVAL: Duration = Duration::from_millis(1);

/// Default lease: how long a live consumer may hold the entry at `uidx` while the ring is
/// full or a backlog waits, before the entry is delivered to someone else.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(2);

pub(crate) struct Reaper {
    interval: Duration,
    last: Instant,
    /// The producer's own description of the memfd (never holds consumer locks).
    memfd: OwnedFd,
    /// Positions seen READY below `cidx` on the previous look.
    suspects: Vec<u64>,
    /// `uidx` when the slot there held a state word that is not ours, on the previous look.
    garbage_at: Option<u64>,
    /// The claim at `uidx` (position, owner) and since when it has been seen there.
    holding: Option<(u64, u16, Instant)>,
    /// `(uidx, cidx, live consumers)` of the last look that scanned the slots.
    scanned: Option<(u64, u64, Vec<ConsumerId>)>,
    /// Per consumer: (record generation, pid, process start time) when first seen.
    starts: HashMap<ConsumerId, (u32, u32, u64)>,
}

/// The state letter and start time (field 22, in clock ticks) of process `pid`.
fn process_start(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Fields 3.. follow; the start time is field 22, the 20th after the state.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

impl Reaper {
    pub(crate) fn new(memfd: OwnedFd, interval: Duration) -> Reaper {
        Reaper {
            interval,
            last: Instant::now(),
            memfd,
            suspects: Vec::new(),
            garbage_at: None,
            holding: None,
            scanned: None,
            starts: HashMap::new(),
        }
    }

    /// Whether `id` is a live consumer now (it may have registered after the table was
    /// read, and claimed at once).
    fn registered_since(&mut self, ring: &kevent_ring::Ring, id: ConsumerId) -> bool {
        let active = ring.record(id).is_some_and(|rec| {
            RecordState::from_word(rec.state.load(std::sync::atomic::Ordering::Acquire))
                == RecordState::Active
        });
        active
            && Liveness::is_alive(self.memfd.as_fd(), id).unwrap_or(true)
            && self.process_alive(ring, id)
    }

    /// Whether the process that registered `id` still runs: its pid exists, is not a
    /// zombie, and started when it did when we first saw it. `true` when unknown.
    fn process_alive(&mut self, ring: &kevent_ring::Ring, id: ConsumerId) -> bool {
        let Some(rec) = ring.record(id) else {
            return true;
        };
        let gen = rec.generation.load(std::sync::atomic::Ordering::Relaxed);
        let pid = rec.pid.load(std::sync::atomic::Ordering::Relaxed);
        if pid == 0 {
            return true;
        }
        let Some((state, start)) = process_start(pid) else {
            return false; // no such process
        };
        if state == 'Z' || state == 'X' {
            return false;
        }
        match self.starts.get(&id) {
            Some(&(g, p, s)) if g == gen && p == pid => s == start,
            _ => {
                self.starts.insert(id, (gen, pid, start));
                true
            }
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
        let mut live = Vec::new();
        let mut asleep = 0u32;
        for (id, state, _pid) in ring.consumers() {
            match state {
                RecordState::Free => {
                    self.starts.remove(&id);
                }
                RecordState::Departed => dead.push(id),
                RecordState::Active => {
                    if Liveness::is_alive(self.memfd.as_fd(), id).unwrap_or(true)
                        && self.process_alive(&ring, id)
                    {
                        live.push(id);
                        asleep =
                            asleep.saturating_add(ring.record(id).map_or(0, |r| {
                                r.sleeping.load(std::sync::atomic::Ordering::Relaxed)
                            }));
                    } else {
                        dead.push(id);
                    }
                }
            }
        }
        if asleep > ring.sleepers() {
            // Someone sleeps uncounted (`waiters` was overwritten): wake everyone, they
            // count themselves in again as they go back to sleep.
            ring.wake_all();
        }
        let cap = ring.capacity();
        // Validated just above by check_claim_index: uidx <= cidx <= kidx.
        let (u, c) = (ring.uidx(), ring.cidx());
        if c < u {
            return None;
        }
        // EMPTY of the next lap at uidx is not garbage: a consumer's `advance` reset the
        // slot and has yet to move `uidx` past it (preempted in between, for as long as
        // the scheduler likes). Help it, as any consumer would, and look from there.
        let (u, c) =
            if u < c && ring.slot_state(u) == Some(SlotState::new(u / cap + 1, 0, Status::Empty)) {
                let u = ring.advance();
                (u, ring.cidx().max(u))
            } else {
                (u, c)
            };
        // A state word at uidx that is not ours — undecodable, or of another lap — twice
        // in a row: the ring can never move again. Say so instead of stalling silently.
        let lap = SlotState::new(u / cap, 0, Status::Empty).lap;
        if u < c && ring.slot_state(u).is_none_or(|st| st.lap != lap) {
            if self.garbage_at == Some(u) {
                ring.mark_broken(kevent_ring::Broken::SlotState);
                return None;
            }
            self.garbage_at = Some(u);
        } else {
            self.garbage_at = None;
        }
        // An ownerless DONE at uidx: an entry that vanished without being claimed (no
        // protocol step writes one, see kevent_ring's consumer module). The advance stops
        // there; re-deliver it rather than lose it silently or stall.
        if u < c
            && ring.slot_state(u) == Some(SlotState::new(u / cap, 0, Status::Done))
            && ring.reclaim(ConsumerId(0), u)
        {
            kernel.redeliver(&[u]);
            ring.advance();
            kernel.service(0);
        }
        self.lease(kernel, u, c, &live);
        // Nothing changed since the last scan: no need to look at every slot again.
        let view = (u, c, live.clone());
        if dead.is_empty() && self.suspects.is_empty() && self.scanned.as_ref() == Some(&view) {
            return Some(half);
        }
        self.scanned = Some(view);
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
        let mut again = Vec::new();
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
                    again.push(pos);
                }
                Status::Ready if !dead.is_empty() || self.suspects.contains(&pos) => {
                    if self.suspects.contains(&pos) {
                        if ring.reclaim(ConsumerId(0), pos) {
                            again.push(pos);
                        }
                    } else {
                        suspects.push(pos);
                    }
                }
                _ => {}
            }
        }
        kernel.redeliver(&again);
        self.suspects = suspects;
        for id in dead {
            ring.free_record(id);
        }
        ring.advance();
        kernel.service(0);
        Some(half)
    }

    /// Takes back the entry at `uidx` from a live consumer that has held it past the
    /// lease while the ring is needed (see the module docs).
    fn lease(&mut self, kernel: &mut Kernel, u: u64, c: u64, live: &[ConsumerId]) {
        let ring = kernel.ring().clone();
        let held = (u < c)
            .then(|| ring.slot_state(u))
            .flatten()
            .filter(|st| st.status == Status::Claimed && live.contains(&ConsumerId(st.owner)));
        let Some(st) = held else {
            self.holding = None;
            return;
        };
        let since = match self.holding {
            Some((pos, owner, since)) if pos == u && owner == st.owner => since,
            _ => {
                self.holding = Some((u, st.owner, Instant::now()));
                return;
            }
        };
        if since.elapsed() < kernel.lease {
            return;
        }
        // Needed: the ring is full, events wait for room, or entries committed after this
        // one wait for it to be released (the ring releases in order; until then their
        // slots are not free, and the ring's room shrinks with every commit behind it —
        // their kevents were already re-armed at their commit, kernel/release.rs). Only
        // looked at once the lease is over: the scan is O(claimed).
        let needed = kernel.backlog_waiting()
            || kernel.producer.room().unwrap_or(1) == 0
            || (u + 1..c).any(|pos| {
                ring.slot_state(pos)
                    .is_some_and(|s| s.status == Status::Done)
            });
        if needed && ring.reclaim(ConsumerId(st.owner), u) {
            self.holding = None;
            ring.stats()
                .expired
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            kernel.redeliver(&[u]);
            ring.advance();
            kernel.service(0);
        }
    }
}

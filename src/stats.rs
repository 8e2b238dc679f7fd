//! [`Stats`]: the producer's counters, read from the ring header.

use std::sync::atomic::Ordering;

use kevent_ring::Ring;

/// A snapshot of the counters the producer keeps in the ring header (every participant
/// can read them; only the producer writes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Events published into the ring.
    pub posted: u64,
    /// Readiness merged into an event still pending instead of a new one.
    pub coalesced: u64,
    /// Events that waited in the producer's backlog because the ring was full.
    pub backlogged: u64,
    /// Events delivered again because the consumer that claimed them died, or held them
    /// past its lease (those are counted in `expired` too).
    pub redelivered: u64,
    /// Events taken back from a live consumer that held them past its lease
    /// ([`Builder::lease`](crate::Builder::lease)).
    pub expired: u64,
    /// Events lost. The design guarantees 0; the counter exists to prove it.
    pub lost: u64,
    /// Events in the backlog now.
    pub backlog_len: u64,
    /// Kevents registered now.
    pub registered: u64,
    /// `FUTEX_WAKE` system calls made to wake sleeping consumers.
    pub wake_calls: u64,
}

impl Stats {
    /// Reads the counters of `ring`. Each is read on its own (Relaxed: they are
    /// statistics, not synchronisation), so the snapshot is not atomic as a whole.
    pub fn of(ring: &Ring) -> Stats {
        let s = &ring.stats();
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            posted: get(&s.posted),
            coalesced: get(&s.coalesced),
            backlogged: get(&s.backlogged),
            redelivered: get(&s.redelivered),
            expired: get(&s.expired),
            lost: get(&s.lost),
            backlog_len: get(&s.backlog_len),
            registered: get(&s.registered),
            wake_calls: get(&s.wake_calls),
        }
    }
}

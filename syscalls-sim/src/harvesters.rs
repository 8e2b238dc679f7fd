//! [`Harvesters`]: what the producer thread knows of the consumers of its process that
//! harvest the sources themselves (`instance/harvest.rs`), and what decides whether it
//! parks (`wake/poller.rs` in kevent-ring has the park handshake).

use std::sync::atomic::{AtomicBool, Ordering};

use kevent_ring::Ring;

/// The producer thread's view of the consumers of this process that harvest for
/// themselves (`Instance::next_batch`): while they do, or while one of them blocks on the
/// sources as the poller, and nobody sleeps on the ring's futex, the producer thread
/// parks instead of sitting in `epoll_wait`, where every readiness edge would wake it (a
/// cross-core wake-up, 27–49 µs here) only to hand over an event a consumer would have
/// found itself. The park handshake with futex sleepers is the ring's (`wake/poller.rs` in
/// kevent-ring): a sleeper unparks it, so no sleeper waits on unwatched sources.
#[derive(Debug, Default)]
pub(crate) struct Harvesters {
    /// A consumer is the poller: blocked on the sources on everyone's behalf.
    pub(crate) blocker: AtomicBool,
    /// Harvest rounds done by consumers: the producer parks only while this moves (a
    /// thread that harvested once and then went to do something else must not keep the
    /// producer parked).
    pub(crate) rounds: std::sync::atomic::AtomicU64,
    /// Set when the queue's notify fd is armed: consumers may be asleep in another event
    /// loop, so the producer thread must keep publishing by itself.
    pub(crate) never_park: AtomicBool,
}

impl Harvesters {
    /// Producer thread: whether parking is worth it and allowed: no event loop relies on
    /// the producer, and a consumer polls the sources (publishing for the futex
    /// sleepers too), or consumers harvested since `seen` (the producer's last look) and
    /// nobody sleeps on the ring. `Ring::park_begin` makes the final, race-free check.
    pub(crate) fn should_park(&self, ring: &Ring, seen: &mut u64) -> bool {
        let rounds = self.rounds.load(Ordering::Relaxed);
        let progress = std::mem::replace(seen, rounds) != rounds;
        !self.never_park.load(Ordering::Relaxed)
            && (self.blocker.load(Ordering::Relaxed) || (progress && ring.sleepers() == 0))
    }
}

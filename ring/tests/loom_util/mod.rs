//! Helpers of the loom models (`ring/tests/loom*.rs`).

// Each model file uses a different part of it.
#![allow(dead_code)]

use std::sync::Arc;

use kevent_ring::{ConsumerId, Producer, PushError, Ring, Ukevent};
use loom::sync::{Condvar, Mutex};
use loom::thread;

/// Runs `f` under loom with at most two preemptions per execution (unless
/// `LOOM_MAX_PREEMPTIONS` says otherwise): every bug we know of in this kind of protocol
/// needs at most two, and the bound keeps the whole file well under a minute.
pub fn model<F>(f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(2);
    }
    // Consumers that find nothing to claim yield and retry; with a producer preempted
    // in between, one execution can take a few thousand steps.
    builder.max_branches = builder.max_branches.max(20_000);
    builder.check(f);
}

pub fn event(id: u64) -> Ukevent {
    Ukevent {
        id,
        user: id ^ 0xfeed,
        ..Default::default()
    }
}

/// A heap ring of `capacity` slots with its producer and `consumers` registered ids.
pub fn ring_with(capacity: u32, consumers: usize) -> (Arc<Ring>, Producer, Vec<ConsumerId>) {
    let ring = Arc::new(Ring::heap(capacity).expect("valid capacity"));
    let producer = Producer::new(ring.clone()).expect("a fresh ring is sound");
    let ids = (0..consumers)
        .map(|_| ring.register_consumer().expect("a free consumer record"))
        .collect();
    (ring, producer, ids)
}

/// Pushes events `0..n` and publishes them (one flush).
pub fn publish(producer: &mut Producer, n: u64) {
    for id in 0..n {
        producer.push(&event(id), false).unwrap();
    }
    producer.flush();
}

/// Pushes `ev`, retrying (and yielding to the consumers) while the ring is full.
pub fn push_when_room(producer: &mut Producer, ev: &Ukevent) -> u64 {
    loop {
        match producer.push(ev, false) {
            Ok(pos) => return pos,
            Err(PushError::Full) => thread::yield_now(),
            Err(PushError::Broken(b)) => panic!("ring marked broken: {b}"),
        }
    }
}

/// Takes every entry `me` owns in `start..end`, checks its content matches its id, and
/// returns the ids.
pub fn take_all(ring: &Ring, me: ConsumerId, start: u64, end: u64) -> Vec<u64> {
    (start..end)
        .filter_map(|pos| ring.take(me, pos))
        .map(|ev| {
            assert_eq!(ev.user, ev.id ^ 0xfeed, "entry {} is torn", ev.id);
            ev.id
        })
        .collect()
}

/// An eventfd: what the poller blocks on (its sources and its bell), or what a model's
/// main thread waits for.
pub struct Eventfd {
    state: Mutex<EventfdState>,
    cond: Condvar,
}

#[derive(Default)]
struct EventfdState {
    /// The eventfd's counter (readable while non-zero).
    pending: u64,
    /// Writes so far (never reset).
    rings: u64,
}

impl Eventfd {
    pub fn new() -> Arc<Eventfd> {
        Arc::new(Eventfd {
            state: Mutex::new(EventfdState::default()),
            cond: Condvar::new(),
        })
    }

    /// `write(fd, 1)`.
    pub fn ring(&self) {
        let mut s = self.state.lock().expect("loom mutex");
        s.pending += 1;
        s.rings += 1;
        self.cond.notify_all();
    }

    /// `poll` until readable, then `read` (resets the counter).
    pub fn wait(&self) {
        let mut s = self.state.lock().expect("loom mutex");
        while s.pending == 0 {
            s = self.cond.wait(s).expect("loom condvar");
        }
        s.pending = 0;
    }

    /// How many times it was written to.
    pub fn rings(&self) -> u64 {
        self.state.lock().expect("loom mutex").rings
    }
}

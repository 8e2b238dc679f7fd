//! Helpers of the loom models (ring/tests/loom.rs, ring/tests/loom_sleep.rs).

// Each model file uses a different part of it.
#![allow(dead_code)]

use std::sync::Arc;

use kevent_ring::{ConsumerId, Producer, PushError, Ring, Ukevent};
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

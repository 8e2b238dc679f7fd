//! Ring micro-benchmark: publish → claim → commit throughput of the kevent ring against
//! `crossbeam_queue::ArrayQueue` carrying 64-byte items, in the same binary and run.
//!
//! ```text
//! cargo bench -p kevent-ring --bench ring_throughput
//! ```
//!
//! Cases (each one producer thread plus 1 or 4 consumer threads, except the round trips):
//!
//! * `ring bN`: the producer pushes and publishes (`flush`) every N entries; consumers
//!   `claim` up to N, `take` each entry, `complete_range` the claim. N = 64 ("batched")
//!   and N = 1 ("single", the per-event API).
//! * `arrayqueue`: the producer `push`es, consumers `pop`, one 64-byte item at a time
//!   (ArrayQueue has no batch API).
//! * `round trip`: one thread pushes 64, flushes, claims 64, takes, completes; repeat
//!   (what the "100 M events/s" goal refers to). ArrayQueue: push 64, pop 64.
//!
//! Fairness: every waiting side (full ring / full queue, nothing to claim / empty queue)
//! backs off with the same `crossbeam_utils::Backoff` (spin, then yield); both hold the
//! same capacity; the consumers of both read the whole event. Cases are rotated
//! (ring, arrayqueue, ring, ...) over several rounds, starting at a different case each
//! round, and medians are reported.

// Under `--cfg loom` the ring has no memfd (loom atomics cannot live in shared memory):
// there is nothing to measure, but `cargo clippy --all-targets` still builds this file.
#[cfg(loom)]
fn main() {}

#[cfg(not(loom))]
fn main() {
    bench::main();
}

#[cfg(not(loom))]
mod bench {
    use std::hint::black_box;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::thread;
    use std::time::{Duration, Instant};

    use crossbeam_queue::ArrayQueue;
    use crossbeam_utils::Backoff;
    use kevent_ring::{Producer, PushError, Ring, Ukevent};

    /// Slots in the ring and in the queue.
    const CAPACITY: u32 = 1024;
    /// Events per cross-thread run.
    const EVENTS: u64 = 2_000_000;
    /// Events per same-thread round-trip run.
    const ROUND_TRIP_EVENTS: u64 = 20_000_000;
    /// Rounds over all cases; medians are taken over them.
    const ROUNDS: usize = 5;
    /// The batched claim/commit (and publish) size.
    const BATCH: u64 = 64;

    /// The ArrayQueue's item: 64 bytes, like a ring slot.
    type Item = [u64; 8];

    fn event(seq: u64) -> Ukevent {
        Ukevent {
            id: seq,
            user: seq,
            ..Default::default()
        }
    }

    /// Reads every field, so that the consumer pays for the whole entry.
    fn digest(ev: &Ukevent) -> u64 {
        ev.id ^ u64::from(ev.type_) ^ u64::from(ev.event) ^ u64::from(ev.ret_data[0]) ^ ev.user
    }

    fn ring_pipeline(consumers: usize, batch: u64) -> Duration {
        let ring = Arc::new(Ring::create("kevent-bench", CAPACITY).expect("memfd ring"));
        let done = AtomicBool::new(false);
        let start = Instant::now();
        let taken: u64 = thread::scope(|s| {
            let handles: Vec<_> = (0..consumers)
                .map(|_| {
                    let ring = &ring;
                    let done = &done;
                    s.spawn(move || {
                        let me = ring.register_consumer().expect("a consumer record");
                        let backoff = Backoff::new();
                        let (mut taken, mut sum) = (0u64, 0u64);
                        loop {
                            let finished = done.load(Ordering::Acquire);
                            let claim = ring.claim(me, batch);
                            if claim.is_empty() {
                                if finished {
                                    break;
                                }
                                backoff.snooze();
                                continue;
                            }
                            backoff.reset();
                            for pos in claim.start..claim.end {
                                let ev = ring.take(me, pos).expect("no reaper: ours");
                                sum = sum.wrapping_add(digest(&ev));
                            }
                            ring.complete_range(me, claim.start..claim.end);
                            taken += claim.owned;
                        }
                        black_box(sum);
                        taken
                    })
                })
                .collect();
            let mut producer = Producer::new(ring.clone()).expect("a fresh ring");
            let backoff = Backoff::new();
            let mut seq = 0;
            while seq < EVENTS {
                match producer.push(&event(seq), false) {
                    Ok(_) => {
                        seq += 1;
                        if seq % batch == 0 {
                            producer.flush();
                        }
                        backoff.reset();
                    }
                    Err(PushError::Full) => {
                        producer.flush();
                        backoff.snooze();
                    }
                    Err(PushError::Broken(b)) => panic!("ring broken: {b}"),
                }
            }
            producer.flush();
            done.store(true, Ordering::Release);
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        let elapsed = start.elapsed();
        assert_eq!(taken, EVENTS);
        assert_eq!(ring.uidx(), EVENTS);
        elapsed
    }

    fn arrayqueue_pipeline(consumers: usize) -> Duration {
        let queue = ArrayQueue::<Item>::new(CAPACITY as usize);
        let done = AtomicBool::new(false);
        let start = Instant::now();
        let taken: u64 = thread::scope(|s| {
            let handles: Vec<_> = (0..consumers)
                .map(|_| {
                    let queue = &queue;
                    let done = &done;
                    s.spawn(move || {
                        let backoff = Backoff::new();
                        let (mut taken, mut sum) = (0u64, 0u64);
                        loop {
                            let finished = done.load(Ordering::Acquire);
                            match queue.pop() {
                                Some(item) => {
                                    backoff.reset();
                                    sum = sum.wrapping_add(item.iter().fold(0, |a, w| a ^ w));
                                    taken += 1;
                                }
                                None if finished => break,
                                None => backoff.snooze(),
                            }
                        }
                        black_box(sum);
                        taken
                    })
                })
                .collect();
            let backoff = Backoff::new();
            for seq in 0..EVENTS {
                let mut item: Item = [seq, 0, 0, 0, seq, 0, 0, 0];
                while let Err(back) = queue.push(item) {
                    item = back;
                    backoff.snooze();
                }
                backoff.reset();
            }
            done.store(true, Ordering::Release);
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        let elapsed = start.elapsed();
        assert_eq!(taken, EVENTS);
        elapsed
    }

    fn ring_round_trip() -> Duration {
        let ring = Arc::new(Ring::create("kevent-bench-rt", CAPACITY).expect("memfd ring"));
        let me = ring.register_consumer().expect("a consumer record");
        let mut producer = Producer::new(ring.clone()).expect("a fresh ring");
        let mut sum = 0u64;
        let start = Instant::now();
        let mut seq = 0;
        while seq < ROUND_TRIP_EVENTS {
            for _ in 0..BATCH {
                producer.push(&event(seq), false).expect("room for a batch");
                seq += 1;
            }
            producer.flush();
            let claim = ring.claim(me, BATCH);
            for pos in claim.start..claim.end {
                sum = sum.wrapping_add(digest(&ring.take(me, pos).expect("ours")));
            }
            ring.complete_range(me, claim.start..claim.end);
        }
        let elapsed = start.elapsed();
        black_box(sum);
        assert_eq!(ring.uidx(), ROUND_TRIP_EVENTS);
        elapsed
    }

    fn arrayqueue_round_trip() -> Duration {
        let queue = ArrayQueue::<Item>::new(CAPACITY as usize);
        let mut sum = 0u64;
        let start = Instant::now();
        let mut seq = 0;
        while seq < ROUND_TRIP_EVENTS {
            for _ in 0..BATCH {
                queue
                    .push([seq, 0, 0, 0, seq, 0, 0, 0])
                    .expect("room for a batch");
                seq += 1;
            }
            for _ in 0..BATCH {
                let item = queue.pop().expect("just pushed");
                sum = sum.wrapping_add(item.iter().fold(0, |a, w| a ^ w));
            }
        }
        let elapsed = start.elapsed();
        black_box(sum);
        elapsed
    }

    struct Case {
        name: &'static str,
        events: u64,
        run: fn() -> Duration,
        samples: Vec<f64>,
    }

    impl Case {
        fn new(name: &'static str, events: u64, run: fn() -> Duration) -> Case {
            Case {
                name,
                events,
                run,
                samples: Vec::new(),
            }
        }

        /// Median throughput in M events/s.
        fn median(&self) -> f64 {
            let mut s = self.samples.clone();
            s.sort_by(f64::total_cmp);
            s[s.len() / 2]
        }
    }

    fn command_output(cmd: &str, args: &[&str]) -> Option<String> {
        let out = std::process::Command::new(cmd).args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    pub(crate) fn main() {
        // `cargo bench` passes `--bench`; `cargo test --benches` does not. Under the latter,
        // run one quick round as a smoke test.
        let benching = std::env::args().any(|a| a == "--bench");
        let rounds = if benching { ROUNDS } else { 1 };

        let cpus = thread::available_parallelism().map_or(0, |n| n.get());
        let model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_string())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let commit = command_output("git", &["rev-parse", "--short", "HEAD"])
            .unwrap_or_else(|| "unknown".into());
        println!("kevent-ring throughput: publish -> claim -> commit");
        println!("machine: {cpus} CPUs (nproc), {model}; commit {commit}");
        println!(
            "settings: capacity {CAPACITY}, {EVENTS} events per cross-thread run, \
         {ROUND_TRIP_EVENTS} per round trip, batch {BATCH}, {rounds} rounds (median), \
         64-byte items, Backoff::snooze on both sides"
        );

        let mut cases = [
            Case::new("ring 1 consumer b64", EVENTS, || ring_pipeline(1, BATCH)),
            Case::new("arrayqueue 1 consumer", EVENTS, || arrayqueue_pipeline(1)),
            Case::new("ring 1 consumer b1", EVENTS, || ring_pipeline(1, 1)),
            Case::new("ring 4 consumers b64", EVENTS, || ring_pipeline(4, BATCH)),
            Case::new("arrayqueue 4 consumers", EVENTS, || arrayqueue_pipeline(4)),
            Case::new("ring 4 consumers b1", EVENTS, || ring_pipeline(4, 1)),
            Case::new("ring round trip b64", ROUND_TRIP_EVENTS, ring_round_trip),
            Case::new(
                "arrayqueue round trip 64",
                ROUND_TRIP_EVENTS,
                arrayqueue_round_trip,
            ),
        ];
        let total = Instant::now();
        for round in 0..rounds {
            let n = cases.len();
            for i in 0..n {
                // Start each round at a different case, keeping the ring/arrayqueue rotation.
                let case = &mut cases[(i + round) % n];
                let elapsed = (case.run)();
                case.samples
                    .push(case.events as f64 / elapsed.as_secs_f64() / 1e6);
            }
        }
        let m = |name: &str| {
            cases
                .iter()
                .find(|c| c.name == name)
                .map(Case::median)
                .unwrap()
        };

        println!();
        println!("{:<26} {:>12}  samples (M events/s)", "case", "median M/s");
        for c in &cases {
            let samples: Vec<String> = c.samples.iter().map(|s| format!("{s:.1}")).collect();
            println!(
                "{:<26} {:>12.1}  [{}]",
                c.name,
                c.median(),
                samples.join(", ")
            );
        }
        println!();
        println!("ratio ring / arrayqueue (medians):");
        for (ring, queue) in [
            ("ring 1 consumer b64", "arrayqueue 1 consumer"),
            ("ring 1 consumer b1", "arrayqueue 1 consumer"),
            ("ring 4 consumers b64", "arrayqueue 4 consumers"),
            ("ring 4 consumers b1", "arrayqueue 4 consumers"),
            ("ring round trip b64", "arrayqueue round trip 64"),
        ] {
            println!("  {ring:<22} / {queue:<25} {:>6.2}", m(ring) / m(queue));
        }
        println!("total time {:.1?}", total.elapsed());
    }
}

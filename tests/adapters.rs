//! The event-loop adapters (features `mio` and `tokio`): an edge-triggered mio
//! registration and tokio's `AsyncQueue` deliver every event exactly once, wake-ups reach
//! them, cancelled waits lose nothing, and an idle queue costs no CPU (a level-triggered
//! EOF, once removed, does not keep a loop spinning).
//!
//! Run with `cargo test --features mio,tokio --test adapters`.

mod util;

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kevent::{AsyncQueue, Interest, Queue, Source, Token, Trigger};
use util::queue;

const ZERO: Option<Duration> = Some(Duration::ZERO);
/// Events per delivery test: far more than the ring holds (64), so the backlog and the
/// publishes that follow commits are part of it.
const N: u64 = 5_000;

/// Registers user events `0..n` (edge-triggered: each `ready` is one event).
fn user_events(q: &Queue, n: u64) {
    for id in 0..n {
        q.add(&Source::user(id), Token(id), Trigger::Edge).unwrap();
    }
}

/// Makes user events `0..n` ready once each, pausing now and then so that the consumer
/// also drains an empty ring and sleeps between publishes.
fn make_ready(q: &Queue, n: u64) {
    for id in 0..n {
        q.ready(&Source::user(id)).unwrap();
        if id % 97 == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// How many times each token was delivered.
fn counts(n: u64) -> Vec<AtomicU32> {
    (0..n).map(|_| AtomicU32::new(0)).collect()
}

fn assert_each_once(counts: &[AtomicU32]) {
    for (id, c) in counts.iter().enumerate() {
        assert_eq!(c.load(Ordering::Relaxed), 1, "user event {id}");
    }
}

/// CPU time this thread has used.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// A socket whose peer is gone, registered level-triggered with token 1.
fn eof_socket(q: &Queue) -> UnixStream {
    let (ours, theirs) = UnixStream::pair().unwrap();
    q.add(
        &Source::socket(&ours, Interest::READABLE),
        Token(1),
        Trigger::Level,
    )
    .unwrap();
    drop(theirs);
    ours
}

mod mio_source {
    use super::*;
    use mio::{Events, Interest as MioInterest, Poll, Token as MioToken};

    const QUEUE: MioToken = MioToken(7);

    fn registered() -> (Queue, Poll) {
        let mut q = queue();
        let poll = Poll::new().unwrap();
        poll.registry()
            .register(&mut q, QUEUE, MioInterest::READABLE)
            .unwrap();
        (q, poll)
    }

    /// Drains with zero-timeout waits until one is empty; returns the tokens taken.
    fn drain(q: &Queue) -> Vec<u64> {
        let mut got = Vec::new();
        loop {
            let batch = q.wait(32, ZERO).unwrap();
            if batch.is_empty() {
                return got;
            }
            got.extend(batch.iter().map(|e| e.token().0));
        }
    }

    #[test]
    fn an_edge_triggered_registration_loses_no_event() {
        let (q, mut poll) = registered();
        user_events(&q, N);
        let seen = counts(N);
        let mut events = Events::with_capacity(8);
        std::thread::scope(|s| {
            s.spawn(|| make_ready(&q, N));
            let mut total = 0;
            while total < N {
                poll.poll(&mut events, Some(Duration::from_secs(10)))
                    .unwrap();
                assert!(
                    !events.is_empty(),
                    "no readiness for 10 s with {total} of {N} events taken: a lost edge"
                );
                for ev in &events {
                    assert_eq!(ev.token(), QUEUE);
                    assert!(ev.is_readable());
                }
                for id in drain(&q) {
                    seen[id as usize].fetch_add(1, Ordering::Relaxed);
                    total += 1;
                }
            }
        });
        assert_each_once(&seen);
        // Drained: at most the readiness of the last publish is left, and it finds nothing.
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .unwrap();
        assert!(drain(&q).is_empty());
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .unwrap();
        assert!(events.is_empty(), "readable with nothing to take");
    }

    /// More events than a batch (and than the ring) ready before the loop looks: a loop
    /// that stopped at a non-empty batch would wait for an edge that never comes.
    #[test]
    fn a_burst_is_drained_to_its_last_event() {
        const BURST: u64 = 1_000;
        let (q, mut poll) = registered();
        user_events(&q, BURST);
        for id in 0..BURST {
            q.ready(&Source::user(id)).unwrap();
        }
        let seen = counts(BURST);
        let mut events = Events::with_capacity(8);
        let mut total = 0;
        while total < BURST {
            poll.poll(&mut events, Some(Duration::from_secs(2)))
                .unwrap();
            assert!(!events.is_empty(), "{total} of {BURST} taken, then no edge");
            for id in drain(&q) {
                seen[id as usize].fetch_add(1, Ordering::Relaxed);
                total += 1;
            }
        }
        assert_each_once(&seen);
    }

    #[test]
    fn a_wake_reaches_a_loop_asleep_in_poll() {
        let (q, mut poll) = registered();
        let mut events = Events::with_capacity(8);
        let start = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(50));
                q.wake().unwrap();
            });
            poll.poll(&mut events, Some(Duration::from_secs(10)))
                .unwrap();
        });
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(
            events.iter().map(|e| e.token()).collect::<Vec<_>>(),
            [QUEUE]
        );
        assert!(drain(&q).is_empty(), "a wake-up is no event");
    }

    #[test]
    fn a_level_triggered_eof_removed_before_the_commit_is_delivered_once() {
        let (q, mut poll) = registered();
        let mut sock = eof_socket(&q);
        let mut events = Events::with_capacity(8);
        poll.poll(&mut events, Some(Duration::from_secs(5)))
            .unwrap();
        assert!(!events.is_empty());
        let mut delivered = 0;
        loop {
            let batch = q.wait(8, ZERO).unwrap();
            if batch.is_empty() {
                break;
            }
            for ev in &batch {
                assert_eq!(ev.token(), Token(1));
                assert!(ev.is_readable() && ev.is_read_closed());
                assert_eq!(sock.read(&mut [0; 16]).unwrap(), 0);
                // End of file: remove before the batch commits (and before the drop).
                q.remove(&Source::socket(&sock, Interest::READABLE))
                    .unwrap();
                delivered += 1;
            }
        }
        assert_eq!(delivered, 1);
        let cpu = thread_cpu();
        poll.poll(&mut events, Some(Duration::from_millis(300)))
            .unwrap();
        assert!(events.is_empty(), "reported again after its removal");
        assert!(thread_cpu() - cpu < Duration::from_millis(50));
    }

    #[test]
    fn only_readability_can_be_registered() {
        let mut q = queue();
        let mut poll = Poll::new().unwrap();
        let err = poll
            .registry()
            .register(&mut q, QUEUE, MioInterest::READABLE | MioInterest::WRITABLE)
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        poll.registry()
            .register(&mut q, QUEUE, MioInterest::READABLE)
            .unwrap();
        poll.registry()
            .reregister(&mut q, MioToken(8), MioInterest::READABLE)
            .unwrap();
        q.wake().unwrap();
        let mut events = Events::with_capacity(8);
        poll.registry().deregister(&mut q).unwrap();
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .unwrap();
        assert!(events.is_empty(), "deregistered, yet reported");
    }
}

/// A level-triggered EOF left registered is reported again after every commit: a drain
/// loop that never removes it never sees an empty batch (the reason to remove it).
#[test]
fn a_level_triggered_eof_left_registered_comes_back_after_every_commit() {
    let q = queue();
    let _sock = eof_socket(&q);
    for _ in 0..3 {
        let batch = q.wait(8, Some(Duration::from_secs(5))).unwrap();
        assert_eq!(batch.len(), 1);
        assert!(batch.iter().all(|e| e.is_read_closed()));
    }
}

mod tokio_queue {
    use super::*;

    fn current_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn multi_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    /// A queue with user events `0..n`, on `rt`'s reactor.
    fn async_queue(rt: &tokio::runtime::Runtime, n: u64) -> AsyncQueue {
        let _in = rt.enter();
        let aq = AsyncQueue::new(queue()).unwrap();
        user_events(aq.queue(), n);
        aq
    }

    /// Takes events until `n` were taken, counting each token.
    async fn take(aq: &AsyncQueue, seen: &[AtomicU32], n: u64) {
        let mut total = 0;
        while total < n {
            let batch = tokio::time::timeout(Duration::from_secs(10), aq.wait(32))
                .await
                .unwrap_or_else(|_| panic!("nothing for 10 s with {total} of {n} taken"))
                .unwrap();
            assert!(!batch.is_empty(), "an empty batch without a wake-up");
            for ev in &batch {
                seen[ev.token().0 as usize].fetch_add(1, Ordering::Relaxed);
                total += 1;
            }
        }
    }

    #[test]
    fn every_event_from_another_thread_is_delivered_once_on_a_current_thread_runtime() {
        let rt = current_thread();
        let aq = async_queue(&rt, N);
        let seen = counts(N);
        std::thread::scope(|s| {
            s.spawn(|| make_ready(aq.queue(), N));
            rt.block_on(take(&aq, &seen, N));
        });
        assert_each_once(&seen);
    }

    #[test]
    fn tasks_sharing_a_queue_on_a_multi_thread_runtime_each_event_once() {
        const TASKS: u64 = 4;
        const STOP: u64 = N; // a user event passed from task to task
        let rt = multi_thread();
        let aq = Arc::new(async_queue(&rt, N));
        aq.queue()
            .add(&Source::user(STOP), Token(STOP), Trigger::Edge)
            .unwrap();
        let seen: Arc<Vec<AtomicU32>> = Arc::new(counts(N));
        let taken = Arc::new(AtomicU32::new(0));
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let (aq, seen, taken) = (aq.clone(), seen.clone(), taken.clone());
                rt.spawn(async move {
                    let mut mine = 0u32;
                    loop {
                        let batch = aq.wait(16).await.unwrap();
                        let mut stop = false;
                        for ev in &batch {
                            if ev.token().0 == STOP {
                                stop = true;
                                continue;
                            }
                            seen[ev.token().0 as usize].fetch_add(1, Ordering::Relaxed);
                            mine += 1;
                            if taken.fetch_add(1, Ordering::Relaxed) + 1 == N as u32 {
                                aq.queue().ready(&Source::user(STOP)).unwrap();
                            }
                        }
                        if stop {
                            drop(batch);
                            // Pass it on: the next task to take it stops too.
                            aq.queue().ready(&Source::user(STOP)).unwrap();
                            return mine;
                        }
                    }
                })
            })
            .collect();
        make_ready(aq.queue(), N);
        let per_task: Vec<u32> = rt.block_on(async {
            let mut v = Vec::new();
            for t in tasks {
                let n = tokio::time::timeout(Duration::from_secs(20), t)
                    .await
                    .expect("a task did not stop")
                    .unwrap();
                v.push(n);
            }
            v
        });
        assert_each_once(&seen);
        assert_eq!(per_task.iter().sum::<u32>(), N as u32);
    }

    #[test]
    fn a_cancelled_wait_loses_no_event() {
        let rt = current_thread();
        let aq = async_queue(&rt, N);
        let seen = counts(N);
        let mut cancelled = 0;
        std::thread::scope(|s| {
            s.spawn(|| {
                for chunk in 0..N / 500 {
                    for id in chunk * 500..(chunk + 1) * 500 {
                        aq.queue().ready(&Source::user(id)).unwrap();
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
            rt.block_on(async {
                let mut total = 0;
                let start = Instant::now();
                while total < N {
                    assert!(start.elapsed() < Duration::from_secs(20), "{total} of {N}");
                    match tokio::time::timeout(Duration::from_millis(1), aq.wait(32)).await {
                        Err(_) => cancelled += 1,
                        Ok(batch) => {
                            for ev in &batch.unwrap() {
                                seen[ev.token().0 as usize].fetch_add(1, Ordering::Relaxed);
                                total += 1;
                            }
                        }
                    }
                }
            });
        });
        assert_each_once(&seen);
        assert!(
            cancelled > 0,
            "no wait was cancelled: the test tested nothing"
        );
    }

    #[test]
    fn a_wake_ends_a_pending_wait_with_an_empty_batch() {
        let rt = current_thread();
        let aq = async_queue(&rt, 0);
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                // A wake-up that finds nobody waiting is not remembered: repeat it until
                // the wait has returned.
                while !done.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(10));
                    aq.queue().wake().unwrap();
                }
            });
            // Stops the waker however this thread leaves the scope (a failed assertion too).
            struct Done<'a>(&'a AtomicBool);
            impl Drop for Done<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Release);
                }
            }
            let _done = Done(&done);
            let batch = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), aq.wait(8)).await
            });
            let batch = batch.expect("the wake-up did not end the wait").unwrap();
            assert!(batch.is_empty());
        });
    }

    #[test]
    fn a_level_triggered_eof_removed_on_sight_does_not_keep_the_wait_spinning() {
        let rt = current_thread();
        let aq = async_queue(&rt, 0);
        let mut sock = eof_socket(aq.queue());
        rt.block_on(async {
            let batch = aq.wait(8).await.unwrap();
            assert_eq!(batch.len(), 1);
            let ev = batch.iter().next().unwrap();
            assert!(ev.is_read_closed());
            assert_eq!(sock.read(&mut [0; 16]).unwrap(), 0);
            aq.queue()
                .remove(&Source::socket(&sock, Interest::READABLE))
                .unwrap();
            drop(batch);
            // Nothing more comes, and waiting for it costs no CPU: the runtime (this
            // thread) sleeps in epoll.
            let cpu = thread_cpu();
            let idle = tokio::time::timeout(Duration::from_millis(300), aq.wait(8)).await;
            assert!(idle.is_err(), "the removed EOF was reported again");
            let used = thread_cpu() - cpu;
            assert!(
                used < Duration::from_millis(50),
                "{used:?} of CPU in 300 ms"
            );
        });
    }

    #[test]
    fn max_zero_is_einval_and_a_connected_queue_is_async_too() {
        let rt = current_thread();
        let aq = async_queue(&rt, 0);
        let err = rt.block_on(aq.wait(0)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
        let q = aq.into_inner();
        let path = std::env::temp_dir().join(format!("kevent-adapters-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        q.listen(&path).unwrap();
        let connected = {
            let _in = rt.enter();
            AsyncQueue::new(Queue::connect(&path).unwrap()).unwrap()
        };
        // The owner fires 3 user events; the connected consumer awaits each.
        for id in 1..=3u64 {
            let user = Source::user(100 + id);
            q.add(&user, Token(id), Trigger::Edge).unwrap();
            q.ready(&user).unwrap();
            let batch = rt
                .block_on(async {
                    tokio::time::timeout(Duration::from_secs(5), connected.wait(8)).await
                })
                .expect("the connected queue's wait returned")
                .unwrap();
            let tokens: Vec<u64> = batch.iter().map(|e| e.token().0).collect();
            assert_eq!(tokens, [id]);
        }
    }
}

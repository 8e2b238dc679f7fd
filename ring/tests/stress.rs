//! Stress tests with exact accounting (ARCHITECTURE.md §7): one producer, four consumers, a
//! 64-slot ring in a real memfd, ten million events (one million in debug builds; set
//! `KEVENT_STRESS_EVENTS` to change it). Every sequence number must be delivered exactly
//! once (a shared bitmap catches duplicates and gaps), every entry must arrive intact,
//! and at the end `kidx == cidx == uidx == N` with `lost == 0`.
//!
//! The consumers run first as threads of this process, then as two forked child
//! processes that attach to the memfd they inherited. Every loop is bounded by a
//! no-progress watchdog, so a lost event fails the test instead of hanging it.

#![cfg(not(loom))]

mod util;

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use kevent_ring::{
    monotonic_now, ConsumerId, Deadline, Liveness, Producer, PushError, Ring, WaitOutcome, WaitSpec,
};
use util::{is_intact, stress_event, stress_events, DeliveryMap, SharedWords, Watchdog};

const CAPACITY: u32 = 64;
const CONSUMERS: usize = 4;
/// Entries per claim (and so per `complete_range`).
const BATCH: u64 = 16;
/// The producer publishes (`flush`) every this many pushes, and whenever the ring is full.
const FLUSH_EVERY: u64 = 16;

/// The fork test must not fork while another test's threads run (a child would inherit
/// whatever locks they hold), so the tests of this file run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Publishes `stress_event(0..n)` in order, waiting (spin, then yield) for room when the
/// ring is full. Returns how many times it found the ring full.
fn produce(ring: &Arc<Ring>, n: u64) -> u64 {
    let mut producer = Producer::new(ring.clone()).expect("a fresh ring is sound");
    let mut dog = Watchdog::new("producer waiting for room");
    let mut fulls = 0;
    let mut seq = 0;
    while seq < n {
        match producer.push(&stress_event(seq), false) {
            Ok(pos) => {
                assert_eq!(pos, seq, "the producer position is the sequence number");
                seq += 1;
                if seq % FLUSH_EVERY == 0 {
                    producer.flush();
                }
            }
            Err(PushError::Full) => {
                fulls += 1;
                producer.flush();
                let mut spins = 0u32;
                while producer.room().expect("uidx stays valid") == 0 {
                    spins = spins.wrapping_add(1);
                    if spins < 64 {
                        std::hint::spin_loop();
                    } else {
                        thread::yield_now();
                    }
                    if spins & 0xff == 0 {
                        dog.check(ring.uidx(), || format!("{ring:?}"));
                    }
                }
            }
            Err(PushError::Broken(b)) => panic!("ring marked broken: {b}"),
        }
    }
    producer.flush();
    fulls
}

/// One consumer: wait (short spin, then futex), claim a batch, take each entry, mark it
/// in `delivered`, complete the batch; until the producer closes the ring. Returns how
/// many entries it took.
fn consume(ring: &Ring, me: ConsumerId, delivered: &DeliveryMap) -> u64 {
    let mut dog = Watchdog::new("consumer");
    let mut taken = 0;
    loop {
        let spec = WaitSpec {
            spin: Duration::from_micros(5),
            deadline: Some(Deadline::Monotonic(monotonic_now() + 100_000_000)),
            ..WaitSpec::default()
        };
        match ring.wait(&spec).expect("futex wait") {
            WaitOutcome::Ready => {
                let claim = ring.claim(me, BATCH);
                let mut owned = 0;
                for pos in claim.start..claim.end {
                    let ev = ring
                        .take(me, pos)
                        .expect("no reaper: every claimed slot is ours");
                    assert!(is_intact(&ev), "entry at {pos} is torn: {ev:?}");
                    assert_eq!(ev.id, pos, "entry at position {pos} has id {}", ev.id);
                    assert!(delivered.mark(ev.id), "sequence {} delivered twice", ev.id);
                    owned += 1;
                }
                assert_eq!(owned, claim.owned);
                assert_eq!(ring.complete_range(me, claim.start..claim.end), owned);
                taken += owned;
            }
            WaitOutcome::Closed => return taken,
            WaitOutcome::Broken => panic!("ring marked broken: {:?}", ring.broken()),
            WaitOutcome::TimedOut
            | WaitOutcome::Interrupted
            | WaitOutcome::Woken
            | WaitOutcome::Stale => {}
        }
        dog.check(ring.cidx(), || format!("{ring:?}"));
    }
}

/// The end-of-run accounting every stress test shares.
fn assert_exact_accounting(ring: &Ring, n: u64, delivered: &DeliveryMap, taken: u64) {
    assert_eq!(
        delivered.first_missing(),
        None,
        "an event was never delivered"
    );
    assert_eq!(delivered.delivered(), n);
    assert_eq!(taken, n, "produced == delivered");
    let stats = &ring.header().stats;
    assert_eq!(stats.posted.load(Ordering::Relaxed), n);
    assert_eq!(stats.lost.load(Ordering::Relaxed), 0);
    assert_eq!(
        (ring.kidx(), ring.cidx(), ring.uidx()),
        (n, n, n),
        "kidx, cidx, uidx"
    );
    let completed: u64 = ring
        .header()
        .consumers
        .iter()
        .map(|rec| rec.completed.load(Ordering::Relaxed))
        .sum();
    assert_eq!(
        completed, n,
        "the consumer records account for every commit"
    );
    assert_eq!(ring.broken(), None);
}

fn report(what: &str, n: u64, elapsed: Duration, fulls: u64) {
    eprintln!(
        "{what}: {n} events in {elapsed:.2?} ({:.1} M events/s), ring full {fulls} times",
        n as f64 / elapsed.as_secs_f64() / 1e6
    );
}

#[test]
fn every_event_is_delivered_exactly_once_to_four_consumer_threads() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let n = stress_events();
    let ring = Arc::new(Ring::create("kevent-stress-threads", CAPACITY).expect("memfd ring"));
    let delivered = Arc::new(DeliveryMap::new(n));
    let start = Instant::now();
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|_| {
            let ring = ring.clone();
            let delivered = delivered.clone();
            thread::spawn(move || {
                let live = Liveness::register(&ring).expect("a consumer record");
                consume(&ring, live.id(), &delivered)
            })
        })
        .collect();
    let fulls = produce(&ring, n);
    ring.close();
    let taken: u64 = consumers
        .into_iter()
        .map(|c| c.join().expect("consumer thread panicked"))
        .sum();
    report("threads", n, start.elapsed(), fulls);
    assert_exact_accounting(&ring, n, &delivered, taken);
}

/// Forked consumer processes; killed and reaped on drop if the parent fails first.
struct Children(Vec<libc::pid_t>);

impl Children {
    /// Waits for every child; returns each one's wait status.
    fn wait_all(mut self) -> Vec<(libc::pid_t, libc::c_int)> {
        std::mem::take(&mut self.0)
            .into_iter()
            .map(|pid| {
                let mut status = 0;
                loop {
                    // SAFETY: `pid` is our own child, not yet reaped; `status` is a valid
                    // out-pointer for the duration of the call.
                    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
                    if r == pid {
                        break;
                    }
                    let e = std::io::Error::last_os_error();
                    assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "waitpid: {e}");
                }
                (pid, status)
            })
            .collect()
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: `pid` is our own unreaped child: killing and reaping it touches no
            // memory of ours.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// The body of a forked consumer process: attach through the inherited memfd, register
/// with a liveness lock, consume, and leave the count in `taken`. Never returns.
fn child_main(parent_ring: &Ring, delivered: &DeliveryMap, taken: &AtomicU64) -> ! {
    // The test harness captures this thread's output into memory we are about to lose:
    // report failures on the real stderr instead.
    std::panic::set_hook(Box::new(|info| {
        let _ = writeln!(
            std::io::stderr(),
            "stress consumer process {}: {info}",
            std::process::id()
        );
    }));
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let fd = parent_ring.memfd().expect("a memfd ring");
        let ring = Ring::attach(fd).expect("attach to the inherited memfd");
        let live = Liveness::register(&ring).expect("a consumer record");
        let n = consume(&ring, live.id(), delivered);
        taken.store(n, Ordering::Relaxed);
    }));
    let code = if run.is_ok() { 0 } else { 101 };
    // SAFETY: `_exit` ends the forked child at once, without running the test harness's
    // code or atexit handlers that belong to the parent.
    unsafe { libc::_exit(code) }
}

#[test]
fn every_event_is_delivered_exactly_once_to_consumers_in_two_forked_processes() {
    const PROCESSES: usize = 2;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let n = stress_events();
    let ring = Arc::new(Ring::create("kevent-stress-procs", CAPACITY).expect("memfd ring"));
    let delivered = DeliveryMap::new(n);
    let taken = SharedWords::new(PROCESSES);
    let start = Instant::now();
    let mut children = Children(Vec::new());
    for i in 0..PROCESSES {
        // SAFETY: the child runs only `child_main`, which ends in `_exit`; no other
        // thread of this test is running (SERIAL), so no lock the child needs is held.
        match unsafe { libc::fork() } {
            -1 => panic!("fork: {}", std::io::Error::last_os_error()),
            0 => child_main(&ring, &delivered, &taken.words()[i]),
            pid => children.0.push(pid),
        }
    }
    let fulls = produce(&ring, n);
    ring.close();
    for (pid, status) in children.wait_all() {
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "consumer process {pid} failed (wait status {status:#x}); see its stderr"
        );
    }
    report("processes", n, start.elapsed(), fulls);
    let total = taken
        .words()
        .iter()
        .map(|w| w.load(Ordering::Relaxed))
        .sum();
    assert_exact_accounting(&ring, n, &delivered, total);
    let active = ring.consumers().filter(|(_, state, pid)| {
        *state == kevent_ring::RecordState::Active && *pid != std::process::id()
    });
    assert_eq!(active.count(), PROCESSES, "each child registered once");
}

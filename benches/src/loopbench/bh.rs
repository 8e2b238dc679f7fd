//! Bottom halves scheduled from another thread: schedule → run latency of a sleeping
//! loop, and back-to-back round trips per second.
//!
//! The driver (the harness thread) stamps `CLOCK_MONOTONIC`, schedules, and spins until
//! the callback — which records `now − stamp` — has run; for the latency samples it first
//! sleeps [`PAUSE`] so that the loop is asleep when the work arrives (the case a wake-up
//! protocol exists for), for the round trips it schedules again at once. Every rival runs
//! the same callback through its own hand-off:
//!
//! | rival | loop thread | hand-off |
//! |---|---|---|
//! | `kevent::Loop` | `Loop::poll(true)` | `Bh::schedule` (a syscall only if the loop sleeps: a user kevent made ready) |
//! | eventfd + epoll (QEMU) | [`EpollLoop::poll`] | flag + `aio_notify` (an eventfd write only if `notify_me`) |
//! | tokio | a current-thread runtime in `block_on` | `Handle::spawn` of a task |

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kevent::Loop;

use super::qemu::EpollLoop;
use super::samples::now_ns;

/// How long the driver sleeps before each latency sample (the loop goes to sleep).
pub const PAUSE: Duration = Duration::from_micros(200);
/// The driver gives up on a callback after this long (the run fails).
const PATIENCE: Duration = Duration::from_secs(5);

/// The three hand-offs compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rival {
    /// `kevent::Loop` bottom halves.
    Kevent,
    /// An eventfd + epoll loop with QEMU's notify_me handshake.
    EpollEventfd,
    /// `tokio::runtime::Handle::spawn` onto a current-thread runtime.
    Tokio,
}

impl Rival {
    /// Every rival, in rotation order.
    pub const ALL: [Rival; 3] = [Rival::Kevent, Rival::EpollEventfd, Rival::Tokio];

    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Rival::Kevent => "kevent::Loop bottom half",
            Rival::EpollEventfd => "eventfd+epoll loop (QEMU)",
            Rival::Tokio => "tokio Handle::spawn (current-thread)",
        }
    }
}

/// What the callback writes and the driver reads.
struct Probe {
    stamp: AtomicU64,
    done: AtomicU64,
    last_ns: AtomicU64,
}

impl Probe {
    fn run(&self) {
        let lat = now_ns().saturating_sub(self.stamp.load(Ordering::Acquire));
        self.last_ns.store(lat, Ordering::Relaxed);
        self.done.fetch_add(1, Ordering::Release);
    }
}

/// A loop thread of one rival, and how to schedule the callback into it.
struct Target {
    schedule: Box<dyn Fn()>,
    stop: Box<dyn FnOnce()>,
    thread: JoinHandle<()>,
}

fn start(rival: Rival, probe: Arc<Probe>) -> std::io::Result<Target> {
    let stopping = Arc::new(AtomicBool::new(false));
    Ok(match rival {
        Rival::Kevent => {
            let lp = Arc::new(Loop::new().map_err(std::io::Error::from)?);
            let bh = lp.bh(move |_, _| probe.run());
            let (l, s) = (lp.clone(), stopping.clone());
            let thread = std::thread::spawn(move || {
                while !s.load(Ordering::Acquire) {
                    l.poll(true);
                }
            });
            Target {
                schedule: Box::new(move || bh.schedule()),
                stop: Box::new(move || {
                    stopping.store(true, Ordering::Release);
                    lp.notify();
                }),
                thread,
            }
        }
        Rival::EpollEventfd => {
            let lp = Arc::new(EpollLoop::new()?);
            let (l, s) = (lp.clone(), stopping.clone());
            let thread = std::thread::spawn(move || {
                let mut events = Vec::with_capacity(64);
                while !s.load(Ordering::Acquire) {
                    if l.poll(true, None, &mut events, |_| {}).expect("epoll loop") {
                        probe.run();
                    }
                }
            });
            let l = lp.clone();
            Target {
                schedule: Box::new(move || l.schedule_bh()),
                stop: Box::new(move || {
                    stopping.store(true, Ordering::Release);
                    lp.notify();
                }),
                thread,
            }
        }
        Rival::Tokio => {
            let rt = tokio::runtime::Builder::new_current_thread().build()?;
            let handle = rt.handle().clone();
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let thread = std::thread::spawn(move || {
                rt.block_on(async {
                    let _ = rx.await;
                });
            });
            Target {
                schedule: Box::new(move || {
                    let p = probe.clone();
                    handle.spawn(async move { p.run() });
                }),
                stop: Box::new(move || {
                    let _ = tx.send(());
                }),
                thread,
            }
        }
    })
}

/// Schedules once and spins until the callback ran (it is the `want`-th run).
fn round_trip(t: &Target, probe: &Probe, want: u64) -> Result<(), String> {
    probe.stamp.store(now_ns(), Ordering::Release);
    (t.schedule)();
    let give_up = Instant::now() + PATIENCE;
    while probe.done.load(Ordering::Acquire) < want {
        if Instant::now() > give_up {
            return Err(format!("callback {want} did not run within {PATIENCE:?}"));
        }
        std::hint::spin_loop();
    }
    Ok(())
}

/// What one run of one rival measured.
#[derive(Debug, Clone, Default)]
pub struct BhRun {
    /// Schedule → run latencies of a sleeping loop, ns.
    pub latencies: Vec<u64>,
    /// The loop thread's CPU time per latency sample, ns (a loop that spins instead of
    /// sleeping shows here).
    pub cpu_per_sample_ns: f64,
    /// Back-to-back round trips per second.
    pub round_trips_per_s: f64,
    /// The loop thread's CPU time per back-to-back round trip, ns.
    pub cpu_per_round_trip_ns: f64,
}

/// CPU time consumed so far by the thread behind `t`, ns.
fn thread_cpu_ns(t: &JoinHandle<()>) -> Result<u64, String> {
    use std::os::unix::thread::JoinHandleExt;
    let mut clock: libc::clockid_t = 0;
    // SAFETY: the thread is alive until joined (we hold its JoinHandle and join only
    // after the last call), and `clock` is a valid out-pointer.
    let r = unsafe { libc::pthread_getcpuclockid(t.as_pthread_t(), &mut clock) };
    if r != 0 {
        return Err(format!(
            "pthread_getcpuclockid: {}",
            std::io::Error::from_raw_os_error(r)
        ));
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out-pointer.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return Err(format!(
            "clock_gettime: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// `samples` latency samples after a pause each, then back-to-back round trips for
/// `seconds`.
pub fn run(rival: Rival, samples: usize, seconds: f64) -> Result<BhRun, String> {
    let probe = Arc::new(Probe {
        stamp: AtomicU64::new(0),
        done: AtomicU64::new(0),
        last_ns: AtomicU64::new(0),
    });
    let target = start(rival, probe.clone()).map_err(|e| format!("{}: {e}", rival.name()))?;
    let mut out = BhRun::default();
    let result = (|| {
        let mut n = 0;
        let cpu0 = thread_cpu_ns(&target.thread)?;
        for _ in 0..samples {
            std::thread::sleep(PAUSE);
            n += 1;
            round_trip(&target, &probe, n)?;
            out.latencies.push(probe.last_ns.load(Ordering::Relaxed));
        }
        let cpu1 = thread_cpu_ns(&target.thread)?;
        out.cpu_per_sample_ns = cpu1.saturating_sub(cpu0) as f64 / samples.max(1) as f64;
        let start = Instant::now();
        let window = Duration::from_secs_f64(seconds);
        let first = n;
        while start.elapsed() < window {
            n += 1;
            round_trip(&target, &probe, n)?;
        }
        out.round_trips_per_s = (n - first) as f64 / start.elapsed().as_secs_f64();
        out.cpu_per_round_trip_ns =
            thread_cpu_ns(&target.thread)?.saturating_sub(cpu1) as f64 / (n - first) as f64;
        Ok(())
    })();
    (target.stop)();
    let _ = target.thread.join();
    result.map(|()| out)
}

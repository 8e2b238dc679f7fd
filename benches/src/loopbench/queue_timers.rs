//! Timer kevents against timerfds in an epoll set (issue 20, item 5): one thread adds
//! `count` one-shot timers back to back, each due `delay` after it is added, while another
//! thread waits for them. Lateness = when the waiting thread had the timer's event − its
//! deadline (never negative: an early timer is an error).
//!
//! | rival | the adding thread | the waiting thread |
//! |---|---|---|
//! | kevent | `Queue::add(Source::timer_at(deadline))` | `Queue::wait` (it blocks on the sources as the poller) |
//! | epoll + timerfd | `timerfd_create`, `timerfd_settime` (absolute), `epoll_ctl(ADD)` | `epoll_wait`, `read` of the timerfd |
//!
//! Both waiting threads run with a 1 ns timer slack (`PR_SET_TIMERSLACK`); a timerfd's
//! expiry has none either way. The adding thread starts once the waiting thread runs
//! (a channel says so): a thread just spawned may not be scheduled for a millisecond on
//! a busy 2-vCPU machine, and every timer due meanwhile would be late by the start-up
//! of a thread, not by the path under test.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kevent::{Queue, Source, Token};
use rustix::event::epoll;
use rustix::time::{
    timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags,
    Timespec,
};

use super::samples::now_ns;
use super::timers::precise_timers;

/// The rivals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rival {
    /// Timer kevents on a queue.
    Kevent,
    /// Timerfds in an epoll set.
    EpollTimerfd,
}

impl Rival {
    /// Every rival, in rotation order.
    pub const ALL: [Rival; 2] = [Rival::Kevent, Rival::EpollTimerfd];

    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Rival::Kevent => "kevent timer kevents",
            Rival::EpollTimerfd => "epoll + timerfds",
        }
    }
}

/// The deadlines (after ADD) the experiment is run with.
pub const DELAYS: [Duration; 2] = [Duration::from_millis(1), Duration::from_millis(50)];

/// How long a run may take before it is a failure (a lost timer).
const PATIENCE: Duration = Duration::from_secs(10);

/// Lateness of `count` timers added back to back, each due `delay` after its ADD, ns.
/// Each run is preceded by a discarded one of a tenth the timers (the first run in a
/// process pays for page faults and thread start-up). Each run adds from a thread of its
/// own: the scheduler's view of the adding thread decides how soon a waiter woken on its
/// CPU runs, and the bench's main thread arrives with whatever the experiments before
/// made of it (after the bottom-half experiment's seconds of spinning, the timerfds'
/// +1 ms p50 was a tenth of what it was without).
pub fn run(rival: Rival, count: usize, delay: Duration) -> Result<Vec<u64>, String> {
    let once = move |n: usize| {
        std::thread::spawn(move || match rival {
            Rival::Kevent => run_kevent(n, delay),
            Rival::EpollTimerfd => run_epoll(n, delay),
        })
        .join()
        .map_err(|_| "the adding thread panicked".to_string())?
    };
    once((count / 10).max(1))?;
    once(count)
}

/// Lateness of the timer due at `deadline`, seen at `now`.
fn lateness(now: u64, deadline: u64) -> Result<u64, String> {
    now.checked_sub(deadline)
        .ok_or_else(|| format!("a timer fired {} ns early", deadline - now))
}

fn run_kevent(count: usize, delay: Duration) -> Result<Vec<u64>, String> {
    let queue = Arc::new(
        Queue::builder()
            .capacity(count.next_power_of_two().max(64))
            .build()
            .map_err(|e| e.to_string())?,
    );
    let deadlines = Arc::new(Mutex::new(vec![0u64; count]));
    let (q, d) = (queue.clone(), deadlines.clone());
    let (running, started) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || -> Result<Vec<u64>, String> {
        precise_timers()?;
        let _ = running.send(());
        let mut out = Vec::with_capacity(count);
        let end = Instant::now() + PATIENCE;
        while out.len() < count {
            if Instant::now() >= end {
                return Err(format!("kevent: {} of {count} timers fired", out.len()));
            }
            let batch = q
                .wait(64, Some(Duration::from_millis(100)))
                .map_err(|e| e.to_string())?;
            let now = now_ns();
            let deadlines = d.lock().expect("deadlines");
            for ev in &batch {
                out.push(lateness(now, deadlines[ev.token().0 as usize])?);
            }
        }
        Ok(out)
    });
    // (A waiter that failed before it ran has dropped the sender: its error comes below.)
    let _ = started.recv();
    for i in 0..count {
        let at = Instant::now() + delay;
        // `timer_at` converts to CLOCK_MONOTONIC nanoseconds, as `now_ns` reads it.
        let source = Source::timer_at(at);
        let deadline = source_deadline(&source);
        deadlines.lock().expect("deadlines")[i] = deadline;
        queue
            .add(&source, Token(i as u64), kevent::Trigger::Level)
            .map_err(|e| e.to_string())?;
    }
    waiter
        .join()
        .map_err(|_| "the waiter panicked".to_string())?
}

/// The absolute deadline (CLOCK_MONOTONIC ns) of a `Source::timer_at`: its id.
fn source_deadline(source: &Source) -> u64 {
    source.id()
}

fn run_epoll(count: usize, delay: Duration) -> Result<Vec<u64>, String> {
    let ep = Arc::new(epoll::create(epoll::CreateFlags::CLOEXEC).map_err(|e| e.to_string())?);
    let deadlines = Arc::new(Mutex::new(vec![0u64; count]));
    let fds: Arc<Mutex<Vec<Option<OwnedFd>>>> =
        Arc::new(Mutex::new((0..count).map(|_| None).collect()));
    let stop = Arc::new(AtomicBool::new(false));
    let (e, d, f, s) = (ep.clone(), deadlines.clone(), fds.clone(), stop.clone());
    let (running, started) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || -> Result<Vec<u64>, String> {
        precise_timers()?;
        let _ = running.send(());
        let mut out = Vec::with_capacity(count);
        let mut events = Vec::with_capacity(64);
        let end = Instant::now() + PATIENCE;
        let timeout = Timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        while out.len() < count && !s.load(Ordering::Relaxed) {
            if Instant::now() >= end {
                return Err(format!("epoll: {} of {count} timers fired", out.len()));
            }
            events.clear();
            epoll::wait(
                e.as_fd(),
                rustix::buffer::spare_capacity(&mut events),
                Some(&timeout),
            )
            .map_err(|e| e.to_string())?;
            let now = now_ns();
            let deadlines = d.lock().expect("deadlines");
            let fds = f.lock().expect("fds");
            for ev in &events {
                let i = ev.data.u64() as usize;
                if let Some(fd) = &fds[i] {
                    let mut buf = [0u8; 8];
                    let _ = rustix::io::read(fd, &mut buf);
                }
                out.push(lateness(now, deadlines[i])?);
            }
        }
        Ok(out)
    });
    let _ = started.recv();
    for i in 0..count {
        let deadline = now_ns() + delay.as_nanos() as u64;
        let tfd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::CLOEXEC | TimerfdFlags::NONBLOCK,
        )
        .map_err(|e| e.to_string())?;
        let spec = Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: Timespec {
                tv_sec: (deadline / 1_000_000_000) as i64,
                tv_nsec: (deadline % 1_000_000_000) as i64,
            },
        };
        deadlines.lock().expect("deadlines")[i] = deadline;
        timerfd_settime(&tfd, TimerfdTimerFlags::ABSTIME, &spec).map_err(|e| e.to_string())?;
        // Listed before it can be reported, so that the waiter reads (disarms) it.
        let mut fds = fds.lock().expect("fds");
        let tfd = fds[i].insert(tfd);
        epoll::add(
            ep.as_fd(),
            tfd.as_fd(),
            epoll::EventData::new_u64(i as u64),
            epoll::EventFlags::IN,
        )
        .map_err(|e| e.to_string())?;
    }
    let r = waiter
        .join()
        .map_err(|_| "the waiter panicked".to_string())?;
    stop.store(true, Ordering::Relaxed);
    r
}

//! A bottom half scheduled into a sleeping loop, with the scheduling thread and the loop
//! thread on one CPU each (`pinned`) or wherever the scheduler puts them — to tell the
//! cost of the wake-up itself from what the loop does around its sleep:
//!
//! ```text
//! cargo run --release -p kevent-bench --example bh_handoff -- 5000 kevent
//! cargo run --release -p kevent-bench --example bh_handoff -- 5000 eventfd pinned
//! ```
//!
//! `kevent`: a `kevent::Loop` bottom half; `eventfd`: the QEMU-style eventfd + epoll loop
//! of `kevent loop-bench`. As there, the scheduling thread sleeps 200 µs before each
//! sample (the loop goes to sleep), stamps the clock, schedules, and spins until the
//! callback ran. Prints p50 and p99 in µs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kevent_bench::loopbench::qemu::EpollLoop;

/// Pins the calling thread to `cpu`.
fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes within it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` < CPU_SETSIZE (this runs on small machines; checked by the caller).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: a valid set of the size given, for this thread (pid 0).
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    assert_eq!(
        r,
        0,
        "sched_setaffinity: {}",
        std::io::Error::last_os_error()
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let samples: u64 = args.next().map_or(5000, |s| s.parse().expect("a count"));
    let rival = args.next().unwrap_or_else(|| "kevent".into());
    let pinned = args.next().as_deref() == Some("pinned");
    if pinned {
        assert!(
            std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2,
            "pinned needs two CPUs"
        );
        pin(0);
    }
    let ran = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let schedule: Box<dyn Fn()>;
    let wake: Box<dyn Fn()>;
    let thread = match rival.as_str() {
        "kevent" => {
            let lp = Arc::new(kevent::Loop::new().expect("a loop"));
            let r = ran.clone();
            let bh = lp.bh(move |_, _| {
                r.fetch_add(1, Ordering::Release);
            });
            let (l, s) = (lp.clone(), stop.clone());
            let t = std::thread::spawn(move || {
                if pinned {
                    pin(1);
                }
                while !s.load(Ordering::Acquire) {
                    l.poll(true);
                }
            });
            schedule = Box::new(move || bh.schedule());
            wake = Box::new(move || lp.notify());
            t
        }
        "eventfd" => {
            let lp = Arc::new(EpollLoop::new().expect("an epoll loop"));
            let (l, s, r) = (lp.clone(), stop.clone(), ran.clone());
            let t = std::thread::spawn(move || {
                if pinned {
                    pin(1);
                }
                let mut events = Vec::with_capacity(64);
                while !s.load(Ordering::Acquire) {
                    if l.poll(true, None, &mut events, |_| {}).expect("epoll loop") {
                        r.fetch_add(1, Ordering::Release);
                    }
                }
            });
            let l = lp.clone();
            schedule = Box::new(move || l.schedule_bh());
            wake = Box::new(move || lp.notify());
            t
        }
        other => panic!("rival {other:?}: kevent or eventfd"),
    };
    let mut lat = Vec::with_capacity(samples as usize);
    for i in 0..samples {
        std::thread::sleep(Duration::from_micros(200));
        let t0 = Instant::now();
        schedule();
        while ran.load(Ordering::Acquire) <= i {
            std::hint::spin_loop();
        }
        lat.push(t0.elapsed().as_nanos() as u64);
    }
    stop.store(true, Ordering::Release);
    wake();
    thread.join().expect("the loop thread");
    lat.sort_unstable();
    let at = |q: usize| lat[(lat.len() * q / 100).min(lat.len() - 1)] as f64 / 1000.0;
    println!(
        "{rival}{}: p50 {:.1} µs, p99 {:.1} µs ({samples} samples)",
        if pinned { " pinned" } else { "" },
        at(50),
        at(99)
    );
}

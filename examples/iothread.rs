//! An IOThread: one thread runs a `kevent::Loop` that serves a socket (an echo server on
//! a `UnixStream` pair) and a periodic timer, while another thread schedules bottom
//! halves into it — a persistent one, scheduled far more often than it can run (the
//! schedules coalesce), and one-shots carrying numbers to add up.
//!
//! The main thread is the client: it sends lines and reads their echoes. When it is done
//! it stops the timer, removes the handler and stops the thread, then prints what
//! happened, including how often a waker had to wake the sleeping loop (the only system
//! call a bottom half costs).
//!
//! Run with `cargo run --example iothread`.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use kevent::{Clock, FdHandler, IoThread, Loop};

const LINES: usize = 20;
const SCHEDULES: u64 = 500;

/// Which thread ran each kind of callback (the first time).
type Seen = Arc<Mutex<Vec<String>>>;

fn note(seen: &Seen, what: &str) {
    let thread = std::thread::current();
    let entry = format!(
        "{what} ran on {}",
        thread.name().unwrap_or("an unnamed thread")
    );
    let mut seen = seen.lock().unwrap();
    if !seen.iter().any(|s| s.starts_with(what)) {
        seen.push(entry);
    }
}

/// The echo handler: reads what there is, writes it back.
fn echo(server: Arc<UnixStream>, echoed: Arc<AtomicU64>, seen: Seen) -> impl Fn(&Loop) {
    move |_lp| {
        note(&seen, "the socket handler");
        let mut buf = [0u8; 4096];
        loop {
            let n = match (&*server).read(&mut buf) {
                Ok(0) => return, // the client went away
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => panic!("echo read: {e}"),
            };
            let mut out = &buf[..n];
            while !out.is_empty() {
                match (&*server).write(out) {
                    Ok(w) => out = &out[w..],
                    Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
                    Err(e) => panic!("echo write: {e}"),
                }
            }
            echoed.fetch_add(n as u64, Relaxed);
        }
    }
}

fn main() -> std::io::Result<()> {
    let started = Instant::now();
    let io = IoThread::spawn("iothread0")?;
    let lp = io.get().clone();
    let seen: Seen = Arc::default();

    // The socket: the server end is the iothread's, non-blocking; the client is ours.
    let (server, mut client) = UnixStream::pair()?;
    server.set_nonblocking(true)?;
    client.set_read_timeout(Some(Duration::from_secs(5)))?;
    let server = Arc::new(server);
    let echoed = Arc::new(AtomicU64::new(0));
    lp.set_fd_handler(
        &*server,
        FdHandler::new().read(echo(server.clone(), echoed.clone(), seen.clone())),
    )?;

    // A periodic timer: every 2 ms, re-armed from its own callback.
    let ticks = Arc::new(AtomicU64::new(0));
    let (t, s) = (ticks.clone(), seen.clone());
    let tick = lp.timer(Clock::Monotonic, move |_lp, timer| {
        note(&s, "the timer");
        t.fetch_add(1, Relaxed);
        timer.arm_after(Duration::from_millis(2));
    });
    tick.arm_after(Duration::from_millis(2));

    // Another thread schedules bottom halves into the iothread.
    let bh_runs = Arc::new(AtomicU64::new(0));
    let (r, s) = (bh_runs.clone(), seen.clone());
    let bh = lp.bh(move |_lp, _bh| {
        note(&s, "the bottom half");
        r.fetch_add(1, Relaxed);
    });
    let sum = Arc::new(AtomicU64::new(0));
    let scheduler = {
        let (lp, bh, sum) = (lp.clone(), bh.clone(), sum.clone());
        std::thread::Builder::new()
            .name("scheduler".into())
            .spawn(move || {
                for i in 1..=SCHEDULES {
                    bh.schedule(); // runs once per iteration, however often scheduled
                    let sum = sum.clone();
                    lp.schedule_oneshot(move |_lp| {
                        sum.fetch_add(i, Relaxed);
                    });
                    if i % 50 == 0 {
                        std::thread::sleep(Duration::from_millis(1)); // let it sleep
                    }
                }
            })?
    };

    // Meanwhile, the client.
    let mut round_trip = Duration::ZERO;
    for i in 0..LINES {
        let line = format!("line {i:02} through the iothread\n");
        let sent = Instant::now();
        client.write_all(line.as_bytes())?;
        let mut back = vec![0u8; line.len()];
        client.read_exact(&mut back)?;
        round_trip += sent.elapsed();
        assert_eq!(back, line.as_bytes());
        if i == 0 {
            print!("echoed: {}", String::from_utf8_lossy(&back));
        }
    }
    scheduler.join().expect("the scheduler thread");

    // One-shots run in the order they were scheduled: when this one runs, all ran.
    let (tx, rx) = mpsc::channel();
    lp.schedule_oneshot(move |_lp| tx.send(()).expect("main waits"));
    rx.recv_timeout(Duration::from_secs(5))
        .map_err(|_| std::io::Error::other("the iothread did not run the last one-shot"))?;

    tick.delete();
    bh.delete();
    lp.remove_fd_handler(&*server)?;
    let stats = lp.stats();
    drop(lp);
    io.stop()?;

    println!(
        "{LINES} lines echoed ({} bytes), mean round trip {:?}",
        echoed.load(Relaxed),
        round_trip / LINES as u32
    );
    println!(
        "timer: {} ticks of 2 ms in {:?}",
        ticks.load(Relaxed),
        started.elapsed()
    );
    println!(
        "bottom half: scheduled {SCHEDULES} times, ran {} times; one-shots added up to {} \
         (expected {})",
        bh_runs.load(Relaxed),
        sum.load(Relaxed),
        SCHEDULES * (SCHEDULES + 1) / 2
    );
    for line in seen.lock().unwrap().iter() {
        println!("{line}");
    }
    println!(
        "loop: {} polls, {} sleeps, {} wake-ups sent, {} socket callbacks, {} bottom halves \
         run",
        stats.polls, stats.sleeps, stats.wakeups, stats.fd_callbacks, stats.bh_runs
    );
    assert_eq!(sum.load(Relaxed), SCHEDULES * (SCHEDULES + 1) / 2);
    Ok(())
}

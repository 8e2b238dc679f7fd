//! `kevent-worker`: a helper program for the multi-process tests of `kevent-syscalls`
//! (`tests/connected.rs` and `tests/liveness.rs`, found there with `env!("CARGO_BIN_EXE_kevent-worker")`).
//!
//! It is a separate program, not a `fork`ed copy of the test: it shares nothing with the
//! queue's owner but what comes through the queue's socket.
//!
//! `kevent-worker connect PATH`: attaches to the queue served at `PATH`
//! (`Instance::connect`), creates a socketpair and adds one end to the queue (the fd travels
//! with `SCM_RIGHTS`), prints `added ino=N` (the socket's inode), waits for a `go` line on
//! stdin, writes `hello` into the other end, waits for the event, reads the bytes,
//! commits, removes the kevent and prints `ok user=U bytes=B`. Any failure: a message on
//! stderr and exit status 1. Every wait is bounded.
//!
//! `kevent-worker hold PATH N`: attaches, forks a helper process that does nothing but
//! sleep (without exec, so it shares the worker's open files — its liveness lock
//! included), claims `N` entries without committing them, prints `held N helper=PID`,
//! and sleeps until it is killed.

use std::io::{BufRead, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use kevent_syscalls::*;

/// The cookie of the kevent the worker adds.
const COOKIE: u64 = 0xC0FFEE;

fn fail(msg: String) -> std::io::Error {
    std::io::Error::other(msg)
}

fn connect(path: &str) -> std::io::Result<()> {
    let q = Instance::connect(std::path::Path::new(path))?;
    let (a, b) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC | rustix::net::SocketFlags::NONBLOCK,
        None,
    )?;
    let mut ev = [Ukevent {
        id: a.as_raw_fd() as u64,
        type_: KEVENT_SOCKET,
        event: KEVENT_SOCKET_RECV,
        user: COOKIE,
        ..Default::default()
    }];
    let reported = q.ctl(KEVENT_CTL_ADD, &mut ev)?;
    if reported != 0 {
        return Err(fail(format!(
            "ADD reported {reported} entries: {:?}",
            ev[0]
        )));
    }
    let ino = rustix::fs::fstat(&a)?.st_ino;
    let mut out = std::io::stdout().lock();
    writeln!(out, "added ino={ino}")?;
    out.flush()?;
    let mut go = String::new();
    std::io::stdin().lock().read_line(&mut go)?;
    if go.trim() != "go" {
        return Err(fail(format!("expected `go`, got {go:?}")));
    }

    rustix::io::write(&b, b"hello")?;
    let end = Instant::now() + Duration::from_secs(5);
    let claim = loop {
        let c = q.wait(1, q.ring().uidx(), Some(100_000_000), 0)?;
        if c.owned > 0 {
            break c;
        }
        if Instant::now() >= end {
            return Err(fail("no event within 5 s".into()));
        }
    };
    let got = q
        .entry(claim.start)
        .ok_or_else(|| fail("claimed entry unreadable".into()))?;
    if got.id != a.as_raw_fd() as u64 || got.event & KEVENT_SOCKET_RECV == 0 {
        return Err(fail(format!("unexpected entry {got:?}")));
    }
    let mut buf = [0u8; 64];
    let n = rustix::io::read(&a, &mut buf)?;
    // Commit after reading: the level-triggered re-check then finds the socket empty.
    q.commit_range(claim.start..claim.end);
    let failed = q.ctl(KEVENT_CTL_REMOVE, &mut ev)?;
    if failed != 0 {
        return Err(fail(format!("REMOVE failed: {:?}", ev[0])));
    }
    writeln!(out, "ok user={} bytes={n}", got.user)?;
    out.flush()?;
    Ok(())
}

fn hold(path: &str, n: &str) -> std::io::Result<()> {
    let n: u64 = n.parse().map_err(|_| fail(format!("not a count: {n}")))?;
    let q = Instance::connect(std::path::Path::new(path))?;
    // SAFETY: this process is single-threaded here (no queue of its own runs threads: an
    // attached consumer has none), so the child may run arbitrary code.
    let helper = unsafe { libc::fork() };
    if helper < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if helper == 0 {
        std::thread::sleep(Duration::from_secs(30));
        std::process::exit(0);
    }
    let end = Instant::now() + Duration::from_secs(5);
    let mut held = 0;
    while held < n {
        let c = q.wait((n - held) as u32, q.ring().uidx(), Some(100_000_000), 0)?;
        held += c.owned;
        if Instant::now() >= end {
            return Err(fail(format!("held only {held} of {n} within 5 s")));
        }
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "held {held} helper={helper}")?;
    out.flush()?;
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1..) {
        Some([mode, path]) if mode == "connect" => connect(path),
        Some([mode, path, n]) if mode == "hold" => hold(path, n),
        _ => Err(fail(
            "usage: kevent-worker connect PATH | kevent-worker hold PATH N".into(),
        )),
    };
    if let Err(e) = result {
        eprintln!("kevent-worker: {e}");
        std::process::exit(1);
    }
}

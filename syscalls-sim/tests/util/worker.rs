//! The worker: a separate program for the multi-process tests (`tests/connected.rs`,
//! `tests/liveness.rs`). It is the test binary itself, executed anew ([`command`]) — not a
//! `fork`ed copy of the test: it shares nothing with the queue's owner but what comes
//! through the queue's socket. (It used to be a `[[bin]]` of the crate, which
//! `cargo install kevent-syscalls` would have installed.)
//!
//! A test file that uses it has an entry point, `#[test] fn kevent_worker_entry() {
//! util::worker::entry() }`: in a normal run it returns at once; in the executed copy
//! (`KEVENT_WORKER` set, only that test selected) it runs the worker and exits the
//! process with its status. The worker's lines go to stdout among the test harness's
//! own (`running 1 test`); [`protocol_line`] finds them.
//!
//! `connect PATH`: attaches to the queue served at `PATH` (`Instance::connect`), creates
//! a socketpair and adds one end to the queue (the fd travels with `SCM_RIGHTS`), prints
//! `added ino=N` (the socket's inode), waits for a `go` line on stdin, writes `hello`
//! into the other end, waits for the event, reads the bytes, commits, removes the kevent
//! and prints `ok user=U bytes=B`. Any failure: a message on stderr and exit status 1.
//! Every wait is bounded.
//!
//! `hold PATH N`: attaches, forks a helper process that does nothing but sleep (without
//! exec, so it shares the worker's open files — its liveness lock included), claims `N`
//! entries without committing them, prints `held N helper=PID`, and sleeps until it is
//! killed.

use std::io::{BufRead, Write};
use std::os::fd::AsRawFd;
use std::process::Command;
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
    // SAFETY: the child calls only async-signal-safe functions (`sleep`, `_exit`), so the
    // other threads of this process (the test harness's) cannot have left it a lock it
    // needs.
    let helper = unsafe { libc::fork() };
    if helper < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if helper == 0 {
        // SAFETY: async-signal-safe calls only (see above); `_exit` skips the parent's
        // atexit handlers and buffers.
        unsafe {
            libc::sleep(30);
            libc::_exit(0);
        }
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

/// The environment variable that holds the worker's arguments, one per line.
const ARGS: &str = "KEVENT_WORKER";
/// The name of the entry-point test each user of the worker defines.
const ENTRY: &str = "kevent_worker_entry";

/// The worker with `args` (`["connect", path]`, `["hold", path, n]`): this test binary
/// run anew with only its entry point selected.
pub fn command(args: &[&str]) -> Command {
    let me = std::env::current_exe().expect("the test binary's path");
    let mut cmd = Command::new(me);
    cmd.args([
        ENTRY,
        "--exact",
        "--nocapture",
        "--quiet",
        "--test-threads=1",
    ])
    .env(ARGS, args.join("\n"));
    cmd
}

/// The worker's next line starting with `prefix`, skipping the test harness's lines;
/// `None` if its output ends first.
pub fn protocol_line(lines: &mut impl Iterator<Item = String>, prefix: &str) -> Option<String> {
    lines.find(|line| line.starts_with(prefix))
}

/// The entry point: returns at once unless this process is a worker; then runs it and
/// exits with status 0 (done) or 1 (failed, with a message on stderr).
pub fn entry() {
    let Ok(args) = std::env::var(ARGS) else {
        return;
    };
    let args: Vec<&str> = args.split('\n').collect();
    let result = match args.as_slice() {
        ["connect", path] => connect(path),
        ["hold", path, n] => hold(path, n),
        _ => Err(fail(format!(
            "usage: {ARGS}=connect\\nPATH | hold\\nPATH\\nN, not {args:?}"
        ))),
    };
    if let Err(e) = result {
        eprintln!("kevent worker: {e}");
        std::process::exit(1);
    }
    std::process::exit(0);
}

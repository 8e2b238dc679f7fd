//! What the gate bears (ARCHITECTURE.md §5, "Trust boundaries"; issue #10, items 5 and
//! 6): an `accept` failing with `EMFILE` does not end it, a client of a gate that never
//! answers times out instead of hanging, a thousand idle connections cost no thread each
//! and the excess is refused at once, and an oversized request is answered `EMSGSIZE`
//! while the connection serves on.
//!
//! Children are forked from the test thread, end with `_exit`, and are killed by a guard
//! if a test fails. The tests of this file run one at a time (they fork and count
//! threads). Every wait is bounded, so a hang fails a test instead of hanging the run.

#![deny(clippy::undocumented_unsafe_blocks)]

mod util;

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kevent_syscalls::*;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::net::{self, RecvFlags, SendFlags};
use util::proc::{bounded, child_log, Children};
use util::{
    path_addr, pipe, raise_fd_limit, read_byte, readable_within, seqpacket, wait_until,
    write_bytes, TempDir,
};

/// Threads of this process named `name`.
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|e| e.ok())
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .count()
}

// --- accept errors, and clients that never hang ---------------------------------------

/// Item 5: an `accept` that fails with `EMFILE` does not end the gate: once the owner
/// has fds again, the waiting connection is served.
#[test]
fn the_gate_survives_accept_failing_with_emfile() {
    bounded(Duration::from_secs(60), || {
        let dir = TempDir::new("trust-emfile");
        let path = dir.0.join("gate.sock");
        let (ready_r, ready_w) = pipe();
        let (go_r, go_w) = pipe();
        let mut kids = Children::default();
        let owner = kids.fork(|| {
            let q = Instance::create(64, 0).expect("create");
            q.listen(&path).expect("listen");
            let mut fillers = Vec::new();
            loop {
                match rustix::io::fcntl_dupfd_cloexec(&ready_w, 0) {
                    Ok(fd) => fillers.push(fd),
                    Err(rustix::io::Errno::MFILE) => break,
                    Err(e) => {
                        child_log(&format!("dup: {e}"));
                        return 3;
                    }
                }
            }
            // The fd table is full: the gate's accept fails with EMFILE.
            let last = fillers.pop().expect("at least one filler");
            write_bytes(&last, b"R");
            if read_byte(go_r.as_fd(), Duration::from_secs(30)) != Some(b'G') {
                return 4;
            }
            drop(fillers);
            drop(last);
            // Serve until told to end.
            if read_byte(go_r.as_fd(), Duration::from_secs(30)) != Some(b'E') {
                return 5;
            }
            drop(q);
            0
        });
        drop(ready_w);
        assert_eq!(
            read_byte(ready_r.as_fd(), Duration::from_secs(20)),
            Some(b'R'),
            "the owner did not fill its fd table"
        );
        let (tx, rx) = mpsc::channel();
        let p = path.clone();
        std::thread::spawn(move || {
            let _ = tx.send(Instance::connect(&p).map(|q| q.consumer()));
        });
        // The connection waits in the backlog while accept fails.
        std::thread::sleep(Duration::from_millis(300));
        write_bytes(&go_w, b"G");
        let r = rx
            .recv_timeout(Duration::from_secs(4))
            .expect("Instance::connect is still waiting 4 s after the owner got its fds back");
        r.expect("Instance::connect after the gate's accept failed with EMFILE");
        Instance::connect(&path).expect("a later Instance::connect");
        write_bytes(&go_w, b"E");
        assert_eq!(kids.exit_code(owner, Duration::from_secs(10)), Some(0));
    });
}

/// Item 5: a gate that never answers (a queue made paused and not started) makes
/// `Instance::connect` fail with `TimedOut` after the client's timeout (5 s), not hang.
#[test]
fn connect_to_a_gate_that_never_answers_times_out() {
    bounded(Duration::from_secs(60), || {
        let dir = TempDir::new("trust-timeout");
        let path = dir.0.join("gate.sock");
        let q = Instance::create_paused(64, 0, DEFAULT_REAP_INTERVAL).expect("create_paused");
        q.listen(&path).expect("listen");
        let (tx, rx) = mpsc::channel();
        let p = path.clone();
        let t0 = Instant::now();
        std::thread::spawn(move || {
            let _ = tx.send(Instance::connect(&p).map(|q| q.consumer()));
        });
        let r = rx
            .recv_timeout(Duration::from_secs(15))
            .expect("Instance::connect to a gate nobody serves hangs");
        let took = t0.elapsed();
        let e = r.expect_err("nobody serves the gate");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(
            took >= Duration::from_secs(4) && took < Duration::from_secs(10),
            "took {took:?}"
        );
        // Once started, the same gate serves.
        q.start().expect("start");
        Instance::connect(&path).expect("connect after the start");
    });
}

// --- bounded threads, connections and requests ----------------------------------------

/// Item 6: 1,000 idle connections cost no thread each; beyond the bound, connections
/// are refused at once with a clear error; once they are gone, the gate serves again.
#[test]
fn a_thousand_idle_connections_cost_no_thread_each_and_the_excess_is_refused() {
    bounded(Duration::from_secs(120), || {
        raise_fd_limit(8192);
        let dir = TempDir::new("trust-many");
        let path = dir.0.join("gate.sock");
        let q = Instance::create(64, 0).expect("create");
        q.listen(&path).expect("listen");
        let before = threads_named("kevent-gate");
        let addr = path_addr(&path);
        let conns: Vec<OwnedFd> = (0..1000)
            .map(|_| {
                let s = seqpacket();
                net::connect(&s, &addr).expect("raw connect");
                s
            })
            .collect();
        // Let the gate accept them all.
        std::thread::sleep(Duration::from_millis(500));
        let during = threads_named("kevent-gate");
        assert!(
            during <= before.max(1),
            "{during} gate threads for 1,000 idle connections (before: {before})"
        );
        let t0 = Instant::now();
        let e = Instance::connect(&path).expect_err("a connection beyond the bound");
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
        assert!(e.to_string().contains("maximum"), "{e}");
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "refused only after {:?}",
            t0.elapsed()
        );
        // The ones beyond the bound were closed by the gate (EOF or the refusal).
        let closed = conns
            .iter()
            .filter(|c| {
                let mut pfd = [PollFd::new(*c, PollFlags::IN)];
                poll(&mut pfd, Some(&Timespec::default())).unwrap_or(0) == 1
            })
            .count();
        assert!(
            closed >= 500,
            "only {closed} of 1,000 connections were refused"
        );
        drop(conns);
        assert!(
            wait_until(Duration::from_secs(3), || Instance::connect(&path).is_ok()),
            "the gate does not serve again once the connections are gone"
        );
        q.ctl(KEVENT_CTL_READY, &mut [])
            .expect("the owner still works");
    });
}

/// Item 6: a request longer than a frame is answered `EMSGSIZE`, and the connection
/// goes on serving.
#[test]
fn an_oversized_request_is_answered_emsgsize_and_the_connection_serves_on() {
    bounded(Duration::from_secs(60), || {
        let dir = TempDir::new("trust-size");
        let path = dir.0.join("gate.sock");
        let q = Instance::create(64, 0).expect("create");
        q.listen(&path).expect("listen");
        let s = seqpacket();
        net::connect(&s, &path_addr(&path)).expect("connect");
        let status = |req: &[u8]| -> i64 {
            net::send(&s, req, SendFlags::NOSIGNAL).expect("send");
            assert!(
                readable_within(&s, Duration::from_secs(3)),
                "no reply within 3 s (the gate dropped the connection, or hangs)"
            );
            let mut buf = [0u8; 64];
            let n = net::recv(&s, &mut buf, RecvFlags::DONTWAIT)
                .expect("recv")
                .0;
            assert!(
                n >= 8,
                "a reply of {n} bytes: the gate closed the connection"
            );
            i64::from_le_bytes(buf[..8].try_into().unwrap())
        };
        // CTL READY of 400 entries: more than a frame holds.
        let mut big = vec![0u8; 16 + 400 * 40];
        big[0] = 2;
        big[4..8].copy_from_slice(&KEVENT_CTL_READY.to_le_bytes());
        big[8..12].copy_from_slice(&400u32.to_le_bytes());
        assert_eq!(status(&big), -i64::from(libc::EMSGSIZE));
        // CTL READY with no entries: served.
        let mut small = [0u8; 16];
        small[0] = 2;
        small[4..8].copy_from_slice(&KEVENT_CTL_READY.to_le_bytes());
        assert_eq!(status(&small), 0);
        drop(q);
    });
}

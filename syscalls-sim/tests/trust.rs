//! Trust boundaries of the queue's gate (ARCHITECTURE.md §5), issue #10: who a forked child
//! or a connecting process talks to, names another user could take first, what one
//! `accept` error, a stuck owner, or thousands of idle connections do to the gate, the
//! fds `KEVENT_INODE` travels with, and `fork` while other threads are inside `kevent_*`
//! calls.
//!
//! Other users are played by forked children that `setuid(65534)` (the tests run as
//! root). Children are forked from the test thread, end with `_exit`, are killed by a
//! guard if a test fails and by `PR_SET_PDEATHSIG` if the test process dies. The tests of
//! this file run one at a time (they fork, count threads and look for new socket names).
//! Every wait is bounded, so a hang fails a test instead of hanging the run.

#![deny(clippy::undocumented_unsafe_blocks)]

mod util;

use std::collections::HashSet;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use kevent_syscalls::*;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::net::{
    self, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendFlags,
    SocketAddrUnix, SocketFlags, SocketType,
};
use rustix::process::Pid;
use util::proc::{bounded, child_log, Children};
use util::{fd_ev, pipe, raise_fd_limit, user_ev, wait_until, TempDir, Q};

/// The uid of the other user (`nobody`).
const NOBODY: u32 = 65534;
/// The cookie of the kevents the victims add.
const COOKIE: u64 = 0x7275_7374;

// --- helpers ---------------------------------------------------------------------------

fn set_pdeathsig() {
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a property of this process.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
}

/// In a child: becomes user `uid` (group `uid`, no supplementary groups).
fn become_user(uid: u32) -> bool {
    // SAFETY: plain system calls on this (single-threaded, forked) process's credentials.
    let ok = unsafe {
        libc::setgroups(0, std::ptr::null()) == 0
            && libc::setgid(uid) == 0
            && libc::setuid(uid) == 0
    };
    set_pdeathsig(); // cleared by the change of credentials
    ok
}

/// Waits up to `timeout` for `fd` to be readable; then reads one byte.
fn read_byte(fd: BorrowedFd<'_>, timeout: Duration) -> Option<u8> {
    let ts = Timespec::try_from(timeout).expect("timeout");
    let mut pfd = [PollFd::new(&fd, PollFlags::IN)];
    match poll(&mut pfd, Some(&ts)) {
        Ok(1) => {}
        _ => return None,
    }
    let mut b = [0u8; 1];
    match rustix::io::read(fd, &mut b) {
        Ok(1) => Some(b[0]),
        _ => None,
    }
}

fn write_byte(fd: &OwnedFd, b: u8) {
    assert_eq!(rustix::io::write(fd, &[b]).expect("write"), 1);
}

fn seqpacket() -> OwnedFd {
    net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .expect("socket")
}

fn abstract_addr(name: &[u8]) -> SocketAddrUnix {
    SocketAddrUnix::new_abstract_name(name).expect("abstract name")
}

fn path_addr(path: &Path) -> SocketAddrUnix {
    SocketAddrUnix::new(path).expect("path address")
}

/// The inodes of this process's sockets.
fn my_socket_inodes() -> HashSet<u64> {
    let mut out = HashSet::new();
    for entry in std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd") {
        let Ok(entry) = entry else { continue };
        let Ok(link) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let link = link.to_string_lossy().into_owned();
        if let Some(ino) = link
            .strip_prefix("socket:[")
            .and_then(|s| s.strip_suffix(']'))
        {
            if let Ok(ino) = ino.parse() {
                out.insert(ino);
            }
        }
    }
    out
}

/// Listening abstract Unix sockets of the network namespace: (inode, name).
fn listening_abstract_names() -> Vec<(u64, Vec<u8>)> {
    let table = std::fs::read_to_string("/proc/net/unix").expect("/proc/net/unix");
    let mut out = Vec::new();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // Num RefCount Protocol Flags Type St Inode Path
        if f.len() < 8 || u32::from_str_radix(f[3], 16).unwrap_or(0) & 0x0001_0000 == 0 {
            continue;
        }
        if let (Ok(ino), Some(name)) = (f[6].parse::<u64>(), f[7].strip_prefix('@')) {
            out.push((ino, name.as_bytes().to_vec()));
        }
    }
    out
}

/// The abstract names this process listens on.
fn my_abstract_names() -> HashSet<Vec<u8>> {
    let mine = my_socket_inodes();
    listening_abstract_names()
        .into_iter()
        .filter(|(ino, _)| mine.contains(ino))
        .map(|(_, name)| name)
        .collect()
}

/// Whether anybody listens on the abstract name `name`.
fn anybody_listens_on(name: &[u8]) -> bool {
    listening_abstract_names().iter().any(|(_, n)| n == name)
}

/// Makes a queue with `make` and finds the abstract name its gate serves: the one name
/// this process listens on after and not before.
fn with_gate_name<T>(make: impl FnOnce() -> T) -> (T, Vec<u8>) {
    let before = my_abstract_names();
    let made = make();
    let new: Vec<Vec<u8>> = my_abstract_names().difference(&before).cloned().collect();
    assert_eq!(new.len(), 1, "expected one new gate name, found {new:?}");
    (made, new.into_iter().next().expect("one"))
}

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

/// A stream socketpair, non-blocking.
fn socketpair() -> (OwnedFd, OwnedFd) {
    net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .expect("socketpair")
}

/// In a child: ADDs a socket through `q`'s control channel. 0 if it was refused with
/// `kind`, 1 if it went through, 2 for any other error.
fn add_a_socket_expecting(q: &Instance, kind: io::ErrorKind) -> i32 {
    let (a, _b) = socketpair();
    let mut ev = [fd_ev(KEVENT_SOCKET, &a, KEVENT_SOCKET_RECV, 0, COOKIE)];
    match q.ctl(KEVENT_CTL_ADD, &mut ev) {
        Err(e) if e.kind() == kind => {
            child_log(&format!("refused as it should be: {e}"));
            0
        }
        Ok(n) => {
            child_log(&format!("ADD went through ({n} reported: {:?})", ev[0]));
            1
        }
        Err(e) => {
            child_log(&format!("ADD failed with {:?}: {e}", e.kind()));
            2
        }
    }
}

// --- the squatter: a process that binds names before (or after) a queue --------------

/// What a squatter got: nothing, a connection, bytes, or fds (the worst it saw).
const GOT_NOTHING: i32 = 0;
const GOT_CONNECTION: i32 = 1;
const GOT_BYTES: i32 = 2;
const GOT_FDS: i32 = 3;

/// A child that binds and listens on `addrs` (as `uid`, if given), accepts whatever
/// connects, reads whatever comes, never answers, and reports the worst it got.
struct Squatter {
    pid: Pid,
    done: OwnedFd,
}

impl Squatter {
    fn start(kids: &mut Children, addrs: Vec<SocketAddrUnix>, uid: Option<u32>) -> Squatter {
        let (ready_r, ready_w) = pipe();
        let (done_r, done_w) = pipe();
        let pid = kids.fork(|| squat(&addrs, uid, &ready_w, &done_r));
        drop((ready_w, done_r));
        if read_byte(ready_r.as_fd(), Duration::from_secs(10)) != Some(b'R') {
            let code = kids.exit_code(pid, Duration::from_secs(1));
            panic!("the squatter did not get ready (exit code {code:?}; see its stderr)");
        }
        Squatter { pid, done: done_w }
    }

    /// Ends the squatter; what it got.
    fn finish(self, kids: &mut Children) -> i32 {
        write_byte(&self.done, b'D');
        match kids.exit_code(self.pid, Duration::from_secs(10)) {
            Some(code @ GOT_NOTHING..=GOT_FDS) => code,
            other => panic!("the squatter failed: exit code {other:?}"),
        }
    }
}

fn squat(addrs: &[SocketAddrUnix], uid: Option<u32>, ready: &OwnedFd, done: &OwnedFd) -> i32 {
    if let Some(uid) = uid {
        if !become_user(uid) {
            child_log(&format!("setuid({uid}): {}", io::Error::last_os_error()));
            return 90;
        }
    }
    let mut listeners = Vec::new();
    for a in addrs {
        let s = net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )
        .expect("socket");
        if let Err(e) = net::bind(&s, a).and_then(|()| net::listen(&s, 64)) {
            child_log(&format!("bind {a:?}: {e}"));
            return 91;
        }
        listeners.push(s);
    }
    write_byte(ready, b'R');
    let mut conns: Vec<OwnedFd> = Vec::new();
    let mut worst = GOT_NOTHING;
    let end = Instant::now() + Duration::from_secs(60);
    let tick = Timespec::try_from(Duration::from_millis(50)).expect("tick");
    while Instant::now() < end {
        let ready: Vec<bool> = {
            let mut pfds = vec![PollFd::new(done, PollFlags::IN)];
            pfds.extend(listeners.iter().map(|l| PollFd::new(l, PollFlags::IN)));
            pfds.extend(conns.iter().map(|c| PollFd::new(c, PollFlags::IN)));
            let _ = poll(&mut pfds, Some(&tick));
            pfds.iter().map(|p| !p.revents().is_empty()).collect()
        };
        if ready[0] {
            return worst;
        }
        for (i, l) in listeners.iter().enumerate() {
            if ready[1 + i] {
                while let Ok(c) = net::accept_with(l, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK)
                {
                    worst = worst.max(GOT_CONNECTION);
                    conns.push(c);
                }
            }
        }
        let first = 1 + listeners.len();
        for i in (0..conns.len()).rev() {
            if first + i >= ready.len() || !ready[first + i] {
                continue;
            }
            let mut buf = [0u8; 16384];
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(253))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            match net::recvmsg(
                &conns[i],
                &mut [io::IoSliceMut::new(&mut buf)],
                &mut control,
                RecvFlags::DONTWAIT,
            ) {
                Ok(m) if m.bytes > 0 => {
                    worst = worst.max(GOT_BYTES);
                    let fds = control
                        .drain()
                        .filter_map(|m| match m {
                            RecvAncillaryMessage::ScmRights(r) => Some(r.count()),
                            _ => None,
                        })
                        .sum::<usize>();
                    if fds > 0 {
                        child_log(&format!("squatter received {fds} fds"));
                        worst = GOT_FDS;
                    }
                }
                Err(rustix::io::Errno::AGAIN) => {}
                _ => {
                    conns.swap_remove(i);
                }
            }
        }
    }
    93
}

fn what(got: i32) -> &'static str {
    match got {
        GOT_NOTHING => "nothing",
        GOT_CONNECTION => "a connection",
        GOT_BYTES => "a request",
        _ => "a request with fds (SCM_RIGHTS)",
    }
}

// --- 1. a forked child talks only to its queue's owner ---------------------------------

/// Item 1: the fixed name `@kevent.detached` is gone. A queue attached without a control
/// channel has no gate address: its forked child's `kevent_ctl` answers `EOPNOTSUPP`
/// and connects nowhere — a user who binds the old name first gets nothing.
#[test]
fn a_forked_child_of_a_queue_attached_without_control_connects_to_nobody() {
    bounded(Duration::from_secs(60), || {
        let owner = Instance::create(64, 0).expect("create");
        let memfd = owner.ring().memfd().expect("a memfd ring");
        let doorbell =
            rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).expect("eventfd");
        let attached = Instance::attach(memfd, doorbell).expect("attach");
        let mut kids = Children::default();
        let squatter = Squatter::start(
            &mut kids,
            vec![abstract_addr(b"kevent.detached")],
            Some(NOBODY),
        );
        let victim = kids.fork(|| {
            let mine = match attached.for_this_process() {
                Ok(q) => q,
                Err(e) => {
                    child_log(&format!("for_this_process: {e}"));
                    return 10;
                }
            };
            let (a, _b) = socketpair();
            let mut ev = [fd_ev(KEVENT_SOCKET, &a, KEVENT_SOCKET_RECV, 0, COOKIE)];
            match mine.ctl(KEVENT_CTL_ADD, &mut ev) {
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => 0,
                r => {
                    child_log(&format!("ctl answered {r:?}"));
                    1
                }
            }
        });
        let code = kids.exit_code(victim, Duration::from_secs(8));
        let got = squatter.finish(&mut kids);
        assert_eq!(
            got,
            GOT_NOTHING,
            "a process of uid {NOBODY} that bound @kevent.detached got {} from the forked \
             child of an attached consumer",
            what(got)
        );
        assert_eq!(
            code,
            Some(0),
            "the child's kevent_ctl must answer EOPNOTSUPP at once (None: it hung)"
        );
    });
}

/// Item 1: the owner closed its queue and its gate's abstract name is free; a process
/// that takes it (`uid`: another user, or `None`: the same user, another pid) is refused
/// by the forked child before anything is sent: `PermissionDenied`.
fn a_child_refuses_whoever_took_the_freed_gate_name(uid: Option<u32>) {
    let (q, name) = with_gate_name(|| Instance::create(64, 0).expect("create"));
    q.close();
    assert!(
        wait_until(Duration::from_secs(5), || !anybody_listens_on(&name)),
        "the gate name @{} is still bound after the close",
        name.escape_ascii()
    );
    let mut kids = Children::default();
    let squatter = Squatter::start(&mut kids, vec![abstract_addr(&name)], uid);
    let victim = kids.fork(|| match q.for_this_process() {
        Ok(mine) => add_a_socket_expecting(&mine, io::ErrorKind::PermissionDenied),
        Err(e) => {
            child_log(&format!("for_this_process: {e}"));
            10
        }
    });
    let code = kids.exit_code(victim, Duration::from_secs(8));
    let got = squatter.finish(&mut kids);
    assert!(
        got < GOT_BYTES,
        "a process ({uid:?}) that took the closed queue's gate name @{} got {} from a \
         forked child",
        name.escape_ascii(),
        what(got)
    );
    assert_eq!(
        code,
        Some(0),
        "the child's kevent_ctl must be refused with PermissionDenied (None: it hung)"
    );
}

#[test]
fn a_forked_child_refuses_another_user_who_took_the_closed_queues_gate_name() {
    bounded(Duration::from_secs(60), || {
        a_child_refuses_whoever_took_the_freed_gate_name(Some(NOBODY))
    });
}

#[test]
fn a_forked_child_refuses_another_process_of_its_user_that_took_the_closed_queues_gate_name() {
    bounded(Duration::from_secs(60), || {
        a_child_refuses_whoever_took_the_freed_gate_name(None)
    });
}

/// Item 1, a path: a consumer connected to a queue served at a path; the owner closed it
/// (the file is removed) and another process of the same user serves the path now. The
/// consumer's forked child connects only to the pid recorded at `connect`.
#[test]
fn a_forked_child_of_a_connected_consumer_refuses_a_new_server_at_the_path() {
    bounded(Duration::from_secs(60), || {
        let dir = TempDir::new("trust-path");
        let path = dir.0.join("gate.sock");
        let q = Instance::create(64, 0).expect("create");
        q.listen(&path).expect("listen");
        let cq = Instance::connect(&path).expect("connect");
        q.close();
        assert!(!path.exists(), "the socket file stays after the close");
        let mut kids = Children::default();
        let squatter = Squatter::start(&mut kids, vec![path_addr(&path)], None);
        let victim = kids.fork(|| match cq.for_this_process() {
            Ok(mine) => add_a_socket_expecting(&mine, io::ErrorKind::PermissionDenied),
            Err(e) => {
                child_log(&format!("for_this_process: {e}"));
                10
            }
        });
        let code = kids.exit_code(victim, Duration::from_secs(8));
        let got = squatter.finish(&mut kids);
        assert!(
            got < GOT_BYTES,
            "another process serving the path got {} from the forked child",
            what(got)
        );
        assert_eq!(
            code,
            Some(0),
            "refused with PermissionDenied (None: it hung)"
        );
    });
}

/// Item 1: `Instance::connect` checks the server's uid before it sends anything; a
/// process of another uid serving the path is refused with `PermissionDenied`.
#[test]
fn connect_refuses_a_server_of_another_user() {
    bounded(Duration::from_secs(60), || {
        let dir = TempDir::new("trust-other-server");
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o777)).unwrap();
        let path = dir.0.join("gate.sock");
        let mut kids = Children::default();
        let squatter = Squatter::start(&mut kids, vec![path_addr(&path)], Some(NOBODY));
        let r = Instance::connect(&path);
        let got = squatter.finish(&mut kids);
        let e = r.expect_err("connected to another user's socket");
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
        assert!(e.to_string().contains("uid 65534"), "{e}");
        assert!(got < GOT_BYTES, "the other user's server got {}", what(got));
    });
}

// --- 2. names nobody can take first; the server checks its peers ----------------------

/// Item 2: gate names are not predictable. Another user who binds every
/// `@kevent.<pid>.<n>` of this process first does not stop `Instance::create`.
#[test]
fn queue_create_succeeds_while_another_user_holds_the_names_it_used_to_pick() {
    bounded(Duration::from_secs(60), || {
        raise_fd_limit(4096);
        let pid = std::process::id();
        let addrs = (0..1000)
            .map(|n| abstract_addr(format!("kevent.{pid}.{n}").as_bytes()))
            .collect();
        let mut kids = Children::default();
        let squatter = Squatter::start(&mut kids, addrs, Some(NOBODY));
        let made: Vec<_> = (0..4).map(|_| Instance::create(64, 0)).collect();
        let got = squatter.finish(&mut kids);
        for q in made {
            let q = q.expect("Instance::create while another user holds @kevent.<pid>.<n>");
            // And it serves: a process of ours attaches and controls it.
            let mut evs = [user_ev(1, 0)];
            assert_eq!(q.ctl(KEVENT_CTL_ADD, &mut evs).expect("ADD"), 0);
        }
        assert!(got < GOT_BYTES, "the squatter got {}", what(got));
    });
}

/// Item 2: the server drops a peer of another uid unanswered, on its abstract name
/// (which anybody can connect to) and on a path with open permissions; and such a
/// process's `Instance::connect` refuses the server first.
#[test]
fn the_gate_drops_a_peer_of_another_user_unanswered() {
    bounded(Duration::from_secs(60), || {
        let dir = TempDir::new("trust-peer");
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o777)).unwrap();
        let path = dir.0.join("gate.sock");
        let (q, name) = with_gate_name(|| Instance::create(64, 0).expect("create"));
        q.listen(&path).expect("listen");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        let mut kids = Children::default();
        let pid = kids.fork(|| {
            if !become_user(NOBODY) {
                return 90;
            }
            for addr in [abstract_addr(&name), path_addr(&path)] {
                let s = seqpacket();
                if let Err(e) = net::connect(&s, &addr) {
                    child_log(&format!("connect {addr:?}: {e} (refused: fine)"));
                    continue;
                }
                // ATTACH: op 1, cmd 0, n 0, nfds 0.
                let mut req = [0u8; 16];
                req[0] = 1;
                let _ = net::send(&s, &req, SendFlags::NOSIGNAL);
                if read_byte(s.as_fd(), Duration::from_secs(3)).is_some() {
                    child_log(&format!("the gate at {addr:?} answered another user"));
                    return 2;
                }
            }
            match Instance::connect(&path) {
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => 0,
                r => {
                    child_log(&format!("Instance::connect as another user: {r:?}"));
                    3
                }
            }
        });
        assert_eq!(kids.exit_code(pid, Duration::from_secs(20)), Some(0));
        drop(q);
    });
}

// --- 5. accept errors, and clients that never hang -------------------------------------

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
            write_byte(&last, b'R');
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
        write_byte(&go_w, b'G');
        let r = rx
            .recv_timeout(Duration::from_secs(4))
            .expect("Instance::connect is still waiting 4 s after the owner got its fds back");
        r.expect("Instance::connect after the gate's accept failed with EMFILE");
        Instance::connect(&path).expect("a later Instance::connect");
        write_byte(&go_w, b'E');
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

// --- 6. bounded threads, connections and requests --------------------------------------

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
                read_byte_peek(&s, Duration::from_secs(3)),
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

/// Whether `s` has something to read within `timeout`.
fn read_byte_peek(s: &OwnedFd, timeout: Duration) -> bool {
    let ts = Timespec::try_from(timeout).expect("timeout");
    let mut pfd = [PollFd::new(s, PollFlags::IN)];
    poll(&mut pfd, Some(&ts)).unwrap_or(0) == 1
}

// --- 7. KEVENT_INODE through the gate ---------------------------------------------------

/// Item 7: an inode kevent added by another process watches *its* directory — the fd
/// that travelled with `SCM_RIGHTS` — not whatever the owner has under that number.
#[test]
fn an_inode_kevent_added_through_the_gate_watches_the_peers_directory() {
    bounded(Duration::from_secs(60), || {
        let dir = TempDir::new("trust-inode");
        let path = dir.0.join("gate.sock");
        let theirs = TempDir::new("trust-inode-theirs");
        let ours = TempDir::new("trust-inode-ours");
        let q = Instance::create(64, 0).expect("create");
        q.listen(&path).expect("listen");
        // The owner has its own directory under the number the peer will use.
        let our_dir = std::fs::File::open(&ours.0).expect("open our dir");
        let number = rustix::io::fcntl_dupfd_cloexec(&our_dir, 900).expect("dupfd");
        let n = number.as_raw_fd();
        // The peer's kevents live as long as the peer (`peer.rs`): it stays until `done`
        // closes.
        let (added_r, added_w) = util::pipe();
        let (done_r, done_w) = util::pipe();
        let mut kids = Children::default();
        let peer = kids.fork(|| {
            // SAFETY: closes this process's copy of the parent's end, so that the parent
            // closing its own is seen here as end of file; the child `_exit`s without
            // dropping its `OwnedFd` (no second close).
            unsafe { libc::close(done_w.as_raw_fd()) };
            let cq = match Instance::connect(&path) {
                Ok(cq) => cq,
                Err(e) => {
                    child_log(&format!("connect: {e}"));
                    return 2;
                }
            };
            let their_dir = std::fs::File::open(&theirs.0).expect("open their dir");
            // SAFETY: dup2 onto a number this process owns (its copy of the parent's
            // `number`, replaced and never used as that again).
            if unsafe { libc::dup2(their_dir.as_raw_fd(), n) } != n {
                return 3;
            }
            let mut ev = [util::ev(
                KEVENT_INODE,
                n as u64,
                KEVENT_INODE_CREATE,
                0,
                COOKIE,
            )];
            match cq.ctl(KEVENT_CTL_ADD, &mut ev) {
                Ok(0) => {
                    write_byte(&added_w, 1);
                    // Until the test is done (end of file on `done`).
                    let _ = read_byte(done_r.as_fd(), Duration::from_secs(30));
                    0
                }
                r => {
                    child_log(&format!("ADD of the inode kevent: {r:?}, {:?}", ev[0]));
                    4
                }
            }
        });
        drop(done_r);
        assert_eq!(
            read_byte(added_r.as_fd(), Duration::from_secs(10)),
            Some(1),
            "the peer's ADD of KEVENT_INODE through the gate failed"
        );
        let mut buf = [Ukevent::default(); 8];
        // A file in the owner's directory under that number: not watched.
        std::fs::write(ours.0.join("x"), b"x").unwrap();
        let got = q
            .get_events(1, 8, Some(300_000_000), &mut buf, 0)
            .expect("get_events");
        assert_eq!(
            got,
            0,
            "the owner's own directory is watched: {:?}",
            &buf[..got]
        );
        // A file in the peer's directory: reported.
        std::fs::write(theirs.0.join("y"), b"y").unwrap();
        let got = q
            .get_events(1, 8, Some(3_000_000_000), &mut buf, 0)
            .expect("get_events");
        assert_eq!(
            got, 1,
            "no event for a file created in the peer's directory"
        );
        assert_eq!(
            (buf[0].type_, buf[0].id, buf[0].event, buf[0].user),
            (KEVENT_INODE, n as u64, KEVENT_INODE_CREATE, COOKIE)
        );
        // The peer leaves: its kevent goes with it.
        drop(done_w);
        assert_eq!(kids.exit_code(peer, Duration::from_secs(10)), Some(0));
        assert!(
            util::wait_until(Duration::from_secs(3), || q
                .ring()
                .stats()
                .registered
                .load(std::sync::atomic::Ordering::Relaxed)
                == 0),
            "the peer's kevent outlived it"
        );
        std::fs::write(theirs.0.join("z"), b"z").unwrap();
        let got = q
            .get_events(1, 8, Some(300_000_000), &mut buf, 0)
            .expect("get_events");
        assert_eq!(
            got,
            0,
            "a gone peer's directory is still watched: {:?}",
            &buf[..got]
        );
        drop(number);
    });
}

// --- 4. fork while other threads are inside kevent_* calls ------------------------------

/// Item 4: 200 forks while three threads hammer the queue with `kevent_*` calls: every
/// child's first calls return (no lock is copied held across the fork).
#[test]
fn two_hundred_forks_while_three_threads_hammer_the_queue_never_hang_a_child() {
    bounded(Duration::from_secs(300), || {
        let q = Q::new(64);
        let fd = q.fd;
        q.add(&mut [user_ev(1, 0)]);
        let stop = Arc::new(AtomicBool::new(false));
        let hammers: Vec<_> = (0..3)
            .map(|i| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut buf = [Ukevent::default(); 8];
                    while !stop.load(Ordering::Relaxed) {
                        match i {
                            0 => {
                                let _ = kevent_ctl(fd, KEVENT_CTL_READY, &mut [user_ev(1, 0)]);
                            }
                            1 => {
                                let _ = kevent_get_events(fd, 0, 8, Some(0), &mut buf, 0);
                            }
                            _ => {
                                let _ = kevent_ctl(fd, KEVENT_CTL_READY, &mut []);
                                let _ = kevent_get_events(fd, 0, 8, Some(0), &mut buf, 0);
                            }
                        }
                    }
                })
            })
            .collect();
        let mut kids = Children::default();
        let mut hung = 0;
        let mut failed = Vec::new();
        for _ in 0..200 {
            let pid = kids.fork(|| {
                let mut buf = [Ukevent::default(); 8];
                if let Err(e) = kevent_get_events(fd, 0, 8, Some(0), &mut buf, 0) {
                    child_log(&format!("kevent_get_events: {e}"));
                    return 2;
                }
                if let Err(e) = kevent_ctl(fd, KEVENT_CTL_READY, &mut []) {
                    child_log(&format!("kevent_ctl: {e}"));
                    return 3;
                }
                0
            });
            match kids.exit_code(pid, Duration::from_secs(10)) {
                Some(0) => {}
                Some(code) => failed.push(code),
                None => hung += 1,
            }
            if hung > 0 {
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        for h in hammers {
            h.join().expect("hammer");
        }
        assert_eq!(hung, 0, "a forked child hung in its first kevent_* call");
        assert!(failed.is_empty(), "children failed: {failed:?}");
    });
}

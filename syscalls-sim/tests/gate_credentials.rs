//! Who a forked child or a connecting process talks to through a queue's gate
//! (ARCHITECTURE.md §5, "Trust boundaries"; issue #10, items 1 and 2): a forked child
//! connects only to its queue's owner — not to a fixed name, not to whoever took the
//! closed queue's name or path, of another user or of its own —, `Instance::connect`
//! refuses a server of another user, gate names are not predictable, and the gate drops
//! a peer of another user unanswered.
//!
//! Other users are played by forked children that `setuid(65534)` (the tests run as
//! root). Children are forked from the test thread, end with `_exit`, are killed by a
//! guard if a test fails and by `PR_SET_PDEATHSIG` if the test process dies. The tests of
//! this file run one at a time (they fork and look for new socket names). Every wait is
//! bounded, so a hang fails a test instead of hanging the run.

#![deny(clippy::undocumented_unsafe_blocks)]

mod util;

use std::collections::HashSet;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kevent_syscalls::*;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::net::{
    self, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendFlags,
    SocketAddrUnix, SocketFlags, SocketType,
};
use rustix::process::Pid;
use util::proc::{bounded, child_log, Children};
use util::{
    fd_ev, path_addr, pipe, raise_fd_limit, read_byte, seqpacket, socketpair, user_ev, wait_until,
    write_bytes, TempDir,
};

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

fn abstract_addr(name: &[u8]) -> SocketAddrUnix {
    SocketAddrUnix::new_abstract_name(name).expect("abstract name")
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

/// Forks a child of this process, attached to `q` (as a forked child is, through its
/// parent's queue), whose ADD through the queue's control channel must be refused with
/// `PermissionDenied`: exit code 0 if it was (see [`add_a_socket_expecting`]).
fn fork_a_child_to_be_refused(kids: &mut Children, q: &Arc<Instance>) -> Pid {
    kids.fork(|| match q.for_this_process() {
        Ok(mine) => add_a_socket_expecting(&mine, io::ErrorKind::PermissionDenied),
        Err(e) => {
            child_log(&format!("for_this_process: {e}"));
            10
        }
    })
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
        write_bytes(&self.done, b"D");
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
    write_bytes(ready, b"R");
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

// --- a forked child talks only to its queue's owner -----------------------------------

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
    let victim = fork_a_child_to_be_refused(&mut kids, &q);
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
        let victim = fork_a_child_to_be_refused(&mut kids, &cq);
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

// --- names nobody can take first; the server checks its peers ------------------------

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

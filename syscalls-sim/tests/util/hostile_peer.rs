//! The hostile peer of the `hostile_*.rs` tests, and the owner's calls bounded against it:
//! no call of the queue's owner ever blocks on an fd a peer can reach (ARCHITECTURE.md §5,
//! "Trust boundaries": "a peer can clear `O_NONBLOCK` on a shared eventfd and fill its
//! counter, and nothing is written to such an fd while a lock is held").
//!
//! The peer is a same-uid process that attached with [`Instance::connect`]: a forked child
//! that first closes every fd it inherited, so that what it holds afterwards is exactly
//! what attaching gave it — the gate connection it made, and whatever the owner sent or
//! shares with it (today the ring's memfd, the doorbell, and the eventfd it armed as its
//! notify fd). It acts on all of those as it finds them in `/proc/self/fd`, whatever they
//! are (eventfds today; sockets or pipes perhaps tomorrow), never on a kind it assumes:
//!
//! * **blocking and full**: clears `O_NONBLOCK` on every fd (it is one open file
//!   description with the owner's copy), fills each (an eventfd's counter to
//!   0xffff_ffff_ffff_fffe; a socket or pipe until `EAGAIN`) and keeps it full with
//!   blocking writes from a thread per fd (the owner drains some of them);
//! * **blocking and drained**: clears `O_NONBLOCK` and reads every fd with blocking reads
//!   from a thread per fd, so that a read of the owner's would block;
//! * **blocking**: clears `O_NONBLOCK` on every fd and does nothing else (then it is
//!   killed: the owner's own reads and writes are what must not block);
//! * **full**: fills each fd once and leaves its flags alone (a sloppy peer).
//!
//! The owner meanwhile makes its ordinary calls — `kevent_ctl` (ADD, REMOVE, READY),
//! `kevent_get_events`, commits, close — each on a helper thread bounded by
//! [`CALL_LIMIT`] (they take well under 100 ms when nothing blocks; the slowest is
//! printed). A call that blocks fails the test at once with its name; the queue is never
//! closed by a drop, so a failed test unwinds without hanging in a close.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kevent_syscalls::*;
use rustix::io::Errno;

use super::proc::{child_log, within, Children, SharedWords};
use super::{my_fds, user_ev, wait_until, TempDir, MS};

/// The longest any single call of the owner may take here. The contract is < 100 ms;
/// the bound is generous for a loaded 2-core machine.
pub const CALL_LIMIT: Duration = Duration::from_secs(1);
/// Rounds of owner calls before the peer is killed, and again after.
pub const ROUNDS: u64 = 100;
/// The largest value an eventfd's counter holds.
const EVENTFD_MAX: u64 = 0xffff_ffff_ffff_fffe;

// --- the owner's calls, each bounded ---------------------------------------------------

/// Runs the owner's calls on helper threads, each bounded by [`CALL_LIMIT`], and keeps
/// the slowest.
#[derive(Default)]
pub struct Clock {
    calls: u64,
    slowest: Duration,
    slowest_call: String,
}

impl Clock {
    #[track_caller]
    pub fn call<T: Send + 'static>(
        &mut self,
        what: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let t = Instant::now();
        let Some(v) = within(CALL_LIMIT, f) else {
            let before = if self.calls == 0 {
                "the first call".to_string()
            } else {
                format!(
                    "after {} calls that returned, the slowest {} in {:?}",
                    self.calls, self.slowest_call, self.slowest
                )
            };
            panic!(
                "{what} did not return within {CALL_LIMIT:?}: the owner blocks on an fd the \
                 peer can reach ({before})"
            );
        };
        let took = t.elapsed();
        self.calls += 1;
        if took > self.slowest {
            self.slowest = took;
            self.slowest_call = what.to_string();
        }
        v
    }

    pub fn report(&self, test: &str) {
        println!(
            "{test}: {} owner calls, the slowest {} in {:?}",
            self.calls, self.slowest_call, self.slowest
        );
    }
}

/// A queue served at a path in a fresh directory. One reference is leaked on purpose: a
/// failed test must not hang in the close a drop would do (the test closes it itself).
pub fn owner_queue(name: &str) -> (Arc<Instance>, TempDir, PathBuf) {
    let q = Instance::create(64, 0).expect("kevent_init");
    std::mem::forget(q.clone());
    let dir = TempDir::new(name);
    let path = dir.0.join("gate");
    q.listen(&path).expect("listen");
    (q, dir, path)
}

/// READY of user kevent 1 (which the test added), bounded; it must succeed.
#[track_caller]
pub fn ready_1(clock: &mut Clock, q: &Arc<Instance>, round: u64) {
    let q = q.clone();
    let failed = clock.call(&format!("kevent_ctl(READY) #{round}"), move || {
        q.ctl(KEVENT_CTL_READY, &mut [user_ev(1, 0)])
    });
    assert_eq!(failed.expect("READY"), 0, "round {round}");
}

/// Closes the queue, bounded.
pub fn close(clock: &mut Clock, q: &Arc<Instance>) {
    let q = q.clone();
    clock.call("close", move || q.close());
}

// --- the peer ----------------------------------------------------------------------------

/// What the peer does to the fds it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    BlockingAndFull,
    BlockingAndDrained,
    /// `O_NONBLOCK` cleared on every fd, nothing else.
    Blocking,
    Full,
}

/// What the peer does besides.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub attack: Attack,
    /// Arm the notify fd (`Instance::notify_fd`) before the attack.
    pub notify: bool,
    /// A thread of the peer sleeps in `kevent_get_events` (a consumer asleep on the ring).
    pub sleeper: bool,
    /// The peer's main thread runs an event loop on its notify fd (see
    /// [`notify_loop`]) instead of idling.
    pub event_loop: bool,
}

/// The words the peer and the owner share.
pub mod board {
    /// 1 once the peer has attacked (and started its threads), 99 if it failed.
    pub const PHASE: usize = 0;
    /// Fds attacked, by kind.
    pub const EVENTFDS: usize = 1;
    pub const SOCKETS: usize = 2;
    pub const PIPES: usize = 3;
    /// Fds whose `O_NONBLOCK` only was cleared (memfd, …).
    pub const OTHERS: usize = 4;
    /// Entries the peer's consumers took.
    pub const TAKEN: usize = 5;
    /// The event loop: refills asked for by the owner, and done.
    pub const REFILL_ASKED: usize = 6;
    pub const REFILL_DONE: usize = 7;
    /// The event loop: the owner published its event number so-and-so.
    pub const PUBLISHED: usize = 8;
    /// The event loop: times it found the notify fd readable.
    pub const WAKEUPS: usize = 9;
    /// The peer's threads stop.
    pub const STOP: usize = 10;
    /// The event loop: refills after which the notify fd, an eventfd, held the most it
    /// can (`eventfd-count` in its fdinfo; informational).
    pub const NOTIFY_FULL: usize = 11;
    pub const WORDS: usize = 12;
}

/// Closes every fd above stderr (a forked child's copies of its parent's).
fn close_inherited_fds() {
    for fd in my_fds() {
        if fd > 2 {
            // SAFETY: closes a number of this (forked, single-threaded) process; nothing
            // in it uses the parent's fds, and an fd already closed (the directory
            // listing's own) only gives EBADF.
            unsafe { libc::close(fd) };
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Eventfd,
    Socket,
    Pipe,
    /// Anything else (the ring's memfd): only its `O_NONBLOCK` is cleared.
    Other,
    /// The peer's own connection to the gate (not something the owner gave it).
    Gate,
}

/// What `fd` is, by its `/proc/self/fd` link; `None` if it is not open.
fn kind(fd: RawFd, gate: &Path) -> Option<Kind> {
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    let link = link.to_string_lossy();
    Some(if link == "anon_inode:[eventfd]" {
        Kind::Eventfd
    } else if link.starts_with("socket:[") {
        let peer = rustix::net::getpeername(borrow(fd))
            .ok()
            .flatten()
            .and_then(|a| rustix::net::SocketAddrUnix::try_from(a).ok());
        let to_gate =
            peer.is_some_and(|a| a.path_bytes() == Some(gate.as_os_str().as_encoded_bytes()));
        if to_gate {
            Kind::Gate
        } else {
            Kind::Socket
        }
    } else if link.starts_with("pipe:[") {
        Kind::Pipe
    } else {
        Kind::Other
    })
}

fn borrow(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: the peer's fds stay open until it exits (nothing here closes them), and
    // every use is a system call on the number.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

fn set_nonblocking(fd: RawFd, on: bool) {
    let fd = borrow(fd);
    if let Ok(fl) = rustix::fs::fcntl_getfl(fd) {
        let nb = rustix::fs::OFlags::NONBLOCK;
        let _ = rustix::fs::fcntl_setfl(fd, if on { fl | nb } else { fl - nb });
    }
}

/// Writes into `fd` without blocking until it takes no more (an eventfd's counter at
/// [`EVENTFD_MAX`], a socket's or pipe's buffer full). Leaves `O_NONBLOCK` set.
fn fill(fd: RawFd, kind: Kind) {
    set_nonblocking(fd, true);
    let fd = borrow(fd);
    match kind {
        Kind::Eventfd => {
            // Bounded, in case the owner reads the counter as fast as this adds to it
            // (its producer thread resets the doorbell whenever it is readable).
            let mut v = EVENTFD_MAX;
            for _ in 0..256 {
                match rustix::io::write(fd, &v.to_ne_bytes()) {
                    Ok(_) => {}
                    Err(Errno::AGAIN) if v > 1 => v /= 2,
                    Err(_) => return,
                }
            }
        }
        Kind::Socket | Kind::Pipe => {
            let buf = [0x5a_u8; 4096];
            // Bounded, in case the other side reads as fast as this writes.
            for _ in 0..16_384 {
                let r = if kind == Kind::Socket {
                    rustix::net::send(
                        fd,
                        &buf,
                        rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL,
                    )
                } else {
                    rustix::io::write(fd, &buf)
                };
                if r.is_err() {
                    return;
                }
            }
        }
        Kind::Other | Kind::Gate => {}
    }
}

/// A thread that keeps `fd` full with blocking writes (each blocks until the owner takes
/// something out).
fn keep_full(fd: RawFd, kind: Kind) {
    std::thread::spawn(move || {
        let fd = borrow(fd);
        let buf = [0x5a_u8; 4096];
        loop {
            let r = match kind {
                Kind::Eventfd => rustix::io::write(fd, &EVENTFD_MAX.to_ne_bytes()),
                Kind::Socket => rustix::net::send(fd, &buf, rustix::net::SendFlags::NOSIGNAL),
                Kind::Pipe => rustix::io::write(fd, &buf),
                Kind::Other | Kind::Gate => return,
            };
            match r {
                Ok(_) | Err(Errno::INTR) => {}
                Err(_) => return,
            }
        }
    });
}

/// A thread that takes everything written into `fd` with blocking reads.
fn keep_drained(fd: RawFd, kind: Kind) {
    if !matches!(kind, Kind::Eventfd | Kind::Socket | Kind::Pipe) {
        return;
    }
    std::thread::spawn(move || {
        let fd = borrow(fd);
        let mut buf = [0u8; 4096];
        loop {
            match rustix::io::read(fd, &mut buf) {
                Ok(0) => return,
                Ok(_) | Err(Errno::INTR) => {}
                Err(_) => return,
            }
        }
    });
}

/// The peer's fds that attaching gave it, and what they are.
type Held = Vec<(RawFd, Kind)>;

/// The attack on every fd in `held` (see the module docs), counted on the board.
fn attack(held: &Held, how: Attack, b: &SharedWords) {
    for &(fd, kind) in held {
        let word = match kind {
            Kind::Eventfd => board::EVENTFDS,
            Kind::Socket => board::SOCKETS,
            Kind::Pipe => board::PIPES,
            Kind::Other => board::OTHERS,
            Kind::Gate => continue,
        };
        b.at(word).fetch_add(1, Ordering::SeqCst);
        match how {
            Attack::BlockingAndFull => {
                fill(fd, kind);
                set_nonblocking(fd, false);
                keep_full(fd, kind);
            }
            Attack::BlockingAndDrained => {
                set_nonblocking(fd, false);
                keep_drained(fd, kind);
            }
            Attack::Blocking => set_nonblocking(fd, false),
            Attack::Full => fill_leaving_flags(fd, kind),
        }
    }
}

/// [`fill`], then the fd's flags as they were.
fn fill_leaving_flags(fd: RawFd, kind: Kind) {
    let flags = rustix::fs::fcntl_getfl(borrow(fd)).ok();
    fill(fd, kind);
    if let Some(fl) = flags {
        let _ = rustix::fs::fcntl_setfl(borrow(fd), fl);
    }
}

/// The peer: closes what it inherited, attaches through `gate`, arms its notify fd if
/// asked, attacks every fd attaching gave it, then sleeps, consumes or runs its event
/// loop as `plan` says until killed (or told to stop).
fn peer(gate: &Path, b: &Arc<SharedWords>, plan: Plan) -> i32 {
    close_inherited_fds();
    let before = my_fds();
    let cq = match Instance::connect(gate) {
        Ok(q) => q,
        Err(e) => {
            child_log(&format!("connect: {e}"));
            b.at(board::PHASE).store(99, Ordering::SeqCst);
            return 2;
        }
    };
    let notify = if plan.notify {
        match cq.notify_fd() {
            Ok(fd) => Some(rustix::io::dup(fd).expect("dup")),
            Err(e) => {
                child_log(&format!("notify_fd: {e}"));
                b.at(board::PHASE).store(99, Ordering::SeqCst);
                return 3;
            }
        }
    } else {
        None
    };
    let mine = notify.as_ref().map(|fd| fd.as_raw_fd());
    // Every fd attaching gave us (our duplicate of the notify fd excepted: the queue's
    // own is in the list).
    let held: Held = my_fds()
        .into_iter()
        .filter(|fd| !before.contains(fd) && Some(*fd) != mine)
        .filter_map(|fd| Some((fd, kind(fd, gate)?)))
        .collect();
    child_log(&format!("attacking ({:?}) {held:?}", plan.attack));
    attack(&held, plan.attack, b);
    if plan.sleeper {
        let (cq, b) = (cq.clone(), b.clone());
        std::thread::spawn(move || {
            let mut buf = [Ukevent::default(); 64];
            while let Ok(n) = cq.get_events(1, 64, Some(2_000 * MS), &mut buf, 0) {
                b.at(board::TAKEN).fetch_add(n as u64, Ordering::SeqCst);
            }
        });
    }
    b.at(board::PHASE).store(1, Ordering::SeqCst);
    if plan.event_loop {
        let nfd = notify.expect("an event loop needs the notify fd");
        return notify_loop(&cq, nfd.as_fd(), &held, b);
    }
    let end = Instant::now() + Duration::from_secs(60);
    while b.at(board::STOP).load(Ordering::SeqCst) == 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    0
}

/// The counter of eventfd `fd` (from its fdinfo); `None` for anything else.
fn eventfd_count(fd: RawFd) -> Option<u64> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    let hex = info
        .lines()
        .find_map(|l| l.strip_prefix("eventfd-count:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The peer's event loop on its notify fd: `poll` it, and when it is readable take
/// entries with zero-timeout `kevent_get_events` until one comes back empty. When the
/// owner asks, fill every fd again first, and look at the fd only once the owner has
/// published after the refill (so that publish finds the fd full).
fn notify_loop(cq: &Instance, nfd: BorrowedFd<'_>, held: &Held, b: &SharedWords) -> i32 {
    let mut buf = [Ukevent::default(); 64];
    let end = Instant::now() + Duration::from_secs(60);
    while b.at(board::STOP).load(Ordering::SeqCst) == 0 && Instant::now() < end {
        let asked = b.at(board::REFILL_ASKED).load(Ordering::SeqCst);
        if asked > b.at(board::REFILL_DONE).load(Ordering::SeqCst) {
            for &(fd, kind) in held {
                fill_leaving_flags(fd, kind);
            }
            if eventfd_count(nfd.as_raw_fd()) == Some(EVENTFD_MAX) {
                b.at(board::NOTIFY_FULL).fetch_add(1, Ordering::SeqCst);
            }
            b.at(board::REFILL_DONE).store(asked, Ordering::SeqCst);
        }
        if b.at(board::PUBLISHED).load(Ordering::SeqCst)
            < b.at(board::REFILL_DONE).load(Ordering::SeqCst)
        {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let mut pfd = [rustix::event::PollFd::new(
            &nfd,
            rustix::event::PollFlags::IN,
        )];
        let ts = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 10_000_000,
        };
        match rustix::event::poll(&mut pfd, Some(&ts)) {
            Ok(0) | Err(Errno::INTR) => continue,
            Ok(_) => {}
            Err(_) => return 4,
        }
        b.at(board::WAKEUPS).fetch_add(1, Ordering::SeqCst);
        loop {
            match cq.get_events(0, 64, Some(0), &mut buf, 0) {
                Ok(0) => break,
                Ok(n) => {
                    b.at(board::TAKEN).fetch_add(n as u64, Ordering::SeqCst);
                }
                Err(e) => {
                    child_log(&format!("get_events: {e}"));
                    return 5;
                }
            }
        }
    }
    0
}

/// Forks the peer and waits until it has attacked; returns its pid.
pub fn start_peer(
    kids: &mut Children,
    gate: &Path,
    board: &Arc<SharedWords>,
    plan: Plan,
) -> rustix::process::Pid {
    let (b, g) = (board.clone(), gate.to_owned());
    let pid = kids.fork(move || peer(&g, &b, plan));
    assert!(
        wait_until(Duration::from_secs(10), || board
            .at(board::PHASE)
            .load(Ordering::SeqCst)
            != 0),
        "the peer did not attach and attack within 10 s"
    );
    assert_eq!(
        board.at(board::PHASE).load(Ordering::SeqCst),
        1,
        "the peer failed to attach (see its stderr)"
    );
    let n = |w| board.at(w).load(Ordering::SeqCst);
    println!(
        "the peer attacked ({:?}): {} eventfds, {} sockets, {} pipes, {} others",
        plan.attack,
        n(board::EVENTFDS),
        n(board::SOCKETS),
        n(board::PIPES),
        n(board::OTHERS)
    );
    assert!(
        n(board::EVENTFDS) + n(board::SOCKETS) + n(board::PIPES) > 0,
        "attaching gave the peer no fd it could fill or drain"
    );
    pid
}

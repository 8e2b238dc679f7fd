//! Shared helpers of the integration tests: a queue handle that closes itself, kevent
//! builders, bounded waits, claim/commit, statistics, fds and temp dirs.
//!
//! Every helper that blocks has a timeout, so a bug fails a test instead of hanging it.

// Each test file compiles this module on its own and uses a different part of it.
#![allow(dead_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Once;
use std::time::{Duration, Instant};

use kevent_syscalls::*;

pub mod proc;
pub mod shm;

/// Nanoseconds in a millisecond and in a second (kevent timeouts are nanoseconds).
pub const MS: u64 = 1_000_000;
pub const SEC: u64 = 1_000_000_000;

/// How long a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(3);
/// How long a test watches for something that must not happen.
pub const QUIET: Duration = Duration::from_millis(250);

/// A queue handle that is closed when the test ends (also when it panics).
///
/// Handles are fd numbers and are reused once closed, so a test that closes its queue
/// itself must do it through [`Q::close`], never twice.
#[derive(Debug)]
pub struct Q {
    pub fd: RawFd,
}

impl Q {
    /// `kevent_init(num, 0)`.
    pub fn new(num: u32) -> Q {
        Q {
            fd: kevent_init(num, 0).expect("kevent_init"),
        }
    }

    /// `kevent_close`, once.
    pub fn close(self) -> io::Result<()> {
        let fd = self.fd;
        std::mem::forget(self);
        kevent_close(fd)
    }

    /// The queue behind the handle.
    pub fn queue(&self) -> std::sync::Arc<Instance> {
        instance(self.fd).expect("instance(fd)")
    }

    /// A snapshot of the ring's statistics.
    pub fn stats(&self) -> Stats {
        let q = self.queue();
        let s = &q.ring().header().stats;
        Stats {
            posted: s.posted.load(Ordering::Relaxed),
            coalesced: s.coalesced.load(Ordering::Relaxed),
            backlogged: s.backlogged.load(Ordering::Relaxed),
            lost: s.lost.load(Ordering::Relaxed),
            backlog_len: s.backlog_len.load(Ordering::Relaxed),
            registered: s.registered.load(Ordering::Relaxed),
        }
    }

    /// Consumers asleep (or about to sleep): on the ring's futex, or blocked in
    /// `epoll_wait` as the queue's harvester.
    pub fn sleepers(&self) -> u32 {
        self.queue().sleeping()
    }

    /// `kevent_ctl(ADD)`; returns how many entries came back at the front.
    pub fn add(&self, evs: &mut [Ukevent]) -> usize {
        kevent_ctl(self.fd, KEVENT_CTL_ADD, evs).expect("kevent_ctl(ADD)")
    }

    /// `kevent_ctl(cmd)` that must succeed for every entry.
    pub fn ctl_ok(&self, cmd: u32, evs: &mut [Ukevent]) {
        assert_eq!(
            kevent_ctl(self.fd, cmd, evs).expect("kevent_ctl"),
            0,
            "kevent_ctl({cmd}) failed for some entries: {evs:?}"
        );
    }

    /// `kevent_get_events(min 1, max 64)` with a timeout: whatever arrived (maybe none).
    pub fn get(&self, timeout: Duration) -> Vec<Ukevent> {
        let mut buf = [Ukevent::default(); 64];
        let n = kevent_get_events(self.fd, 1, 64, Some(nanos(timeout)), &mut buf, 0)
            .expect("kevent_get_events");
        buf[..n].to_vec()
    }

    /// The next event; fails the test if none arrives within [`PATIENCE`].
    pub fn get_one(&self) -> Ukevent {
        let mut buf = [Ukevent::default(); 1];
        let n = kevent_get_events(self.fd, 1, 1, Some(nanos(PATIENCE)), &mut buf, 0)
            .expect("kevent_get_events");
        assert_eq!(n, 1, "no event within {PATIENCE:?}");
        buf[0]
    }

    /// Fails the test if any event arrives within `window`.
    pub fn expect_none(&self, window: Duration) {
        let got = self.get(window);
        assert!(got.is_empty(), "expected no event, got {got:?}");
    }

    /// Everything that arrives until `window` has passed.
    pub fn collect(&self, window: Duration) -> Vec<Ukevent> {
        let end = Instant::now() + window;
        let mut out = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            out.extend(self.get(left));
        }
        out
    }

    /// `kevent_wait(num)` from the current user index, then reads the claimed entries.
    pub fn claim(&self, num: u32, timeout: Duration) -> (Claim, Vec<Ukevent>) {
        let q = self.queue();
        let claim = kevent_wait(self.fd, num, q.ring().uidx(), Some(nanos(timeout)), 0)
            .expect("kevent_wait");
        let evs = (claim.start..claim.end)
            .filter_map(|p| q.entry(p))
            .collect();
        (claim, evs)
    }

    /// `kevent_commit` of every entry below the 64-bit position `pos`, through its
    /// kevent view `(new_uidx, over)`.
    pub fn commit_to(&self, pos: u64) -> u64 {
        let (idx, over) = self.queue().ring().kevent_view(pos);
        kevent_commit(self.fd, idx, over).expect("kevent_commit")
    }
}

impl Drop for Q {
    fn drop(&mut self) {
        let _ = kevent_close(self.fd);
    }
}

/// The statistics a test looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub posted: u64,
    pub coalesced: u64,
    pub backlogged: u64,
    pub lost: u64,
    pub backlog_len: u64,
    pub registered: u64,
}

pub fn nanos(d: Duration) -> u64 {
    d.as_nanos() as u64
}

/// A kevent.
pub fn ev(type_: u32, id: u64, event: u32, req_flags: u32, user: u64) -> Ukevent {
    Ukevent {
        id,
        type_,
        event,
        req_flags,
        user,
        ..Default::default()
    }
}

/// A kevent on an fd (`KEVENT_PIPE`, `KEVENT_SOCKET` or `KEVENT_POLL`).
pub fn fd_ev(type_: u32, fd: &impl AsRawFd, event: u32, req_flags: u32, user: u64) -> Ukevent {
    ev(type_, fd.as_raw_fd() as u64, event, req_flags, user)
}

/// A user event (`KEVENT_USER`, id `id`, cookie `id`).
pub fn user_ev(id: u64, req_flags: u32) -> Ukevent {
    ev(KEVENT_USER, id, KEVENT_USER_READY, req_flags, id)
}

/// The errno of a failed call.
#[track_caller]
pub fn assert_errno<T: std::fmt::Debug>(r: io::Result<T>, errno: i32) {
    match r {
        Ok(v) => panic!("expected errno {errno}, got Ok({v:?})"),
        Err(e) => assert_eq!(e.raw_os_error(), Some(errno), "wrong error: {e}"),
    }
}

/// A failed `kevent_ctl` entry: `BROKEN | DONE` with `errno` in `ret_data[1]`.
#[track_caller]
pub fn assert_broken(ev: &Ukevent, errno: i32) {
    assert_eq!(
        ev.ret_flags,
        KEVENT_RET_BROKEN | KEVENT_RET_DONE,
        "entry not reported as failed: {ev:?}"
    );
    assert_eq!(ev.ret_data[1], errno as u32, "wrong errno in {ev:?}");
}

/// Polls `cond` until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

// --- fds ------------------------------------------------------------------------------

/// A pipe: `(read end, write end)`.
pub fn pipe() -> (OwnedFd, OwnedFd) {
    let (r, w) = std::io::pipe().expect("pipe");
    (OwnedFd::from(r), OwnedFd::from(w))
}

pub fn set_nonblocking(fd: &impl AsFd) {
    let fd = fd.as_fd();
    let fl = rustix::fs::fcntl_getfl(fd).expect("F_GETFL");
    rustix::fs::fcntl_setfl(fd, fl | rustix::fs::OFlags::NONBLOCK).expect("F_SETFL");
}

pub fn write_bytes(fd: &impl AsFd, bytes: &[u8]) {
    assert_eq!(rustix::io::write(fd, bytes).expect("write"), bytes.len());
}

/// Writes into a non-blocking fd until it would block; returns how much it wrote.
pub fn fill(fd: &impl AsFd) -> usize {
    let buf = [0u8; 4096];
    let mut total = 0;
    loop {
        match rustix::io::write(fd, &buf) {
            Ok(n) => total += n,
            Err(rustix::io::Errno::AGAIN) => return total,
            Err(e) => panic!("write: {e}"),
        }
    }
}

/// Reads a non-blocking fd until it would block; returns how much it read.
pub fn drain(fd: &impl AsFd) -> usize {
    let mut buf = [0u8; 4096];
    let mut total = 0;
    loop {
        match rustix::io::read(fd, &mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(rustix::io::Errno::AGAIN) => return total,
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Raises `RLIMIT_NOFILE` (soft and hard) to at least `n` for the whole process. The
/// tests run as root, so the hard limit may be raised.
pub fn raise_fd_limit(n: u64) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own.
        let r = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        assert_eq!(
            r,
            0,
            "getrlimit(RLIMIT_NOFILE): {}",
            io::Error::last_os_error()
        );
        if lim.rlim_cur >= n && lim.rlim_max >= n {
            return;
        }
        let new = libc::rlimit {
            rlim_cur: lim.rlim_cur.max(n),
            rlim_max: lim.rlim_max.max(n),
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } != 0 {
            panic!(
                "cannot raise RLIMIT_NOFILE from {}/{} to {n} (this test needs root or \
                 CAP_SYS_RESOURCE): {}",
                lim.rlim_cur,
                lim.rlim_max,
                io::Error::last_os_error()
            );
        }
    });
}

/// A fresh empty directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "kevent-test-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            name
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).expect("create temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `(active, departed)` records in the ring's consumer table.
pub fn consumer_records(ring: &Ring) -> (usize, usize) {
    let mut n = (0, 0);
    for (_, state, _) in ring.consumers() {
        match state {
            kevent_ring::RecordState::Active => n.0 += 1,
            kevent_ring::RecordState::Departed => n.1 += 1,
            kevent_ring::RecordState::Free => {}
        }
    }
    n
}

/// After every child has gone, the reaper frees their records: only the owner's stays.
pub fn assert_only_the_owner_stays_registered(q: &Instance) {
    assert!(
        wait_until(Duration::from_secs(2), || consumer_records(q.ring())
            == (1, 0)),
        "consumer records left behind by dead children: (active, departed) = {:?}",
        consumer_records(q.ring())
    );
}

pub fn ring_report(q: &Instance) -> String {
    let r = q.ring();
    let s = &r.header().stats;
    let (u, c, k) = (r.uidx(), r.cidx(), r.kidx());
    let mut states = String::new();
    for pos in u..k.min(u + 16) {
        states += &format!(" {pos}:{:?}", r.slot_state(pos));
    }
    format!(
        "uidx {u} cidx {c} kidx {k} broken {:?}; posted {} coalesced {} backlogged {} \
         backlog_len {} redelivered {} lost {} registered {}; sleepers {}; consumers \
         (active, departed) {:?}; first slots:{states}",
        r.broken(),
        s.posted.load(Ordering::SeqCst),
        s.coalesced.load(Ordering::SeqCst),
        s.backlogged.load(Ordering::SeqCst),
        s.backlog_len.load(Ordering::SeqCst),
        s.redelivered.load(Ordering::SeqCst),
        s.lost.load(Ordering::SeqCst),
        s.registered.load(Ordering::SeqCst),
        r.sleepers(),
        consumer_records(r),
    )
}

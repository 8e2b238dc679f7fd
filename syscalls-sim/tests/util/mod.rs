//! Shared helpers of the integration tests of `kevent-syscalls` (each test file says
//! `mod util;`): a queue handle that closes itself, kevent builders, bounded waits,
//! claim/commit, statistics and temp dirs here; fds in `fds.rs` (re-exported here);
//! forked children and bounded test bodies in [`proc`]; a ring's pages mapped anew in
//! [`shm`]; a peer's requests reported in words in [`peer`]; the hostile peer of the
//! `hostile_*.rs` tests in [`hostile_peer`]; a separate worker program in [`worker`].
//!
//! Every helper that blocks has a timeout, so a bug fails a test instead of hanging it.

// Each test file compiles this module on its own and uses a different part of it.
#![allow(dead_code)]

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kevent_syscalls::*;

mod fds;
pub mod hostile_peer;
pub mod peer;
pub mod proc;
pub mod shm;
pub mod worker;

pub use fds::*;

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

/// READY of user kevent `id` (through `q`'s `kevent_ctl`), which must succeed.
#[track_caller]
pub fn ready(q: &Instance, id: u64) {
    assert_eq!(
        q.ctl(KEVENT_CTL_READY, &mut [user_ev(id, 0)])
            .expect("READY"),
        0
    );
}

/// Pipes whose read ends a queue watches: see [`pipes_registered`].
pub struct Pipes {
    pub read: Vec<OwnedFd>,
    pub write: Vec<OwnedFd>,
}

/// `n` non-blocking pipes, their read ends added to `q` in one `kevent_ctl(ADD)`
/// (`KEVENT_PIPE_READ`, level-triggered, `user` = the pipe's index).
pub fn pipes_registered(q: &Instance, n: usize) -> Pipes {
    let (read, write): (Vec<OwnedFd>, Vec<OwnedFd>) = (0..n).map(|_| nonblocking_pipe()).unzip();
    let mut evs: Vec<Ukevent> = read
        .iter()
        .enumerate()
        .map(|(i, r)| fd_ev(KEVENT_PIPE, r, KEVENT_PIPE_READ, 0, i as u64))
        .collect();
    assert_eq!(q.ctl(KEVENT_CTL_ADD, &mut evs).expect("ADD pipes"), 0);
    Pipes { read, write }
}

/// A monotonic deadline `d` from now.
pub fn deadline_after(d: Duration) -> kevent_ring::Deadline {
    kevent_ring::Deadline::Monotonic(kevent_ring::monotonic_now() + nanos(d))
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

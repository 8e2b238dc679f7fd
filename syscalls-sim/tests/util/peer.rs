//! A peer's requests, reported to the parent in words of shared memory: the queue's
//! owner with a `kevent_*` handle a forked peer inherits, a child that waits for the
//! parent's word and a parent that waits for the child's, `kevent_ctl` outcomes packed in
//! a word and checked, and the kevents and fd numbers the peers register (tests
//! `peer_*.rs`).

use std::io;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::Duration;

use kevent_syscalls::*;

use super::proc::SharedWords;
use super::{ev, wait_until, TempDir};

/// The cookie of the owner's kevents.
pub const OWNER_COOKIE: u64 = 0x0a0a;
/// The cookie of a peer's kevents.
pub const PEER_COOKIE: u64 = 0x0b0b;
/// How long a child waits for the parent's next word before it gives up.
pub const CHILD_PATIENCE: Duration = Duration::from_secs(30);

/// A queue handle registered for the `kevent_*` calls, closed when the test ends.
pub struct Handle(pub RawFd);

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = kevent_close(self.0);
    }
}

/// The owner's queue, reachable through a `kevent_*` handle (which a forked child
/// inherits), serving its gate on a path as well.
pub fn owner_queue(num: u32, dir: &TempDir) -> (Arc<Instance>, Handle, PathBuf) {
    let q = Instance::create(num, 0).expect("kevent_init");
    let path = dir.0.join("gate.sock");
    q.listen(&path).expect("listen");
    let h = Handle(register(q.clone()));
    (q, h, path)
}

/// In a child: waits until word `i` is nonzero; false if it is not within `limit`.
pub fn child_await(board: &SharedWords, i: usize, limit: Duration) -> bool {
    wait_until(limit, || board.at(i).load(SeqCst) != 0)
}

/// In the parent: the value of word `i` once it is nonzero; fails the test (saying
/// `what` did not happen) if it is not within `limit`.
#[track_caller]
pub fn await_word(board: &SharedWords, i: usize, limit: Duration, what: &str) -> u64 {
    assert!(
        wait_until(limit, || board.at(i).load(SeqCst) != 0),
        "{what}: not within {limit:?}"
    );
    board.at(i).load(SeqCst)
}

// The outcome of one `kevent_ctl` entry, as a child reports it in one word.
pub const SET: u64 = 1 << 63;
pub const CALL_FAILED: u64 = 1 << 62;

/// Packs the outcome of `kevent_ctl` for entry `ev` (the call's result `r`).
pub fn pack(r: &io::Result<usize>, ev: &Ukevent) -> u64 {
    match r {
        Ok(_) => SET | (u64::from(ev.ret_flags) << 32) | u64::from(ev.ret_data[1]),
        Err(e) => SET | CALL_FAILED | u64::from(e.raw_os_error().unwrap_or(-1) as u32),
    }
}

/// A packed outcome in words.
pub fn describe(w: u64) -> String {
    if w & SET == 0 {
        return "nothing reported".into();
    }
    let errno = (w & 0xffff_ffff) as i32;
    if w & CALL_FAILED != 0 {
        return format!(
            "the call itself failed: {}",
            io::Error::from_raw_os_error(errno)
        );
    }
    let flags = ((w >> 32) & 0x3fff_ffff) as u32;
    if flags & KEVENT_RET_BROKEN != 0 {
        format!(
            "the entry failed (ret_flags {flags:#x}): errno {errno}, {}",
            io::Error::from_raw_os_error(errno)
        )
    } else {
        format!("the entry succeeded (ret_flags {flags:#x})")
    }
}

/// The entry succeeded (registered, or done).
#[track_caller]
pub fn assert_entry_ok(w: u64, what: &str) {
    let ok = w & SET != 0 && w & CALL_FAILED == 0 && (w >> 32) as u32 & KEVENT_RET_BROKEN == 0;
    assert!(ok, "{what}: {}", describe(w));
}

/// The entry failed with `errno` (`BROKEN | DONE`, errno in `ret_data[1]`), the call
/// itself succeeded.
#[track_caller]
pub fn assert_entry_failed(w: u64, errno: i32, what: &str) {
    let want = SET | (u64::from(KEVENT_RET_BROKEN | KEVENT_RET_DONE) << 32) | errno as u64;
    assert!(
        w == want,
        "{what}: expected the entry to fail with errno {errno} ({}), but {}",
        io::Error::from_raw_os_error(errno),
        describe(w)
    );
}

/// In a child: `kevent_ctl(h, cmd)` of the one entry `ev`, its outcome [`pack`]ed in word
/// `i` of `board`.
pub fn report_ctl(board: &SharedWords, i: usize, h: RawFd, cmd: u32, ev: Ukevent) {
    let mut evs = [ev];
    let r = kevent_ctl(h, cmd, &mut evs);
    board.at(i).store(pack(&r, &evs[0]), SeqCst);
}

/// A new number of `fd`, the lowest free from `min` up, close-on-exec.
pub fn dup(fd: &impl AsFd, min: RawFd) -> OwnedFd {
    rustix::io::fcntl_dupfd_cloexec(fd, min).expect("F_DUPFD_CLOEXEC")
}

/// A pipe kevent on fd number `n` (read, level-triggered).
pub fn pipe_ev(n: RawFd, user: u64) -> Ukevent {
    ev(KEVENT_PIPE, n as u64, KEVENT_PIPE_READ, 0, user)
}

/// A user kevent with id `id` and cookie `user`.
pub fn user_kevent(id: u64, user: u64) -> Ukevent {
    ev(KEVENT_USER, id, KEVENT_USER_READY, 0, user)
}

/// A small code for the kind of a connect error, for a word (see [`kind_name`]).
pub fn kind_code(e: &io::Error) -> u64 {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => 1,
        io::ErrorKind::WouldBlock => 2,
        io::ErrorKind::TimedOut => 3,
        io::ErrorKind::PermissionDenied => 4,
        io::ErrorKind::BrokenPipe => 5,
        io::ErrorKind::NotFound => 6,
        _ => 7,
    }
}

pub fn kind_name(code: u64) -> &'static str {
    match code {
        1 => "ConnectionRefused",
        2 => "WouldBlock",
        3 => "TimedOut",
        4 => "PermissionDenied",
        5 => "BrokenPipe",
        6 => "NotFound",
        7 => "another error",
        _ => "nothing",
    }
}

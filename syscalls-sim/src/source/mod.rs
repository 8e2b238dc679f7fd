//! Event sources: what turns a registered kevent into readiness the producer sees.
//!
//! Each kind lives in its own file. Every source is either an fd in the producer's epoll
//! set (sockets, pipes, poll masks) or shares per-queue fds (timers: one timerfd per
//! clock; signals; inodes); user events have no fd and become ready only through
//! `KEVENT_CTL_READY`.

pub(crate) mod fd;
pub(crate) mod inode;
pub(crate) mod signal;
pub(crate) mod timer;

/// What backs one registration.
#[derive(Debug)]
pub(crate) enum Source {
    /// The caller's fd (or our duplicate of one received from another process),
    /// registered edge-triggered in the producer's epoll.
    Fd { fd: fd::Watched },
    /// A timer in the queue's heap for its clock (`timer.rs`): next deadline `due`
    /// (ns), `period` (0: once); `armed` while its entry for `due` is in the heap.
    Timer {
        clock: timer::Clock,
        due: u64,
        period: u64,
        armed: bool,
    },
    /// A signal, counted through the queue's signal state.
    Signal { signo: i32, nomask: bool },
    /// An inotify watch descriptor of the queue's inotify instance.
    Inode { wd: i32 },
    /// A user event: no fd.
    User,
}

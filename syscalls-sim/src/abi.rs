//! The numbers of the original kevent ABI (take29/take30), under their C names.
//!
//! Where we extend the ABI, the constant says so (`ext:`); every extension uses bits the
//! original left unused, so a program written for the original still means the same.

pub use kevent_ring::Ukevent;

// --- kevent_ctl commands ---------------------------------------------------------------
/// `KEVENT_CTL_ADD`: register kevents.
pub const KEVENT_CTL_ADD: u32 = 0;
/// `KEVENT_CTL_REMOVE`: unregister kevents (looked up by type and id).
pub const KEVENT_CTL_REMOVE: u32 = 1;
/// `KEVENT_CTL_MODIFY`: change event mask, flags and cookie; re-enables a fired ONESHOT.
pub const KEVENT_CTL_MODIFY: u32 = 2;
/// `KEVENT_CTL_READY`: mark kevents ready (user events); with no entries, wake a waiter.
pub const KEVENT_CTL_READY: u32 = 3;

// --- event types ----------------------------------------------------------------------
/// `KEVENT_SOCKET`: a socket (`id.raw[0]` = fd).
pub const KEVENT_SOCKET: u32 = 0;
/// `KEVENT_INODE`: create/remove events in a directory (`id.raw[0]` = directory fd).
pub const KEVENT_INODE: u32 = 1;
/// `KEVENT_TIMER`: a timer (`id.raw_u64` = period or delay in nanoseconds).
pub const KEVENT_TIMER: u32 = 2;
/// `KEVENT_POLL`: generic poll mask on any pollable fd (`id.raw[0]` = fd).
pub const KEVENT_POLL: u32 = 3;
/// `KEVENT_NAIO`: network AIO. Not provided: `ENOSYS`.
pub const KEVENT_NAIO: u32 = 4;
/// `KEVENT_AIO`: AIO. Not provided: `ENOSYS`.
pub const KEVENT_AIO: u32 = 5;
/// `KEVENT_PIPE`: a pipe or FIFO (`id.raw[0]` = fd).
pub const KEVENT_PIPE: u32 = 6;
/// `KEVENT_SIGNAL`: a signal (`id.raw[0]` = signal number; see [`KEVENT_SIGNAL_NOMASK`]).
pub const KEVENT_SIGNAL: u32 = 7;
/// `KEVENT_POSIX_TIMER`: an absolute real-time timer (`id.raw_u64` = expiry in
/// `CLOCK_REALTIME` nanoseconds since the epoch).
pub const KEVENT_POSIX_TIMER: u32 = 8;
/// `KEVENT_USER` (take30's private user events): made ready by `KEVENT_CTL_READY`.
pub const KEVENT_USER: u32 = 9;
/// `KEVENT_MAX`: types are below this.
pub const KEVENT_MAX: u32 = 10;

// --- request flags (req_flags) -----------------------------------------------------------
/// `KEVENT_REQ_ONESHOT`: deliver once, then stay registered but inactive until MODIFY.
pub const KEVENT_REQ_ONESHOT: u32 = 0x1;
/// `KEVENT_REQ_WAKEUP_ALL`: wake every waiter for this kevent (default: one).
pub const KEVENT_REQ_WAKEUP_ALL: u32 = 0x2;
/// `KEVENT_REQ_ET`: edge-triggered (default: level-triggered).
pub const KEVENT_REQ_ET: u32 = 0x4;
/// `KEVENT_REQ_LAST_CHECK`: re-check readiness before publishing a backlogged entry.
pub const KEVENT_REQ_LAST_CHECK: u32 = 0x8;
/// `KEVENT_REQ_ALWAYS_QUEUE`: queue an event that is ready at ADD instead of returning it.
pub const KEVENT_REQ_ALWAYS_QUEUE: u32 = 0x10;
/// Every request flag this implementation knows.
pub const KEVENT_REQ_ALL: u32 = 0x1f;

// --- return flags (ret_flags) ------------------------------------------------------------
/// `KEVENT_RET_BROKEN`: the request failed; `ret_data[1]` is the errno.
pub const KEVENT_RET_BROKEN: u32 = 0x1;
/// `KEVENT_RET_DONE`: the request was completed (or the event was ready at ADD).
pub const KEVENT_RET_DONE: u32 = 0x2;
/// `KEVENT_RET_COPY_FAILED`: kept for ABI completeness; never set (no user copy here).
pub const KEVENT_RET_COPY_FAILED: u32 = 0x4;
/// ext: `KEVENT_RET_REDELIVERED`: delivered again because the consumer that had claimed
/// it died before committing it.
pub const KEVENT_RET_REDELIVERED: u32 = 0x8;

// --- events ---------------------------------------------------------------------------
// ext: an event of an fd kevent (socket, pipe, poll) carries the poll(2) status flags seen
// (`KEVENT_POLL_POLLIN`, `..._POLLOUT`, `..._POLLPRI`, `..._POLLERR`, `..._POLLHUP`,
// `..._POLLRDHUP`) in `ret_data[1]`, so that a consumer can tell a hang-up or an error
// from data; `ret_data[0]` is 0.

/// `KEVENT_SOCKET_RECV` (also pipes): readable.
pub const KEVENT_SOCKET_RECV: u32 = 0x1;
/// `KEVENT_SOCKET_ACCEPT`: a listening socket has a connection.
pub const KEVENT_SOCKET_ACCEPT: u32 = 0x2;
/// `KEVENT_SOCKET_SEND` (also pipes): writable.
pub const KEVENT_SOCKET_SEND: u32 = 0x4;
/// `KEVENT_PIPE_READ`: the pipe spelling of [`KEVENT_SOCKET_RECV`].
pub const KEVENT_PIPE_READ: u32 = KEVENT_SOCKET_RECV;
/// `KEVENT_PIPE_WRITE`: the pipe spelling of [`KEVENT_SOCKET_SEND`].
pub const KEVENT_PIPE_WRITE: u32 = KEVENT_SOCKET_SEND;
/// `KEVENT_TIMER_FIRED`: the timer expired; `ret_data` counts the expirations (low, high).
pub const KEVENT_TIMER_FIRED: u32 = 0x1;
/// ext: `KEVENT_TIMER_ONCE`: fire once after `id` nanoseconds instead of periodically.
pub const KEVENT_TIMER_ONCE: u32 = 0x100;
/// ext: `KEVENT_TIMER_ABSTIME`: `id` is an absolute `CLOCK_MONOTONIC` time (fires once).
pub const KEVENT_TIMER_ABSTIME: u32 = 0x200;
/// `KEVENT_INODE_CREATE`: an entry was created in the watched directory.
pub const KEVENT_INODE_CREATE: u32 = 0x1;
/// `KEVENT_INODE_REMOVE`: an entry was removed from the watched directory.
pub const KEVENT_INODE_REMOVE: u32 = 0x2;
/// `KEVENT_SIGNAL_DELIVERY`: the signal arrived; `ret_data[0]` counts arrivals.
pub const KEVENT_SIGNAL_DELIVERY: u32 = 0x1;
/// `KEVENT_SIGNAL_NOMASK` (top bit of `id.raw_u64`): deliver the signal only through the
/// queue, not the usual way.
pub const KEVENT_SIGNAL_NOMASK: u64 = 1 << 63;
/// `KEVENT_USER_READY` (ext): the event a user event reports.
pub const KEVENT_USER_READY: u32 = 0x1;

/// `KEVENT_POLL_*` are the `poll(2)` bits.
pub const KEVENT_POLL_POLLIN: u32 = 0x1;
/// `POLLPRI`.
pub const KEVENT_POLL_POLLPRI: u32 = 0x2;
/// `POLLOUT`.
pub const KEVENT_POLL_POLLOUT: u32 = 0x4;
/// `POLLERR`.
pub const KEVENT_POLL_POLLERR: u32 = 0x8;
/// `POLLHUP`.
pub const KEVENT_POLL_POLLHUP: u32 = 0x10;
/// `POLLRDHUP`.
pub const KEVENT_POLL_POLLRDHUP: u32 = 0x2000;

// --- wait flags -----------------------------------------------------------------------
/// `KEVENT_FLAGS_ABSTIME`: the timeout is an absolute `CLOCK_REALTIME` time.
pub const KEVENT_FLAGS_ABSTIME: u32 = 1;

/// Largest `num` a single `kevent_ctl` accepts (the original's `KEVENT_MAX_EVENTS`).
pub const KEVENT_MAX_EVENTS: usize = 4096;
/// Ring size `kevent_init(0, 0)` ("no ring": events only through `kevent_get_events`)
/// uses internally.
pub const KEVENT_DEFAULT_RING: u32 = 1024;

/// A timeout in the kevent sense: `None` waits forever; `Some(ns)` is relative
/// nanoseconds, or absolute `CLOCK_REALTIME` nanoseconds with [`KEVENT_FLAGS_ABSTIME`].
/// `Some(0)` (relative) does not block.
pub type Timeout = Option<u64>;

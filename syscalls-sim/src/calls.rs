//! The five calls of kevent, in Rust shapes that keep the original argument order.
//!
//! Queues are named by a handle that is a real file descriptor number of the process
//! (as `kevent_init` returned an fd): a closed or foreign number gives `EBADF`.
//!
//! # `fork`
//!
//! Guaranteed: a child forked at any moment — also while other threads of the parent are
//! inside `kevent_*` calls — can make `kevent_*` calls, which do not deadlock on state
//! copied mid-operation. The table of handles (a [`HandleTable`], whose docs say how it
//! is never copied held) is the only lock these calls take in the child before it has an
//! attachment of its own. The child's first call on an inherited handle builds its own
//! attachment ([`crate::Instance::for_this_process`]: no lock, fresh state; its gate
//! connection is made on the first `kevent_ctl` and is bounded by a timeout), replacing
//! the parent's entry under the same handle number.

use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, LazyLock};

use kevent_ring::Claim;

use crate::abi::*;
use crate::handles::{HandleTable, PerProcess};
use crate::Instance;

/// Every queue of this process, by handle.
static QUEUES: LazyLock<HandleTable<Instance>> = LazyLock::new(HandleTable::new);

impl PerProcess for Instance {
    fn made_here(&self) -> bool {
        self.is_local()
    }

    fn own_copy(inherited: &Arc<Instance>, _fd: RawFd) -> io::Result<Arc<Instance>> {
        inherited.for_this_process()
    }
}

/// The queue behind handle `fd`, or `EBADF`. In a `fork`ed child the inherited queue is
/// replaced, on first use, by this process's own attachment (same handle number; see
/// the module docs for why this cannot deadlock after a fork).
pub fn instance(fd: RawFd) -> io::Result<Arc<Instance>> {
    QUEUES.get(fd)
}

/// Makes `queue` reachable through its handle; returns the handle.
pub fn register(queue: Arc<Instance>) -> RawFd {
    let fd = queue.handle();
    QUEUES.insert(fd, queue);
    fd
}

/// `kevent_init(num, flags)`: creates a queue whose ring holds `num` entries and returns
/// its handle.
///
/// * `num` is rounded up to a power of two; `0` means "no ring of the caller's choosing"
///   (the original's `ring == NULL`): events are taken with [`kevent_get_events`] from an
///   internal ring of [`KEVENT_DEFAULT_RING`] entries.
///
/// # Errors
/// `EINVAL`: `num == 1`, `num` above 2^24, or unknown `flags` (none are defined).
/// `EMFILE`/`ENOMEM`: out of fds or memory.
pub fn kevent_init(num: u32, flags: u32) -> io::Result<RawFd> {
    Ok(register(Instance::create(num, flags)?))
}

/// `kevent_ctl(fd, cmd, num, arg)`: `num` is `events.len()`.
///
/// * `KEVENT_CTL_ADD`: registers each entry. Entries ready at once (`ret_flags = DONE`,
///   not queued unless `KEVENT_REQ_ALWAYS_QUEUE`) and entries that failed
///   (`BROKEN | DONE`, errno in `ret_data[1]`: `EEXIST` duplicate (type, id), `ENOSYS`
///   unknown type or AIO/NAIO, `EINVAL` bad event mask or flags, `EBADF` bad fd, `EPERM`
///   a file epoll cannot watch) are moved to the front of `events`; returns their
///   number.
/// * `KEVENT_CTL_REMOVE`, `KEVENT_CTL_MODIFY`, `KEVENT_CTL_READY`: each entry is looked
///   up by (type, id) and written back with `DONE`, or `BROKEN | DONE` and `ENOENT` if
///   there is no such kevent. Returns the number that failed. `READY` with no entries
///   wakes one waiter.
///
/// # Errors
/// `EBADF`: `fd` is not a queue. `EINVAL`: unknown `cmd`, or more than
/// [`KEVENT_MAX_EVENTS`] entries. `EOPNOTSUPP`: the queue is attached from another
/// process and has no control channel.
pub fn kevent_ctl(fd: RawFd, cmd: u32, events: &mut [Ukevent]) -> io::Result<usize> {
    instance(fd)?.ctl(cmd, events)
}

/// `kevent_get_events(fd, min, max, timeout, buf, flags)`: waits until at least `min`
/// events are ready (or the timeout passes), copies up to `max` into `buf`, commits them,
/// and returns how many it copied. `min == 0` or a zero relative timeout does not block.
///
/// # Errors
/// `EBADF`: not a queue. `EINVAL`: `max == 0`, `max > buf.len()`, `min > max`, or unknown
/// `flags`. `EINTR`: a signal interrupted the wait. `BrokenPipe`: the queue was closed.
pub fn kevent_get_events(
    fd: RawFd,
    min: u32,
    max: u32,
    timeout: Timeout,
    buf: &mut [Ukevent],
    flags: u32,
) -> io::Result<usize> {
    instance(fd)?.get_events(min, max, timeout, buf, flags)
}

/// `kevent_wait(fd, num, old_uidx, timeout, flags)`: sleeps until an entry is ready, a
/// wake-up is requested (`READY` with no entries), the timeout passes, or `old_uidx` — the
/// user position the caller last saw, as a 64-bit position — is stale; then claims up to
/// `num` entries for this process. The returned [`Claim`] says which positions it claimed
/// (read them with [`Instance::entry`]); an empty claim means timeout, wake-up or stale view.
///
/// Timeouts are relative nanoseconds, or absolute `CLOCK_REALTIME` nanoseconds with
/// [`KEVENT_FLAGS_ABSTIME`]; `None` waits forever.
///
/// # Errors
/// `EBADF`: not a queue. `EINVAL`: `num == 0`, `num` larger than the ring, or unknown
/// flags. `EINTR`: interrupted by a signal. `BrokenPipe`: the queue was closed while
/// waiting. `InvalidData`: the ring was found corrupt.
pub fn kevent_wait(
    fd: RawFd,
    num: u32,
    old_uidx: u64,
    timeout: Timeout,
    flags: u32,
) -> io::Result<Claim> {
    instance(fd)?.wait(num, old_uidx, timeout, flags)
}

/// `kevent_commit(fd, new_uidx, over)`: this process is done with every entry it claimed
/// below the position `over * capacity + new_uidx`. Returns how many it committed; a
/// repeated commit returns 0 (commits are idempotent).
///
/// # Errors
/// `EBADF`: not a queue. `EINVAL`: `new_uidx` not below the capacity, or a position beyond
/// what was published. `EOVERFLOW`: the position is from before the user index's last
/// wrap — a stale commit, never taken for a new wrap (the take29 hole).
pub fn kevent_commit(fd: RawFd, new_uidx: u32, over: u32) -> io::Result<u64> {
    instance(fd)?.commit(new_uidx, over)
}

/// Closes a queue handle (the original's `close(fd)`): stops the producer, wakes every
/// waiter with an error, closes every fd the queue made.
///
/// # Errors
/// `EBADF`: not a queue.
pub fn kevent_close(fd: RawFd) -> io::Result<()> {
    // A parent's queue in a child closes nothing shared and is dropped harmlessly (its
    // Drop knows it is not local).
    QUEUES.remove(fd)?.close();
    Ok(())
}

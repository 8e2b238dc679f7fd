//! The handles C programs hold: for each queue handle (an fd number, as
//! `kevent_syscalls::kevent_init` returns), the queue and this process's ring view.
//!
//! # `fork`
//!
//! A child keeps the handle number and its copy of the ring memory. Its first call on
//! the handle finds an entry made by another process id, and replaces it with one of
//! its own: the queue as `kevent_syscalls::instance` attaches it for this process (its own
//! consumer record), and the same ring memory restarted empty ([`View::restarted`]).
//! The parent's entry is forgotten, never dropped or locked: another parent thread may
//! have held its view's mutex at the fork. The table is a `kevent_syscalls::HandleTable`,
//! whose lock is never copied held (its docs say how).

use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, LazyLock};

use kevent_syscalls::{current_pid, HandleTable, Instance, PerProcess};

use crate::view::View;

/// One handle as this process sees it.
pub(crate) struct Handle {
    /// The queue (this process's attachment of it).
    pub(crate) queue: Arc<Instance>,
    /// The caller's ring, if the handle was made with one.
    pub(crate) view: Option<View>,
    /// The process this entry belongs to.
    pid: u32,
}

impl PerProcess for Handle {
    fn made_here(&self) -> bool {
        self.pid == current_pid()
    }

    fn own_copy(inherited: &Arc<Handle>, fd: RawFd) -> io::Result<Arc<Handle>> {
        Ok(Arc::new(Handle {
            queue: kevent_syscalls::instance(fd)?,
            view: inherited.view.as_ref().map(View::restarted),
            pid: current_pid(),
        }))
    }
}

static HANDLES: LazyLock<HandleTable<Handle>> = LazyLock::new(HandleTable::new);

/// Makes `queue` (already registered with `kevent_syscalls`) and `view` reachable
/// through the queue's handle; returns the handle.
pub(crate) fn insert(queue: Arc<Instance>, view: Option<View>) -> RawFd {
    let fd = queue.handle();
    let handle = Arc::new(Handle {
        queue,
        view,
        pid: current_pid(),
    });
    HANDLES.insert(fd, handle);
    fd
}

/// The handle `fd` of this process, or `EBADF`; in a `fork`ed child, made this
/// process's own on first use (see the module docs).
pub(crate) fn get(fd: RawFd) -> io::Result<Arc<Handle>> {
    HANDLES.get(fd)
}

/// Takes handle `fd` out of the table (`kevent_close`). A parent's entry in a child that
/// never used it is forgotten, not dropped, for the reason in the module docs.
pub(crate) fn remove(fd: RawFd) -> io::Result<()> {
    let gone = HANDLES.remove(fd)?;
    if !gone.made_here() {
        std::mem::forget(gone);
    }
    Ok(())
}

//! The handles C programs hold: for each queue handle (an fd number, as
//! `kevent_syscalls::kevent_init` returns), the queue and this process's ring view.
//!
//! # `fork`
//!
//! A child keeps the handle number and its copy of the ring memory. Its first call on
//! the handle finds an entry made by another process id, and replaces it with one of
//! its own: the queue as `kevent_syscalls::queue` attaches it for this process (its own
//! consumer record), and the same ring memory restarted empty ([`View::restarted`]).
//! The parent's entry is forgotten, never dropped or locked: another parent thread may
//! have held its view's mutex at the fork. The table's own lock is never copied held:
//! `pthread_atfork` handlers take it for writing in the forking thread before the fork
//! and release it on both sides after (as `kevent-syscalls` does for its table).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, LazyLock, RwLock, RwLockWriteGuard};

use kevent_syscalls::Instance;

use crate::boundary::err;
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

type Table = HashMap<RawFd, Arc<Handle>>;

static HANDLES: LazyLock<RwLock<Table>> = LazyLock::new(|| {
    // SAFETY: registers three `extern "C"` functions that never unwind (they only move
    // a guard in and out of a thread-local); pthread_atfork has no other precondition.
    let r = unsafe { libc::pthread_atfork(Some(before_fork), Some(after_fork), Some(after_fork)) };
    // Without the handlers a child forked mid-call could hang: fail loudly instead.
    assert_eq!(r, 0, "libkevent: pthread_atfork failed ({r})");
    RwLock::new(HashMap::new())
});

thread_local! {
    /// The table's write guard, held by the forking thread from `before_fork` until
    /// `after_fork` (in the parent, and in the child, whose only thread is this one).
    static HELD_FOR_FORK: RefCell<Option<RwLockWriteGuard<'static, Table>>> =
        const { RefCell::new(None) };
}

/// `pthread_atfork` prepare handler: no other thread may hold the table across the fork.
extern "C" fn before_fork() {
    let guard = HANDLES.write().unwrap_or_else(|e| e.into_inner());
    let _ = HELD_FOR_FORK.try_with(|held| {
        if let Ok(mut held) = held.try_borrow_mut() {
            *held = Some(guard);
        }
    });
}

/// `pthread_atfork` parent and child handler: releases what `before_fork` took.
extern "C" fn after_fork() {
    let _ = HELD_FOR_FORK.try_with(|held| {
        if let Ok(mut held) = held.try_borrow_mut() {
            held.take();
        }
    });
}

/// Makes `queue` (already registered with `kevent_syscalls`) and `view` reachable
/// through the queue's handle; returns the handle.
pub(crate) fn insert(queue: Arc<Instance>, view: Option<View>) -> RawFd {
    let fd = queue.handle();
    let handle = Arc::new(Handle {
        queue,
        view,
        pid: crate::pid::current(),
    });
    HANDLES
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(fd, handle);
    fd
}

/// The handle `fd` of this process, or `EBADF`; in a `fork`ed child, made this
/// process's own on first use (see the module docs).
pub(crate) fn get(fd: RawFd) -> io::Result<Arc<Handle>> {
    let me = crate::pid::current();
    let found = HANDLES
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&fd)
        .cloned()
        .ok_or_else(|| err(libc::EBADF))?;
    if found.pid == me {
        return Ok(found);
    }
    let mut table = HANDLES.write().unwrap_or_else(|e| e.into_inner());
    let inherited = table.get(&fd).cloned().ok_or_else(|| err(libc::EBADF))?;
    if inherited.pid == me {
        return Ok(inherited); // another thread of this child got here first
    }
    let mine = Arc::new(Handle {
        queue: kevent_syscalls::instance(fd)?,
        view: inherited.view.as_ref().map(View::restarted),
        pid: me,
    });
    if let Some(parents) = table.insert(fd, mine.clone()) {
        std::mem::forget(parents);
    }
    std::mem::forget(inherited);
    Ok(mine)
}

/// Takes handle `fd` out of the table (`kevent_close`). A parent's entry in a child that
/// never used it is forgotten, not dropped, for the reason in the module docs.
pub(crate) fn remove(fd: RawFd) -> io::Result<()> {
    let gone = HANDLES
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&fd)
        .ok_or_else(|| err(libc::EBADF))?;
    if gone.pid != crate::pid::current() {
        std::mem::forget(gone);
    }
    Ok(())
}

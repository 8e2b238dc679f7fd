//! A table of handles — fd numbers, each naming this process's value for it — that a
//! `fork`ed child can use: the table of the five calls (`calls.rs`) and libkevent's for C
//! (`kevent-capi`) are two of these.
//!
//! # `fork`
//!
//! A child forked at any moment — also while other threads of the parent are inside a
//! table's calls — can use the table without deadlocking on state copied mid-operation:
//! the table's lock is never copied held. Fork handlers (`pthread_atfork`, installed with
//! the first table) take every table's lock for writing in the forking thread before the
//! fork — so no other thread is inside one — and release them on both sides after. A
//! value the child inherited is replaced on first use by this process's own
//! ([`PerProcess::own_copy`]) under the same number; the parent's is forgotten, never
//! dropped: another parent thread may have held a lock inside it at the fork. Forks made
//! without the C library's `fork` (`vfork`, `clone`, `posix_spawn`) run no handlers; the
//! child must `exec` (or `_exit`) without using a table.

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, Once, RwLock};

/// A value a handle names, as one process sees it.
pub trait PerProcess: Send + Sync + Sized + 'static {
    /// Whether the calling process made this value (rather than inheriting it across
    /// `fork`).
    fn made_here(&self) -> bool;

    /// This process's own value for handle `fd`, made from the one it inherited.
    ///
    /// # Errors
    /// Whatever making it fails with; the inherited value stays in the table.
    fn own_copy(inherited: &Arc<Self>, fd: RawFd) -> io::Result<Arc<Self>>;
}

/// Handle numbers and this process's value for each (see the module docs for `fork`).
/// Meant for a `static` (`LazyLock<HandleTable<V>>`): its calls take `&'static self`.
pub struct HandleTable<V> {
    map: RwLock<HashMap<RawFd, Arc<V>>>,
    /// Whether the table is in the list the fork handlers lock.
    guarded: Once,
}

impl<V: PerProcess> Default for HandleTable<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: PerProcess> HandleTable<V> {
    /// An empty table.
    pub fn new() -> HandleTable<V> {
        HandleTable {
            map: RwLock::new(HashMap::new()),
            guarded: Once::new(),
        }
    }

    fn map(&'static self) -> &'static RwLock<HashMap<RawFd, Arc<V>>> {
        self.guarded.call_once(|| guard_across_fork(self));
        &self.map
    }

    /// The value of handle `fd`; in a `fork`ed child, made this process's own on first
    /// use.
    ///
    /// # Errors
    /// `EBADF`: no such handle; or what [`PerProcess::own_copy`] failed with.
    pub fn get(&'static self, fd: RawFd) -> io::Result<Arc<V>> {
        let found = self
            .map()
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fd)
            .cloned()
            .ok_or_else(ebadf)?;
        if found.made_here() {
            return Ok(found);
        }
        let mut map = self.map().write().unwrap_or_else(|e| e.into_inner());
        let inherited = map.get(&fd).cloned().ok_or_else(ebadf)?;
        if inherited.made_here() {
            return Ok(inherited); // another thread of this child got here first
        }
        let mine = V::own_copy(&inherited, fd)?;
        if let Some(parents) = map.insert(fd, mine.clone()) {
            // Forgotten, not dropped (module docs); the clones above only count.
            std::mem::forget(parents);
        }
        Ok(mine)
    }

    /// Makes `value` reachable as handle `fd`. What was there is dropped if this process
    /// made it, else forgotten (a parent's value in a child whose fd number was reused).
    pub fn insert(&'static self, fd: RawFd, value: Arc<V>) {
        let old = self
            .map()
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fd, value);
        forget_unless_made_here(old);
    }

    /// Takes handle `fd` out of the table and returns its value — which, if this process
    /// did not make it ([`PerProcess::made_here`]: a parent's, in a child that never used
    /// it), may hold locks copied held at the fork: forget it rather than use it, unless
    /// dropping it takes no lock.
    ///
    /// # Errors
    /// `EBADF`: no such handle.
    pub fn remove(&'static self, fd: RawFd) -> io::Result<Arc<V>> {
        self.map()
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fd)
            .ok_or_else(ebadf)
    }
}

fn ebadf() -> io::Error {
    io::Error::from_raw_os_error(libc::EBADF)
}

fn forget_unless_made_here<V: PerProcess>(value: Option<Arc<V>>) {
    if let Some(v) = value.filter(|v| !v.made_here()) {
        std::mem::forget(v);
    }
}

/// What the fork handlers lock: a table's lock, taken for writing, as a guard to hold.
trait LockForFork: Sync {
    fn lock_for_fork(&'static self) -> Box<dyn Any>;
}

impl<V: PerProcess> LockForFork for HandleTable<V> {
    fn lock_for_fork(&'static self) -> Box<dyn Any> {
        Box::new(self.map.write().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Every table of the process, for the fork handlers.
static TABLES: Mutex<Vec<&'static dyn LockForFork>> = Mutex::new(Vec::new());

thread_local! {
    /// The guards the forking thread holds from `before_fork` until `after_fork` (in the
    /// parent, and in the child, whose only thread is this one).
    static HELD_FOR_FORK: RefCell<Vec<Box<dyn Any>>> = const { RefCell::new(Vec::new()) };
}

fn guard_across_fork(table: &'static dyn LockForFork) {
    static HANDLERS: Once = Once::new();
    HANDLERS.call_once(|| {
        // SAFETY: registers two `extern "C"` functions that never unwind (they take locks
        // and move guards in and out of a thread-local, ignoring poison and re-entry);
        // pthread_atfork has no other precondition.
        let r =
            unsafe { libc::pthread_atfork(Some(before_fork), Some(after_fork), Some(after_fork)) };
        // Without the handlers a child forked mid-call could hang: fail loudly instead.
        assert_eq!(r, 0, "kevent: pthread_atfork failed ({r})");
    });
    TABLES.lock().unwrap_or_else(|e| e.into_inner()).push(table);
}

/// `pthread_atfork` prepare handler: no other thread may hold a table across the fork.
extern "C" fn before_fork() {
    let tables = TABLES.lock().unwrap_or_else(|e| e.into_inner());
    let mut guards: Vec<Box<dyn Any>> = tables.iter().map(|t| t.lock_for_fork()).collect();
    // The list's own lock too: a thread adding a table must not be copied mid-push.
    guards.push(Box::new(tables));
    let _ = HELD_FOR_FORK.try_with(|held| {
        if let Ok(mut held) = held.try_borrow_mut() {
            held.extend(guards);
        }
    });
}

/// `pthread_atfork` parent and child handler: releases what `before_fork` took.
extern "C" fn after_fork() {
    let _ = HELD_FOR_FORK.try_with(|held| {
        if let Ok(mut held) = held.try_borrow_mut() {
            held.clear();
        }
    });
}

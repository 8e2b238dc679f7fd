//! The calling process's id without a system call per look.
//!
//! Every call asks "is this queue value mine, or a `fork`ed parent's?" (`Instance::is_local`),
//! and glibc no longer caches `getpid`: three system calls per event on the hot path. The
//! id is cached here and forgotten in a `fork`ed child by a `pthread_atfork` handler,
//! registered before the first value is cached — so a child never sees its parent's id.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;

/// The cached id; 0 = not known (never a process's id).
static PID: AtomicU32 = AtomicU32::new(0);

/// `pthread_atfork` child handler: the child is another process.
extern "C" fn forget() {
    PID.store(0, Ordering::Relaxed);
}

/// This process's id (`getpid`), cached, and never a parent's in a `fork`ed child.
pub fn current() -> u32 {
    let pid = PID.load(Ordering::Relaxed);
    if pid != 0 {
        return pid;
    }
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // SAFETY: registers an `extern "C"` function that never unwinds (one atomic
        // store); pthread_atfork has no other precondition.
        let r = unsafe { libc::pthread_atfork(None, None, Some(forget)) };
        // Without the handler a child would take its parent's queues for its own.
        assert_eq!(r, 0, "kevent: pthread_atfork failed ({r})");
    });
    // Read after the handler is in place: a fork from now on resets the child's copy,
    // whenever the store below lands in the parent.
    let pid = std::process::id();
    PID.store(pid, Ordering::Relaxed);
    pid
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_forked_child_sees_its_own_id() {
        let parent = super::current();
        assert_eq!(parent, std::process::id());
        // SAFETY: the child only reads two ids and `_exit`s; it never returns into the
        // test harness.
        let child = unsafe { libc::fork() };
        assert!(child >= 0);
        if child == 0 {
            let ok = super::current() == std::process::id() && super::current() != parent;
            // SAFETY: ends the child without running the parent's destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child, into a valid int.
        unsafe { libc::waitpid(child, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }
}

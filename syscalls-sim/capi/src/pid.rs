//! This process's id without a system call per look, forgotten in a `fork`ed child (the
//! same scheme as `kevent-syscalls`' own, which is private to that crate): a handle made
//! by another process id is the parent's, and the child must attach before using it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;

/// The cached id; 0 = not known (never a process's id).
static PID: AtomicU32 = AtomicU32::new(0);

/// `pthread_atfork` child handler: the child is another process.
extern "C" fn forget() {
    PID.store(0, Ordering::Relaxed);
}

/// This process's id.
pub(crate) fn current() -> u32 {
    let pid = PID.load(Ordering::Relaxed);
    if pid != 0 {
        return pid;
    }
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // SAFETY: registers an `extern "C"` function that never unwinds (one atomic
        // store); pthread_atfork has no other precondition.
        let r = unsafe { libc::pthread_atfork(None, None, Some(forget)) };
        // Without the handler a child would take its parent's handles for its own.
        assert_eq!(r, 0, "libkevent: pthread_atfork failed ({r})");
    });
    // Read after the handler is in place: a fork from now on resets the child's copy.
    let pid = std::process::id();
    PID.store(pid, Ordering::Relaxed);
    pid
}

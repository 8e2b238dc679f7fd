//! Forking workers, signals, supervision. Shared by `ping_kevent.rs` and `ping_epoll.rs`.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static STOP: AtomicBool = AtomicBool::new(false);

/// Whether this worker has been told to stop (`SIGTERM`).
pub fn stopping() -> bool {
    STOP.load(Ordering::Relaxed)
}

extern "C" fn on_sigterm(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a sigset_t we own; with valid
    // signal numbers they cannot fail.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGCHLD] {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

/// Blocks `SIGINT`, `SIGTERM` and `SIGCHLD` in the calling thread (and in the threads
/// it starts later), for [`supervise`] to take them with `sigwaitinfo`. Call it while
/// the process is single-threaded.
pub fn block_signals() -> io::Result<libc::sigset_t> {
    let set = signal_set();
    // SAFETY: pthread_sigmask with a valid set and no old-set pointer.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(set)
}

/// Forks a worker that runs `body` and `_exit`s with its result. The child dies with
/// the parent (`PR_SET_PDEATHSIG`), stops on `SIGTERM`, ignores `SIGINT` (the parent
/// handles Ctrl-C and stops it) and `SIGPIPE`.
pub fn fork_worker(body: impl FnOnce() -> i32) -> io::Result<libc::pid_t> {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the parent is single-threaded when it forks its workers (the queue's
    // threads start after the last fork), so the child inherits no lock held by
    // another thread; the child never returns from this function (it `_exit`s).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid > 0 {
        return Ok(pid);
    }
    // SAFETY: prctl, getppid and sigaction only change or read this process's own
    // state; the handler only stores to an atomic (async-signal-safe); the set is a
    // valid, initialised sigset_t.
    let ok = unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_sigterm as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut act.sa_mask);
        // No SA_RESTART: a wait is interrupted, and the loop sees STOP sooner.
        libc::sigaction(libc::SIGTERM, &act, std::ptr::null_mut());
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        let set = signal_set();
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::getppid() == parent
    };
    let code = if ok { body() } else { 3 }; // the parent died before PDEATHSIG was set
                                            // SAFETY: `_exit` ends the child at once without running the parent's atexit
                                            // handlers or destructors; it is always sound to call.
    unsafe { libc::_exit(code) }
}

fn describe(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        format!("exited with status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("was killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("ended ({status:#x})")
    }
}

/// Reaps the workers that have ended; reports them unless `quiet`.
fn reap(name: &str, pids: &mut Vec<libc::pid_t>, quiet: bool) {
    loop {
        let mut status = 0;
        // SAFETY: waitpid on any child of ours, without blocking, into a valid int.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        if let Some(i) = pids.iter().position(|&p| p == pid) {
            pids.swap_remove(i);
            if !quiet {
                eprintln!(
                    "{name}: worker pid {pid} {}; {} left",
                    describe(status),
                    pids.len()
                );
            }
        }
    }
}

/// `SIGTERM` to every worker; `SIGKILL` to those still running after 2 s; reaps all.
pub fn stop_workers(pids: &mut Vec<libc::pid_t>) {
    for &pid in pids.iter() {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let end = Instant::now() + Duration::from_secs(2);
    while !pids.is_empty() && Instant::now() < end {
        reap("", pids, true);
        std::thread::sleep(Duration::from_millis(5));
    }
    for &pid in pids.iter() {
        // SAFETY: killing and reaping our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
    pids.clear();
}

/// The parent's loop: reports workers that end; on `SIGINT`/`SIGTERM` stops the
/// others and returns 0; returns 1 when no worker is left. The signals must be
/// blocked ([`block_signals`]).
pub fn supervise(name: &str, set: &libc::sigset_t, pids: &mut Vec<libc::pid_t>) -> i32 {
    loop {
        // SAFETY: sigwaitinfo with a valid set and no info pointer.
        let sig = unsafe { libc::sigwaitinfo(set, std::ptr::null_mut()) };
        match sig {
            libc::SIGINT | libc::SIGTERM => {
                reap(name, pids, false);
                stop_workers(pids);
                return 0;
            }
            libc::SIGCHLD => {
                reap(name, pids, false);
                if pids.is_empty() {
                    eprintln!("{name}: no worker left; exiting");
                    return 1;
                }
            }
            _ => {} // EINTR
        }
    }
}

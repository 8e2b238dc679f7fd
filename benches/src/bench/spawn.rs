//! Starting the consumers of a run — threads of the harness, or forked processes — each
//! running the backend's consumer loop (`consumer_body`), and reaping the processes, on
//! a signal too. The consumers' own context is `consumer.rs`.

use std::io;
use std::os::fd::OwnedFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

use super::backend::BackendRun;
use super::consumer::*;
use super::metrics::{Counters, Histogram, Usage, UsageOf};

/// What every consumer shares: the run's memory and settings.
pub struct ConsumerSetup<'a> {
    /// The backend's per-run state.
    pub run: &'a dyn BackendRun,
    /// The run's shared memory.
    pub shared: &'a RunShared,
    /// Read ends of the streams.
    pub fds: &'a [OwnedFd],
    /// Number of consumers.
    pub consumers: usize,
    /// Notifications per wait.
    pub batch: usize,
    /// Longest single wait.
    pub wait_timeout: Duration,
    /// Whether to measure write-to-read latency.
    pub paced: bool,
    /// Longest wait for the window to open.
    pub gate_timeout: Duration,
}

/// The body of consumer `index`, thread or process: per-consumer setup, ready, wait for
/// the window, run the loop, publish. Never panics (a panic is caught and published).
pub fn consumer_body(setup: &ConsumerSetup<'_>, index: usize, who: UsageOf) {
    let slot = &setup.shared.slots[index];
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut lp = match setup.run.consumer(index) {
            Ok(lp) => lp,
            Err(e) => return slot.fail(1, &e),
        };
        slot.state.store(SLOT_READY, Ordering::Release);
        if !wait_for_go(setup.shared.phase(), setup.gate_timeout) {
            slot.publish(&Counters::default(), &Usage::default(), &Histogram::new());
            slot.state.store(SLOT_DONE, Ordering::Release);
            return;
        }
        let mut ctx = ConsumerCtx {
            index,
            consumers: setup.consumers,
            fds: setup.fds,
            phase: setup.shared.phase(),
            stamps: setup.paced.then_some(&setup.shared.stamps[..]),
            batch: setup.batch,
            wait_timeout: setup.wait_timeout,
            counters: Counters::default(),
            latency: Histogram::new(),
        };
        let before = Usage::now(who);
        let res = lp.run(&mut ctx);
        let used = Usage::now(who).since(before);
        drop(lp);
        slot.publish(&ctx.counters, &used, &ctx.latency);
        match res {
            Ok(()) => slot.state.store(SLOT_DONE, Ordering::Release),
            Err(e) => slot.fail(2, &e),
        }
    }));
    if result.is_err() {
        slot.fail(3, &io::Error::other("panic"));
    }
}

/// Most consumer processes alive at once (`--consumers` is at most 256).
const MAX_LIVE: usize = 256;

/// The pids of the consumer processes alive now (0 = a free entry), for the handler of
/// [`reap_consumers_on_signal`]: filled by [`fork_consumers`], emptied by [`reap`].
static LIVE: [AtomicI32; MAX_LIVE] = [const { AtomicI32::new(0) }; MAX_LIVE];

/// Signals whose handler [`reap_consumers_on_signal`] installed (a forked child restores
/// their default action).
static HANDLED: [AtomicBool; 2] = [const { AtomicBool::new(false) }; 2];

/// The signals that end a harness run: Ctrl-C and `kill`.
const CLEANUP_SIGNALS: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

fn register_live(pid: libc::pid_t) -> bool {
    LIVE.iter().any(|slot| {
        slot.compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    })
}

/// Takes `pid` off the live list; false if the signal handler took it first (it then
/// kills and reaps it).
fn unregister_live(pid: libc::pid_t) -> bool {
    LIVE.iter().any(|slot| {
        slot.compare_exchange(pid, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    })
}

/// The handler of SIGINT and SIGTERM: kills and reaps every live consumer process, then
/// ends the process by the same signal (its default action).
///
/// Only async-signal-safe work: lock-free atomics, `kill`, `waitpid`, `signal`, `raise`.
extern "C" fn kill_consumers_and_die(sig: libc::c_int) {
    kill_and_reap_consumers();
    // SAFETY: `signal` and `raise` are async-signal-safe. `sig` is blocked while this
    // handler runs: it is delivered, with its default action (terminate), on return.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Kills and reaps every consumer process alive now, for a harness about to end (the
/// signal handler above; see also [`stop_consumers`]). Only async-signal-safe work:
/// lock-free atomics, `kill`, `waitpid`.
fn kill_and_reap_consumers() {
    for slot in &LIVE {
        let pid = slot.swap(0, Ordering::SeqCst);
        if pid > 0 {
            // SAFETY: `pid` is a child of ours not yet reaped (`reap` takes a pid off the
            // list before it reaps it), so the number cannot have been reused; `kill`
            // and `waitpid` are async-signal-safe, and a null status pointer is allowed.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// Makes SIGINT and SIGTERM kill and reap the consumer processes of the run in progress
/// before the process ends (by that signal, so the shell sees the usual status). A
/// signal ignored when this is called (e.g. SIGINT of a background job) stays ignored.
/// Consumer processes inherit neither handler, and die with the harness even when it
/// is killed by SIGKILL (see [`fork_consumers`]).
///
/// For the `kevent bench` command: a program using the harness as a library keeps its
/// own signal dispositions unless it calls this.
pub fn reap_consumers_on_signal() -> io::Result<()> {
    for (i, &sig) in CLEANUP_SIGNALS.iter().enumerate() {
        // SAFETY: `sigaction` with a null new action only reads the current one into
        // `old`, a valid out-pointer to a zeroed (valid) `sigaction`.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: see above.
        if unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if old.sa_sigaction == libc::SIG_IGN {
            continue;
        }
        // SAFETY: a zeroed `sigaction` is valid; we set a plain handler (no SA_SIGINFO)
        // that only makes async-signal-safe calls, with an empty extra mask.
        let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
        act.sa_sigaction = kill_consumers_and_die as extern "C" fn(libc::c_int) as usize;
        act.sa_flags = libc::SA_RESTART;
        // SAFETY: `act.sa_mask` is a valid sigset_t to initialise; `act` is a valid
        // action and a null old-action pointer is allowed.
        let rc = unsafe {
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(sig, &act, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        HANDLED[i].store(true, Ordering::SeqCst);
    }
    Ok(())
}

/// In a freshly forked consumer: the default action back for the signals the harness
/// handles (the parent's handler and its list of pids are not the child's), and death
/// with the parent: SIGKILL when the harness ends, however it ends.
fn child_signal_setup(parent: libc::pid_t) {
    for (i, &sig) in CLEANUP_SIGNALS.iter().enumerate() {
        if HANDLED[i].load(Ordering::SeqCst) {
            // SAFETY: setting the default action of a signal is always sound.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
    // Blocked by the parent around the fork (a child has no pending signals of its
    // parent's).
    block_cleanup_signals(false);
    // SAFETY: PR_SET_PDEATHSIG takes a signal number; `getppid` and `_exit` are always
    // sound. If the parent died before the prctl, the child was already re-parented and
    // leaves at once, as the death signal would have made it.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        if libc::getppid() != parent {
            libc::_exit(1);
        }
    }
}

/// Forks one child process per consumer; each runs [`consumer_body`] and `_exit`s.
///
/// Must be called while the harness is single-threaded (but for threads that hold no
/// lock, such as the stdout watch of `kevent bench`). Each child
/// gets SIGKILL when the thread that forked it ends (`PR_SET_PDEATHSIG`): call this from
/// the thread that lives as long as the run (the harness calls it from the main thread),
/// and no consumer outlives a harness that was killed. The children are on the list that
/// [`reap_consumers_on_signal`]'s handler kills and reaps until [`reap`] reaps them.
pub fn fork_consumers(setup: &ConsumerSetup<'_>) -> io::Result<Vec<libc::pid_t>> {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: `getpid` is always sound.
    let parent = unsafe { libc::getpid() };
    let mut pids = Vec::with_capacity(setup.consumers);
    for index in 0..setup.consumers {
        // From the fork until the child is on the list, a clean-up would miss it: the
        // signals wait (delivered when unblocked, the child listed), and so does
        // `stop_consumers` (or, if it came first, no child is forked).
        block_cleanup_signals(true);
        FORKING.store(true, Ordering::SeqCst);
        let pid = if STOPPING.load(Ordering::SeqCst) {
            -2
        } else {
            // SAFETY: the harness is single-threaded here (writer and helper threads
            // start later; `kevent bench`'s stdout watch, `cli::out::ReaderWatch`, waits
            // in `poll` holding no lock), so the child inherits no lock held by another
            // thread; it runs only the consumer body and leaves with `_exit`.
            unsafe { libc::fork() }
        };
        if pid == 0 {
            child_signal_setup(parent);
            consumer_body(setup, index, UsageOf::Process);
            // SAFETY: `_exit` ends the child without running the parent's atexit handlers
            // or destructors; always sound to call.
            unsafe { libc::_exit(0) };
        }
        if pid > 0 {
            pids.push(pid);
            // With more than MAX_LIVE at once, a child off the list is still reaped by
            // `reap` and dies with the harness; only the signal handler does not know it.
            let _ = register_live(pid);
        }
        let err = (pid < 0).then(|| match pid {
            -2 => io::Error::other("the harness is stopping"),
            _ => io::Error::last_os_error(),
        });
        FORKING.store(false, Ordering::SeqCst);
        block_cleanup_signals(false);
        if let Some(err) = err {
            setup.shared.set_phase(PHASE_STOP);
            let _ = reap(&pids, Duration::from_secs(5));
            return Err(err);
        }
    }
    Ok(pids)
}

/// Set while [`fork_consumers`] forks a child and lists it.
static FORKING: AtomicBool = AtomicBool::new(false);
/// Set by [`stop_consumers`]: no more children are forked.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Blocks (or unblocks) SIGINT and SIGTERM in the calling thread.
fn block_cleanup_signals(block: bool) {
    // SAFETY: a zeroed `sigset_t` is valid to initialise with `sigemptyset`; the set and
    // the null old-set pointer are valid arguments of `pthread_sigmask`.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in CLEANUP_SIGNALS {
            libc::sigaddset(&mut set, sig);
        }
        let how = if block {
            libc::SIG_BLOCK
        } else {
            libc::SIG_UNBLOCK
        };
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

/// For a harness about to end, from a thread other than the one that forks (`kevent
/// bench`'s stdout watch): no consumer process is forked from now on, and every one
/// alive is killed and reaped, a child being forked right now included. Lock-free.
pub fn stop_consumers() {
    STOPPING.store(true, Ordering::SeqCst);
    while FORKING.load(Ordering::SeqCst) {
        std::hint::spin_loop();
    }
    kill_and_reap_consumers();
}

/// Waits for the children (bounded by `timeout`, then `SIGKILL`); `Err` if any did not exit
/// cleanly.
pub fn reap(pids: &[libc::pid_t], timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut problems = Vec::new();
    for &pid in pids {
        let mut status = 0;
        loop {
            if exited(pid) {
                // Off the handler's list before it is reaped, so that the handler never
                // signals a pid that may have been reused. If the handler took it first,
                // it reaps it, and the process is ending anyway.
                unregister_live(pid);
                // SAFETY: `pid` is our own child, exited; `status` is a valid out-pointer.
                let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
                if rc == pid && !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
                    problems.push(format!("consumer process {pid} ended with status {status}"));
                }
                break;
            }
            if Instant::now() > deadline {
                unregister_live(pid);
                // SAFETY: signalling and reaping our own child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                problems.push(format!("consumer process {pid} killed after {timeout:?}"));
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// True once child `pid` has exited (or cannot be waited for: not our child, or already
/// reaped), without reaping it.
fn exited(pid: libc::pid_t) -> bool {
    // SAFETY: a zeroed `siginfo_t` is a valid out-buffer; `waitid` with WNOWAIT only
    // looks at our child `pid`, leaving it waitable.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let rc = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        rc != 0 || info.si_pid() != 0
    }
}

//! Signals as kevents.
//!
//! Every registered signal gets our handler, which counts the arrival and pokes a
//! process-wide eventfd (both async-signal-safe); each queue watching a signal turns the
//! count into its kevent's entry. The handler runs on whichever thread the kernel picks,
//! so signals sent to a thread (`raise`, `pthread_kill`) and to the process alike arrive.
//!
//! * With `KEVENT_SIGNAL_NOMASK` the signal is delivered *only* through the queue: the
//!   handler does not pass it on. (A `signalfd` cannot do this: it sees only signals
//!   pending for the thread that reads it or for the whole process, and only if every
//!   thread blocks them.)
//! * Without it, the signal is still delivered the usual way: after counting, the handler
//!   calls the handler that was installed before ours, if there was one (a default action
//!   of "terminate" is replaced by counting — the queue is now the signal's consumer).
//!
//! Arrivals are counted into the kevent's entry (`ret_data[0]`), never dropped; the
//! kernel itself merges repeated standard signals, as it always does.
//!
//! The process's signal dispositions are borrowed, not taken: when the last signal kevent
//! on a signal goes (REMOVE, or its queue closes) the action that was installed before
//! ours comes back. SIGKILL and SIGSTOP cannot be caught, and the synchronous fault
//! signals (SIGSEGV, SIGBUS, SIGILL, SIGFPE) must keep crashing the thread that faulted —
//! counting one and returning would re-run the faulting instruction for ever — so those
//! are refused (`EINVAL`).

use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::epoll;

const NSIG: usize = 65;

/// Arrivals per signal, counted by our handler (process-wide).
static COUNTS: [AtomicU64; NSIG] = [const { AtomicU64::new(0) }; NSIG];
/// The previous handler of each signal and whether it took `SA_SIGINFO` arguments.
static OLD_HANDLER: [AtomicUsize; NSIG] = [const { AtomicUsize::new(0) }; NSIG];
static OLD_SIGINFO: [AtomicBool; NSIG] = [const { AtomicBool::new(false) }; NSIG];
/// Per signal: the action that was installed before ours (while ours is), and how many
/// signal kevents (in every queue of the process) use it.
static INSTALLED: Mutex<[Option<Borrowed>; NSIG]> = Mutex::new([None; NSIG]);

/// A signal whose disposition we borrowed.
#[derive(Clone, Copy)]
struct Borrowed {
    /// The previous action, restored when `users` drops to zero.
    old: libc::sigaction,
    users: u32,
}

// SAFETY: a sigaction is plain data (a function address, flags and a signal mask); it
// is only read or written under the INSTALLED mutex.
unsafe impl Send for Borrowed {}
/// How many NOMASK kevents (in any queue) hold each signal: while non-zero the handler
/// does not pass the signal on.
static SWALLOW: [AtomicU32; NSIG] = [const { AtomicU32::new(0) }; NSIG];
/// The eventfd our handler pokes; every queue with handler-counted signals watches it.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let s = sig as usize;
    if s >= NSIG {
        return;
    }
    COUNTS[s].fetch_add(1, Ordering::Relaxed);
    let fd = WAKE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        // Not `WakeFd::ring`: in a signal handler only async-signal-safe calls, and the fd
        // is a plain number in a static (an eventfd private to this process).
        let one = 1u64.to_ne_bytes();
        // SAFETY: write(2) is async-signal-safe; the buffer is on our stack.
        let _ = unsafe { libc::write(fd, one.as_ptr().cast(), 8) };
    }
    if SWALLOW[s].load(Ordering::Relaxed) > 0 {
        return;
    }
    let old = OLD_HANDLER[s].load(Ordering::Relaxed);
    if old == libc::SIG_DFL || old == libc::SIG_IGN || old == on_signal as *const () as usize {
        return;
    }
    if OLD_SIGINFO[s].load(Ordering::Relaxed) {
        // SAFETY: `old` was the sa_sigaction of a handler installed with SA_SIGINFO, so it
        // has this signature; we pass through the arguments the kernel gave us.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(old) };
        f(sig, info, ctx);
    } else {
        // SAFETY: `old` was a plain sa_handler, which takes the signal number only.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(old) };
        f(sig);
    }
}

/// Validates a signal kevent id; returns `(signo, nomask)`.
pub(crate) fn parse_id(id: u64) -> Result<(i32, bool), i32> {
    let nomask = id & crate::abi::KEVENT_SIGNAL_NOMASK != 0;
    let signo = (id & !crate::abi::KEVENT_SIGNAL_NOMASK) as i64;
    let refused = [
        libc::SIGKILL,
        libc::SIGSTOP,
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGILL,
        libc::SIGFPE,
    ];
    if !(1..NSIG as i64).contains(&signo) || refused.iter().any(|&r| i64::from(r) == signo) {
        return Err(libc::EINVAL);
    }
    Ok((signo as i32, nomask))
}

/// Blocks every blockable signal in the calling thread (the producer thread does this
/// first, so signals reach the queue or the program's own threads, never it).
pub(crate) fn block_all_in_this_thread() {
    // SAFETY: sigfillset initialises the set; pthread_sigmask only changes this thread's
    // mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// The per-queue side of signal handling.
#[derive(Debug, Default)]
pub(crate) struct Signals {
    /// Whether the process-wide wake eventfd is in our epoll set.
    watching_handler: bool,
    /// Per watched signal: the value of `COUNTS[s]` already accounted for, and how many
    /// of this queue's kevents on it are NOMASK.
    seen: Vec<(i32, u64, u32)>,
    /// Per signal: this queue's kevents on it (each holds one use of the disposition).
    users: Vec<(i32, u32)>,
}

impl Signals {
    /// Starts delivering `signo` to this queue.
    pub(crate) fn add(
        &mut self,
        epoll_fd: BorrowedFd<'_>,
        signo: i32,
        nomask: bool,
        handler_token: u64,
    ) -> Result<(), i32> {
        borrow_disposition(signo)?;
        match self.users.iter_mut().find(|(s, _)| *s == signo) {
            Some((_, n)) => *n += 1,
            None => self.users.push((signo, 1)),
        }
        if !self.watching_handler {
            // WAKE_FD is set once by install_handler and never closed.
            let fd = WAKE_FD.load(Ordering::Acquire);
            epoll::add(
                epoll_fd,
                fd,
                handler_token,
                (libc::EPOLLIN | libc::EPOLLET) as u32,
            )?;
            self.watching_handler = true;
        }
        let entry = match self.seen.iter_mut().find(|(s, _, _)| *s == signo) {
            Some(e) => e,
            None => {
                self.seen
                    .push((signo, COUNTS[signo as usize].load(Ordering::Relaxed), 0));
                self.seen.last_mut().expect("just pushed")
            }
        };
        if nomask {
            entry.2 += 1;
            SWALLOW[signo as usize].fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Stops delivering one kevent's worth of `signo` (`nomask` as it was added).
    pub(crate) fn remove(&mut self, signo: i32, nomask: bool, last: bool) {
        if let Some(i) = self.users.iter().position(|(s, _)| *s == signo) {
            self.users[i].1 -= 1;
            if self.users[i].1 == 0 {
                self.users.swap_remove(i);
            }
            return_disposition(signo, 1);
        }
        if let Some(i) = self.seen.iter().position(|(s, _, _)| *s == signo) {
            if nomask && self.seen[i].2 > 0 {
                self.seen[i].2 -= 1;
                SWALLOW[signo as usize].fetch_sub(1, Ordering::Relaxed);
            }
            if last {
                let (_, _, n) = self.seen.swap_remove(i);
                SWALLOW[signo as usize].fetch_sub(n, Ordering::Relaxed);
            }
        }
    }

    /// Arrivals of each watched signal since the last call.
    pub(crate) fn handler_deltas(&mut self) -> Vec<(i32, u64)> {
        self.seen
            .iter_mut()
            .filter_map(|(s, last, _)| {
                let now = COUNTS[*s as usize].load(Ordering::Relaxed);
                let delta = now.wrapping_sub(*last);
                *last = now;
                (delta > 0).then_some((*s, delta))
            })
            .collect()
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        // A closed queue no longer swallows its NOMASK signals.
        for (s, _, n) in self.seen.drain(..) {
            SWALLOW[s as usize].fetch_sub(n, Ordering::Relaxed);
        }
        // The kevents the queue still had give their signals back.
        for (s, n) in std::mem::take(&mut self.users) {
            return_disposition(s, n);
        }
    }
}

/// Installs our handler for `signo` (once per process; the previous action is kept) and
/// counts one more user of it.
fn borrow_disposition(signo: i32) -> Result<(), i32> {
    let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    if WAKE_FD.load(Ordering::Acquire) < 0 {
        let fd = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )
        .map_err(|e| e.raw_os_error())?;
        // Leaked on purpose: the handler may run at any time for the rest of the process.
        WAKE_FD.store(std::os::fd::IntoRawFd::into_raw_fd(fd), Ordering::Release);
    }
    let s = signo as usize;
    if let Some(b) = installed[s].as_mut() {
        b.users += 1;
        return Ok(());
    }
    // SAFETY: we build a zeroed sigaction (a valid C value), fill in our handler, and let
    // the kernel write the previous action into `old`.
    let old = unsafe {
        let mut new: libc::sigaction = std::mem::zeroed();
        new.sa_sigaction = on_signal as *const () as usize;
        new.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigemptyset(&mut new.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(signo, &new, &mut old) != 0 {
            return Err(io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EINVAL));
        }
        old
    };
    OLD_SIGINFO[s].store(old.sa_flags & libc::SA_SIGINFO != 0, Ordering::Relaxed);
    OLD_HANDLER[s].store(old.sa_sigaction, Ordering::Relaxed);
    installed[s] = Some(Borrowed { old, users: 1 });
    Ok(())
}

/// `n` users of `signo` are gone; the last one puts the previous action back.
fn return_disposition(signo: i32, n: u32) {
    let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    let s = signo as usize;
    let Some(b) = installed[s].as_mut() else {
        return;
    };
    b.users = b.users.saturating_sub(n);
    if b.users > 0 {
        return;
    }
    let old = b.old;
    installed[s] = None;
    // SAFETY: `old` is the action the kernel gave back when we installed ours: a valid
    // sigaction to reinstall.
    unsafe {
        libc::sigaction(signo, &old, std::ptr::null_mut());
    }
}

//! Signals as kevents.
//!
//! * With `KEVENT_SIGNAL_NOMASK` the signal is delivered *only* through the queue: it is
//!   blocked (in the calling thread and the producer thread, which blocks every signal) and
//!   read from the queue's `signalfd`. As with `signalfd(2)`, a program must block it in
//!   its other threads too, or the kernel may deliver it there the usual way.
//! * Without it, the signal is still delivered the usual way: we install a handler that
//!   counts the arrival, pokes a process-wide eventfd (both async-signal-safe) and then
//!   calls the handler that was installed before ours, if there was one (a default action
//!   of "terminate" is replaced by counting — the queue is now the signal's consumer).
//!
//! Arrivals are counted into the kevent's entry (`ret_data[0]`), never dropped; the
//! kernel itself merges repeated standard signals, as it always does.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use rustix::event::epoll;

const NSIG: usize = 65;

/// Arrivals per signal, counted by our handler (process-wide).
static COUNTS: [AtomicU64; NSIG] = [const { AtomicU64::new(0) }; NSIG];
/// The previous handler of each signal and whether it took `SA_SIGINFO` arguments.
static OLD_HANDLER: [AtomicUsize; NSIG] = [const { AtomicUsize::new(0) }; NSIG];
static OLD_SIGINFO: [AtomicBool; NSIG] = [const { AtomicBool::new(false) }; NSIG];
static INSTALLED: Mutex<[bool; NSIG]> = Mutex::new([false; NSIG]);
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
        let one = 1u64.to_ne_bytes();
        // SAFETY: write(2) is async-signal-safe; the buffer is on our stack.
        let _ = unsafe { libc::write(fd, one.as_ptr().cast(), 8) };
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
    if !(1..NSIG as i64).contains(&signo)
        || signo == i64::from(libc::SIGKILL)
        || signo == i64::from(libc::SIGSTOP)
    {
        return Err(libc::EINVAL);
    }
    Ok((signo as i32, nomask))
}

fn sigset_of(signos: &[i32]) -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set it is given; sigaddset with a validated
    // signal number cannot fail.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signos {
            libc::sigaddset(&mut set, s);
        }
        set
    }
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
    /// The signalfd for NOMASK signals, and the signals it reads.
    sfd: Option<OwnedFd>,
    masked: Vec<i32>,
    /// Whether the process-wide wake eventfd is in our epoll set.
    watching_handler: bool,
    /// The value of `COUNTS[s]` we have already accounted for.
    seen: Vec<(i32, u64)>,
}

impl Signals {
    /// Starts delivering `signo` to this queue.
    pub(crate) fn add(
        &mut self,
        epoll_fd: BorrowedFd<'_>,
        signo: i32,
        nomask: bool,
        sfd_token: u64,
        handler_token: u64,
    ) -> Result<(), i32> {
        if nomask {
            let mut masked = self.masked.clone();
            masked.push(signo);
            let set = sigset_of(&masked);
            // SAFETY: the set is initialised; pthread_sigmask changes this thread's mask.
            unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
            let old = self.sfd.as_ref().map_or(-1, |f| f.as_raw_fd());
            let flags = libc::SFD_NONBLOCK | libc::SFD_CLOEXEC;
            // SAFETY: signalfd with -1 creates a new fd; with our own fd it updates the
            // mask of that fd. The set is initialised.
            let r = unsafe { libc::signalfd(old, &set, flags) };
            if r < 0 {
                return Err(io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EINVAL));
            }
            if self.sfd.is_none() {
                // SAFETY: r is a new fd that nobody else owns.
                let fd = unsafe { OwnedFd::from_raw_fd(r) };
                epoll::add(
                    epoll_fd,
                    &fd,
                    epoll::EventData::new_u64(sfd_token),
                    epoll::EventFlags::IN,
                )
                .map_err(|e| e.raw_os_error())?;
                self.sfd = Some(fd);
            }
            self.masked = masked;
        } else {
            install_handler(signo)?;
            if !self.watching_handler {
                let fd = WAKE_FD.load(Ordering::Acquire);
                // SAFETY: WAKE_FD is set once by install_handler and never closed.
                let wake = unsafe { BorrowedFd::borrow_raw(fd) };
                epoll::add(
                    epoll_fd,
                    wake,
                    epoll::EventData::new_u64(handler_token),
                    epoll::EventFlags::IN | epoll::EventFlags::ET,
                )
                .map_err(|e| e.raw_os_error())?;
                self.watching_handler = true;
            }
            if !self.seen.iter().any(|(s, _)| *s == signo) {
                self.seen
                    .push((signo, COUNTS[signo as usize].load(Ordering::Relaxed)));
            }
        }
        Ok(())
    }

    /// Stops reading `signo` through the signalfd (it stays blocked in the threads that
    /// blocked it: unblocking could deliver a pending signal's default action).
    pub(crate) fn remove(&mut self, signo: i32) {
        if let Some(i) = self.masked.iter().position(|&s| s == signo) {
            self.masked.remove(i);
            if let Some(sfd) = &self.sfd {
                let set = sigset_of(&self.masked);
                // SAFETY: updates the mask of our own signalfd.
                unsafe {
                    libc::signalfd(
                        sfd.as_raw_fd(),
                        &set,
                        libc::SFD_NONBLOCK | libc::SFD_CLOEXEC,
                    )
                };
            }
        }
    }

    /// Reads the signalfd: the signal numbers that arrived.
    pub(crate) fn read_signalfd(&self) -> Vec<i32> {
        let mut out = Vec::new();
        let Some(sfd) = &self.sfd else { return out };
        let mut buf = [0u8; 128 * 16];
        while let Ok(n) = rustix::io::read(sfd.as_fd(), &mut buf) {
            if n == 0 {
                break;
            }
            for rec in buf[..n].chunks_exact(128) {
                // ssi_signo is the first u32 of struct signalfd_siginfo.
                out.push(u32::from_ne_bytes([rec[0], rec[1], rec[2], rec[3]]) as i32);
            }
        }
        out
    }

    /// Arrivals of each handler-counted signal since the last call.
    pub(crate) fn handler_deltas(&mut self) -> Vec<(i32, u64)> {
        self.seen
            .iter_mut()
            .filter_map(|(s, last)| {
                let now = COUNTS[*s as usize].load(Ordering::Relaxed);
                let delta = now.wrapping_sub(*last);
                *last = now;
                (delta > 0).then_some((*s, delta))
            })
            .collect()
    }
}

fn install_handler(signo: i32) -> Result<(), i32> {
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
    if installed[s] {
        return Ok(());
    }
    // SAFETY: we build a zeroed sigaction (a valid C value), fill in our handler, and let
    // the kernel write the previous action into `old`.
    unsafe {
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
        OLD_SIGINFO[s].store(old.sa_flags & libc::SA_SIGINFO != 0, Ordering::Relaxed);
        OLD_HANDLER[s].store(old.sa_sigaction, Ordering::Relaxed);
    }
    installed[s] = true;
    Ok(())
}

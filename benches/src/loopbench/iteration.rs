//! One loop iteration's cost as the number of idle file descriptors grows (the O(n)
//! slide of "Improving the QEMU Event Loop"): `idle` eventfds nobody writes, plus one
//! active eventfd that the loop thread itself makes readable before each iteration and
//! whose handler reads it. An iteration = that write + one wait + the handler's read; the
//! same work in every rival, so what differs is what the wait costs per registered fd.
//!
//! | rival | the wait |
//! |---|---|
//! | `kevent::Loop` | `Loop::poll(true)`: the queue's ring (fd handlers are kevents) |
//! | epoll | `epoll_wait` on an epoll fd holding every fd (level-triggered) |
//! | ppoll | `ppoll` on a `pollfd` array of every fd, kept between iterations, then a scan of `revents` |

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kevent::{FdHandler, Loop};
use rustix::event::{eventfd, EventfdFlags};

use super::qemu::EpollLoop;

/// The rivals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rival {
    /// `kevent::Loop` fd handlers.
    Kevent,
    /// An epoll loop.
    Epoll,
    /// A ppoll loop.
    Ppoll,
}

impl Rival {
    /// Every rival, in rotation order.
    pub const ALL: [Rival; 3] = [Rival::Kevent, Rival::Epoll, Rival::Ppoll];

    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Rival::Kevent => "kevent::Loop",
            Rival::Epoll => "epoll loop",
            Rival::Ppoll => "ppoll loop",
        }
    }
}

fn efd() -> Result<OwnedFd, String> {
    eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).map_err(|e| format!("eventfd: {e}"))
}

fn kick(fd: &OwnedFd) {
    let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
}

fn drain(fd: &OwnedFd) {
    let mut buf = [0u8; 8];
    let _ = rustix::io::read(fd, &mut buf);
}

/// Nanoseconds per iteration with `idle` idle fds, over about `seconds` (at least 50
/// iterations).
pub fn run(rival: Rival, idle: usize, seconds: f64) -> Result<f64, String> {
    let idle_fds: Vec<OwnedFd> = (0..idle).map(|_| efd()).collect::<Result<_, _>>()?;
    let active = Arc::new(efd()?);
    let window = Duration::from_secs_f64(seconds);
    // Runs `iteration` (which must return whether the active fd's handler ran) for the
    // window after a warm-up; the cost of one iteration in ns.
    let measure = |iteration: &mut dyn FnMut() -> Result<bool, String>| -> Result<f64, String> {
        for _ in 0..20 {
            kick(&active);
            iteration()?;
        }
        let (start, mut n) = (Instant::now(), 0u64);
        while n < 50 || start.elapsed() < window {
            kick(&active);
            // A blocking wait may return without the handler (a spurious wake-up): the
            // iteration is only counted once the handler ran.
            while !iteration()? {}
            n += 1;
        }
        Ok(start.elapsed().as_nanos() as f64 / n as f64)
    };
    match rival {
        Rival::Kevent => {
            let lp = Loop::new().map_err(|e| e.to_string())?;
            for fd in &idle_fds {
                lp.set_fd_handler(fd, FdHandler::new().read(|_| panic!("an idle fd fired")))
                    .map_err(|e| e.to_string())?;
            }
            let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (a, r) = (active.clone(), ran.clone());
            lp.set_fd_handler(
                &*active,
                FdHandler::new().read(move |_| {
                    drain(&a);
                    r.store(true, std::sync::atomic::Ordering::Relaxed);
                }),
            )
            .map_err(|e| e.to_string())?;
            measure(&mut || {
                lp.try_poll(true).map_err(|e| e.to_string())?;
                Ok(ran.swap(false, std::sync::atomic::Ordering::Relaxed))
            })
        }
        Rival::Epoll => {
            let lp = EpollLoop::new().map_err(|e| e.to_string())?;
            for (i, fd) in idle_fds.iter().enumerate() {
                lp.add_fd(fd.as_fd(), i as u64).map_err(|e| e.to_string())?;
            }
            let token = idle as u64;
            lp.add_fd(active.as_fd(), token)
                .map_err(|e| e.to_string())?;
            let mut events = Vec::with_capacity(64);
            measure(&mut || {
                let mut ran = false;
                lp.poll(true, None, &mut events, |t| {
                    assert_eq!(t, token, "an idle fd fired");
                    drain(&active);
                    ran = true;
                })
                .map_err(|e| e.to_string())?;
                Ok(ran)
            })
        }
        Rival::Ppoll => {
            let mut fds: Vec<libc::pollfd> = idle_fds
                .iter()
                .chain(std::iter::once(&*active))
                .map(|fd| libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            measure(&mut || {
                // SAFETY: `fds` is a valid array of `fds.len()` pollfds that outlives the
                // call; no timeout and no signal mask.
                let r = unsafe {
                    libc::ppoll(
                        fds.as_mut_ptr(),
                        fds.len() as libc::nfds_t,
                        std::ptr::null(),
                        std::ptr::null(),
                    )
                };
                if r < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.raw_os_error() == Some(libc::EINTR) {
                        return Ok(false);
                    }
                    return Err(format!("ppoll: {e}"));
                }
                let mut ran = false;
                for (i, p) in fds.iter().enumerate() {
                    if p.revents != 0 {
                        assert_eq!(i, idle, "an idle fd fired");
                        drain(&active);
                        ran = true;
                    }
                }
                Ok(ran)
            })
        }
    }
}

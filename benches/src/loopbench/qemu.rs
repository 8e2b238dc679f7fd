//! The rival: an event loop built the way QEMU built `AioContext` before us — an epoll
//! fd for the file descriptors, an eventfd as the notifier (`aio_notify`), the
//! `notify_me`/`notified` handshake so that a waker writes the eventfd only when the loop
//! may sleep, bottom halves as flags, and timers either as `epoll_wait` millisecond
//! timeouts (QEMU before 2.x's timerfd/ppoll work, `qemu_timeout_ns_to_ms` rounding up)
//! or as one timerfd in the epoll set.
//!
//! One loop thread polls; any thread schedules. Written from QEMU's documented design
//! (util/async.c `aio_notify`, util/aio-posix.c `aio_poll`), not from its code.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{fence, AtomicBool, AtomicU32, Ordering};

use rustix::event::epoll::{self, EventData, EventFlags};
use rustix::event::{eventfd, EventfdFlags};
use rustix::io::Errno;
use rustix::time::Timespec;

/// The token of the notifier eventfd in the epoll set.
const NOTIFIER: u64 = u64::MAX;

/// An epoll + eventfd loop with one bottom half.
pub struct EpollLoop {
    epoll: OwnedFd,
    notifier: OwnedFd,
    /// Incremented by 2 around a blocking wait (QEMU's `notify_me`).
    notify_me: AtomicU32,
    /// Set by `notify` (QEMU's `notified`).
    notified: AtomicBool,
    /// The bottom half's flag: scheduled and not yet run.
    bh: AtomicBool,
}

impl EpollLoop {
    /// A loop with its notifier registered.
    pub fn new() -> io::Result<EpollLoop> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let notifier = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        epoll::add(
            &epoll,
            &notifier,
            EventData::new_u64(NOTIFIER),
            EventFlags::IN,
        )?;
        Ok(EpollLoop {
            epoll,
            notifier,
            notify_me: AtomicU32::new(0),
            notified: AtomicBool::new(false),
            bh: AtomicBool::new(false),
        })
    }

    /// Adds `fd` (readable interest, level-triggered) with `token` (< `u64::MAX`).
    pub fn add_fd(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        epoll::add(&self.epoll, fd, EventData::new_u64(token), EventFlags::IN)?;
        Ok(())
    }

    /// `qemu_bh_schedule`: sets the flag, then `aio_notify`.
    pub fn schedule_bh(&self) {
        if !self.bh.swap(true, Ordering::AcqRel) {
            self.notify();
        }
    }

    /// `aio_notify`: publish, set `notified`, full fence, write the eventfd only if the
    /// loop is in (or entering) a blocking wait.
    pub fn notify(&self) {
        self.notified.store(true, Ordering::Release);
        fence(Ordering::SeqCst);
        if self.notify_me.load(Ordering::Relaxed) != 0 {
            let _ = rustix::io::write(&self.notifier, &1u64.to_ne_bytes());
        }
    }

    /// One `aio_poll` iteration: waits (if `blocking`) until an fd is ready, the notifier
    /// fires or `timeout` passes (`None`: no limit; rounded up to whole milliseconds, as
    /// `epoll_wait` takes them), then runs the bottom half if scheduled and calls
    /// `on_fd(token)` per ready fd. Returns whether the bottom half ran.
    pub fn poll(
        &self,
        blocking: bool,
        timeout: Option<std::time::Duration>,
        events: &mut Vec<epoll::Event>,
        mut on_fd: impl FnMut(u64),
    ) -> io::Result<bool> {
        if blocking {
            self.notify_me.fetch_add(2, Ordering::Relaxed);
            fence(Ordering::SeqCst);
        }
        let sleep = blocking && !self.notified.load(Ordering::Relaxed) && !self.bh_pending();
        let ms = match (sleep, timeout) {
            (false, _) => 0,
            (true, None) => -1,
            (true, Some(t)) => t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32,
        };
        let ts = (ms >= 0).then(|| Timespec {
            tv_sec: i64::from(ms / 1000),
            tv_nsec: i64::from(ms % 1000) * 1_000_000,
        });
        events.clear();
        let r = epoll::wait(
            &self.epoll,
            rustix::buffer::spare_capacity(events),
            ts.as_ref(),
        );
        if blocking {
            self.notify_me.fetch_sub(2, Ordering::Release);
        }
        match r {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        // aio_notify_accept: the wake-up is consumed before the work is looked at.
        self.notified.store(false, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        for ev in events.iter() {
            let token = ev.data.u64();
            if token == NOTIFIER {
                let mut buf = [0u8; 8];
                let _ = rustix::io::read(&self.notifier, &mut buf);
            } else {
                on_fd(token);
            }
        }
        Ok(self.bh.swap(false, Ordering::AcqRel))
    }

    fn bh_pending(&self) -> bool {
        self.bh.load(Ordering::Acquire)
    }

    /// The epoll fd (to add a timerfd, say).
    pub fn epoll(&self) -> BorrowedFd<'_> {
        self.epoll.as_fd()
    }
}

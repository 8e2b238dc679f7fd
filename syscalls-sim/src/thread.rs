//! The producer thread: the simulated kernel's event loop (QEMU's `aio_poll` shape).
//!
//! `epoll_wait` over every source, the doorbell, the timerfds, the signalfd and the
//! inotify fd; then, under the kernel mutex, turn readiness into entries, process commits
//! and publish. Before sleeping it asks for a doorbell on commit only if it has something
//! to do when slots are freed (a backlog, level-triggered kevents to re-check).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use kevent_ring::Ring;
use rustix::event::epoll;

use crate::kernel::{Kernel, TOKEN_DOORBELL};
use crate::source::signal;

/// Locks the kernel, tolerating a poisoned mutex (a panic elsewhere must not take the
/// queue down with it: the kernel's state is consistent between calls).
pub(crate) fn lock(kernel: &Mutex<Option<Kernel>>) -> MutexGuard<'_, Option<Kernel>> {
    kernel.lock().unwrap_or_else(|e| e.into_inner())
}

/// Everything the thread needs.
pub(crate) struct ProducerThread {
    pub(crate) kernel: Arc<Mutex<Option<Kernel>>>,
    pub(crate) epoll: Arc<OwnedFd>,
    pub(crate) doorbell: Arc<OwnedFd>,
    pub(crate) ring: Arc<Ring>,
    pub(crate) stop: Arc<AtomicBool>,
    /// Called once per loop with the kernel locked: the reaper's hook.
    pub(crate) housekeeping: Box<dyn FnMut(&mut Kernel) -> Option<std::time::Duration> + Send>,
}

impl ProducerThread {
    /// Runs until `stop` is set (and the doorbell rung), then closes the ring so that
    /// sleeping consumers return.
    pub(crate) fn run(mut self) {
        signal::block_all_in_this_thread();
        let mut events: Vec<epoll::Event> = Vec::with_capacity(1024);
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        loop {
            let timeout = {
                let mut guard = lock(&self.kernel);
                let Some(k) = guard.as_mut() else { break };
                let tick = (self.housekeeping)(k).map(|d| rustix::time::Timespec {
                    tv_sec: d.as_secs() as i64,
                    tv_nsec: i64::from(d.subsec_nanos()),
                });
                if k.wants_release_notice() {
                    self.ring.request_doorbell();
                    if k.releases_pending() {
                        self.ring.cancel_doorbell();
                        Some(zero)
                    } else {
                        tick
                    }
                } else {
                    tick
                }
            };
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            events.clear();
            match epoll::wait(
                self.epoll.as_fd(),
                rustix::buffer::spare_capacity(&mut events),
                timeout.as_ref(),
            ) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => break,
            }
            self.ring.cancel_doorbell();
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            let mut guard = lock(&self.kernel);
            let Some(k) = guard.as_mut() else { break };
            for ev in &events {
                // epoll_event is packed: copy the fields out instead of borrowing them.
                let (tok, flags) = (ev.data.u64(), { ev.flags }.bits());
                if tok == TOKEN_DOORBELL {
                    let mut buf = [0u8; 8];
                    let _ = rustix::io::read(self.doorbell.as_fd(), &mut buf);
                }
                k.on_token(tok, flags);
            }
            k.service();
        }
        self.ring.close();
    }
}

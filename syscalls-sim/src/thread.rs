//! The producer thread: the simulated kernel's event loop (QEMU's `aio_poll` shape).
//!
//! `epoll_wait` over every source, the doorbell, the timer heaps' timerfds, the signal
//! handler's eventfd and the inotify fd; then, under the kernel mutex, turn readiness into entries, process commits
//! and publish. Before sleeping it asks for a doorbell on commit only if it has something
//! to do when slots are freed (a backlog, level-triggered kevents to re-check).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use kevent_ring::Ring;

use crate::epoll::Reports;
use crate::harvesters::Harvesters;
use crate::kernel::{Kernel, KernelLock};
use crate::source::signal;

/// Called once per loop with the kernel locked (the reaper); returns how long the loop
/// may sleep before calling it again.
pub(crate) type Housekeeping = Box<dyn FnMut(&mut Kernel) -> Option<std::time::Duration> + Send>;

/// Everything the thread needs.
pub(crate) struct ProducerThread {
    pub(crate) kernel: Arc<KernelLock>,
    pub(crate) epoll: Arc<OwnedFd>,
    pub(crate) ring: Arc<Ring>,
    pub(crate) stop: Arc<AtomicBool>,
    /// Called once per loop with the kernel locked: the reaper's hook.
    pub(crate) housekeeping: Housekeeping,
    /// Consumers of this process that harvest or poll for themselves.
    pub(crate) harvesters: Arc<Harvesters>,
    /// The kernel's ctl counter (`Kernel::epoch`).
    pub(crate) epoch: Arc<std::sync::atomic::AtomicU64>,
}

/// How long the producer thread parks at most while consumers harvest: the bound on how
/// long a source can stay unpublished after the last harvest (a consumer that took a
/// batch and went on to other work harvests no more; see ARCHITECTURE.md §3, W4).
pub(crate) const PARK_MAX: std::time::Duration = std::time::Duration::from_millis(5);

impl ProducerThread {
    /// Runs until `stop` is set (and the doorbell rung), then closes the ring so that
    /// sleeping consumers return. Calls `held` once it holds the owner word (the queue's
    /// creator waits for that).
    pub(crate) fn run(mut self, held: impl FnOnce()) {
        signal::block_all_in_this_thread();
        // The owner's liveness word (`owner.rs` in kevent-ring): if this thread ends
        // without closing the ring — the process died — every consumer of another
        // process learns it. Dropped last, after the ring is closed (the closer below).
        let _owner = self.ring.hold_owner_lock().ok();
        held();
        let _closer = CloseOnDrop(self.ring.clone());
        let mut reports = Reports::new();
        let zero = kevent_ring::timespec(0);
        let mut seen_rounds = 0;
        let mut must_watch = false;
        loop {
            let timeout = {
                let mut guard = self.kernel.lock();
                let Some(k) = guard.as_mut() else { break };
                let tick_left = (self.housekeeping)(k);
                if self.ring.sleepers() > 0 && !self.ring.has_claimable() {
                    // A quiet moment: a consumer sleeps with nothing to take. A level
                    // kevent ADD returned ready and its caller left ready is queued now.
                    if k.recheck_done() {
                        k.service(0);
                    }
                }
                let tick = tick_left.map(|d| kevent_ring::timespec(d.as_nanos() as u64));
                if !std::mem::take(&mut must_watch)
                    && !self.stop.load(Ordering::Acquire)
                    && self.harvesters.should_park(&self.ring, &mut seen_rounds)
                {
                    // Harvesting consumers process releases themselves — but only those
                    // that harvest again: a consumer in another process (which cannot),
                    // or a thread that commits and goes on to other work, releases
                    // entries nobody here would hear of while a poller sleeps in
                    // `epoll_wait` and this thread parks again and again. A level kevent
                    // released that way was never re-checked (still readable, never
                    // reported again: tests/released_level_pipes.rs, `a_level_pipe_committed_by_
                    // a_child_…`). So while commits matter, keep asking for the doorbell:
                    // it is in the sources' epoll, so a commit wakes the poller (which
                    // harvests, servicing the release); an owner thread's commit services
                    // it inline (`Instance::after_commit`). Releases that came before the
                    // request (its SeqCst fence orders it before the `uidx` read) are
                    // serviced here.
                    if k.wants_release_notice() {
                        self.ring.request_doorbell();
                        if k.releases_pending() {
                            k.service(0);
                        }
                    } else {
                        self.ring.cancel_doorbell();
                    }
                    drop(guard);
                    match self.ring.park_begin() {
                        Some(v) => {
                            if !self.stop.load(Ordering::Acquire) && !self.ring.is_closed() {
                                let max = tick_left.map_or(PARK_MAX, |t| t.min(PARK_MAX));
                                let at = kevent_ring::monotonic_now()
                                    .saturating_add(max.as_nanos() as u64);
                                self.ring
                                    .park_wait(v, Some(kevent_ring::Deadline::Monotonic(at)));
                            }
                            self.ring.unparked();
                        }
                        // A consumer sleeps on the ring: watch the sources for it.
                        None => must_watch = true,
                    }
                    continue;
                }
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
            match reports.take(
                self.epoll.as_fd(),
                timeout.as_ref(),
                &self.epoch,
                &self.ring,
            ) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(_) => break,
            }
            self.ring.cancel_doorbell();
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            let mut guard = self.kernel.lock();
            let Some(k) = guard.as_mut() else { break };
            for (tok, flags) in reports.iter() {
                k.on_token(tok, flags, reports.taken());
            }
            k.service(0);
        }
    }
}

/// Closes the ring when the producer thread ends, also by a panic: sleeping consumers
/// return instead of waiting for a producer that is gone.
struct CloseOnDrop(Arc<Ring>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

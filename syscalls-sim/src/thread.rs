//! The producer thread: the simulated kernel's event loop (QEMU's `aio_poll` shape).
//!
//! `epoll_wait` over every source, the doorbell, the timerfds, the signalfd and the
//! inotify fd; then, under the kernel mutex, turn readiness into entries, process commits
//! and publish. Before sleeping it asks for a doorbell on commit only if it has something
//! to do when slots are freed (a backlog, level-triggered kevents to re-check).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{fence, AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use kevent_ring::Ring;
use rustix::event::epoll;
use rustix::thread::futex;

use crate::kernel::{Kernel, TOKEN_DOORBELL};
use crate::source::signal;

/// Locks the kernel, tolerating a poisoned mutex (a panic elsewhere must not take the
/// queue down with it: the kernel's state is consistent between calls).
pub(crate) fn lock(kernel: &Mutex<Option<Kernel>>) -> MutexGuard<'_, Option<Kernel>> {
    kernel.lock().unwrap_or_else(|e| e.into_inner())
}

/// Called once per loop with the kernel locked (the reaper); returns how long the loop
/// may sleep before calling it again.
pub(crate) type Housekeeping = Box<dyn FnMut(&mut Kernel) -> Option<std::time::Duration> + Send>;

/// Everything the thread needs.
pub(crate) struct ProducerThread {
    pub(crate) kernel: Arc<Mutex<Option<Kernel>>>,
    pub(crate) epoll: Arc<OwnedFd>,
    pub(crate) doorbell: Arc<OwnedFd>,
    pub(crate) ring: Arc<Ring>,
    pub(crate) stop: Arc<AtomicBool>,
    /// Called once per loop with the kernel locked: the reaper's hook.
    pub(crate) housekeeping: Housekeeping,
    /// Consumers of this process that are awake and harvest for themselves.
    pub(crate) harvesters: Arc<Harvesters>,
}

/// The handshake between the producer thread and consumers that harvest for themselves
/// (`Queue::next_batch`): while one is awake and nobody sleeps on the ring, the producer
/// thread parks instead of sitting in `epoll_wait`, where every readiness edge would wake
/// it (a cross-core wake-up, 27–49 µs here) only to hand the event over to a consumer that
/// would have found it itself. The last harvester to go to sleep wakes it.
#[derive(Debug, Default)]
pub(crate) struct Harvesters {
    /// Consumers of this process inside `next_batch` and not asleep.
    pub(crate) awake: AtomicU32,
    /// The producer thread's futex word while it is parked.
    park: AtomicU32,
    /// A consumer is blocked in `epoll_wait` on everyone's behalf.
    pub(crate) blocker: AtomicBool,
    /// Harvest rounds done by consumers: the producer parks only while this moves (a
    /// thread that harvested once and then went to do something else must not keep the
    /// producer parked: a consumer elsewhere may be polling the ring without sleeping).
    pub(crate) rounds: std::sync::atomic::AtomicU64,
    /// Set when the queue's notify fd is armed: consumers may be asleep in another event
    /// loop, so the producer thread must keep publishing by itself.
    pub(crate) never_park: AtomicBool,
}

impl Harvesters {
    /// A consumer starts looking for work.
    pub(crate) fn enter(&self) {
        self.awake.fetch_add(1, Ordering::Relaxed);
    }

    /// A consumer stops looking (returns, or goes to sleep). The last one wakes the
    /// producer thread: store, SeqCst fence, load — as the producer's park check.
    pub(crate) fn leave(&self) {
        if self.awake.fetch_sub(1, Ordering::Relaxed) == 1 {
            fence(Ordering::SeqCst);
            self.park.fetch_add(1, Ordering::Release);
            let _ = futex::wake(&self.park, futex::Flags::PRIVATE, 1);
        }
    }

    /// Producer thread: whether to park — a consumer harvests (and has harvested since
    /// `seen`, the producer's last look), and none sleeps on the ring waiting for it.
    fn should_park(&self, ring: &Ring, seen: &mut u64) -> bool {
        let rounds = self.rounds.load(Ordering::Relaxed);
        let progress = std::mem::replace(seen, rounds) != rounds;
        progress
            && !self.never_park.load(Ordering::Relaxed)
            && self.awake.load(Ordering::Relaxed) > 0
            && ring.sleepers() == 0
    }

    /// Producer thread: parks for up to `max`, unless the last harvester left meanwhile.
    fn park(&self, max: Option<std::time::Duration>) {
        let v = self.park.load(Ordering::Acquire);
        fence(Ordering::SeqCst);
        if self.awake.load(Ordering::Relaxed) == 0 {
            return;
        }
        let max = max.unwrap_or(std::time::Duration::from_millis(50));
        let ts = rustix::time::Timespec {
            tv_sec: max.as_secs() as i64,
            tv_nsec: i64::from(max.subsec_nanos()),
        };
        let _ = futex::wait(&self.park, futex::Flags::PRIVATE, v, Some(&ts));
    }
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
        let mut seen_rounds = 0;
        loop {
            let (timeout, call) = {
                let mut guard = lock(&self.kernel);
                let Some(k) = guard.as_mut() else { break };
                let tick_left = (self.housekeeping)(k);
                let tick = tick_left.map(|d| rustix::time::Timespec {
                    tv_sec: d.as_secs() as i64,
                    tv_nsec: i64::from(d.subsec_nanos()),
                });
                if !self.stop.load(Ordering::Acquire)
                    && self.harvesters.should_park(&self.ring, &mut seen_rounds)
                {
                    // Harvesting consumers process releases themselves.
                    self.ring.cancel_doorbell();
                    drop(guard);
                    self.harvesters.park(tick_left);
                    continue;
                }
                let timeout = if k.wants_release_notice() {
                    self.ring.request_doorbell();
                    if k.releases_pending() {
                        self.ring.cancel_doorbell();
                        Some(zero)
                    } else {
                        tick
                    }
                } else {
                    tick
                };
                (timeout, k.begin_wait())
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
                k.on_token(tok, flags, call);
            }
            k.service();
        }
        self.ring.close();
    }
}

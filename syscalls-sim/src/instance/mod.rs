//! [`Instance`]: one kevent queue as seen from one process — its ring, its consumer record,
//! and, in the process that created it, the simulated kernel and its producer thread.
//! What `kevent_init` creates and a handle names, as an epoll fd names an epoll instance.
//!
//! | file | role |
//! |---|---|
//! | `create.rs` | making it (`kevent_init`) in the owning process, its settings, `close` |
//! | `attach.rs` | attaching from another process: `connect`, `attach`, a forked child |
//! | `control.rs` | `kevent_ctl`: on the kernel, or through the gate connection |
//! | `consume.rs` | `kevent_wait`, reading entries, `kevent_commit`, `kevent_get_events` |
//! | `harvest.rs` | `next_batch`: claim, harvest, poll the sources, sleep (W1–W5) |
//! | `notify.rs` | the notify fd of an instance in another process |

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use kevent_ring::{ConsumerId, Liveness, Ring, WakeFd};

use crate::gate::{Gate, GateAddr, GateClient};
use crate::kernel::KernelLock;
mod attach;
mod consume;
mod control;
mod create;
mod harvest;
mod notify;

use crate::harvesters::Harvesters;
use crate::thread::ProducerThread;
use notify::PeerNotify;

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// The creating process's side: the kernel, its thread, and the gates it serves.
struct Owner {
    kernel: Arc<KernelLock>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The producer thread of a queue created paused, until [`Instance::start`].
    paused: Mutex<Option<ProducerThread>>,
    /// Consumers of this process harvesting for themselves (see [`Instance::next_batch`]).
    harvesters: Arc<Harvesters>,
    /// Whether consumers of this process harvest (default on).
    harvest: AtomicBool,
    /// The kernel's epoll fd, for a consumer blocking on the sources (the poller). The
    /// poller's bell, which the ring writes to reach it, is in this set (see `epoll.rs`).
    ctx_epoll: Arc<OwnedFd>,
    /// The kernel's ctl counter, read right after the poller's `epoll_wait`.
    epoch: Arc<AtomicU64>,
    /// The poller's bell (the poller resets it when its edge wakes it).
    bell: WakeFd,
    /// Level-triggered kevents that ADD returned ready at once wait for a re-check
    /// (`Kernel::recheck_done`): a consumer harvests before it blocks.
    done_pending: Arc<AtomicBool>,
    /// The handle (an eventfd), once armed as a readiness fd ([`Instance::notify_fd`]).
    notify: std::sync::OnceLock<WakeFd>,
    /// The producer thread's kernel tid (0 until it runs), for CPU accounting.
    tid: Arc<std::sync::atomic::AtomicI32>,
    /// The queue's gate: its listeners (the abstract one, and paths from
    /// [`Instance::listen`]) and the one thread serving them.
    gate: Gate,
}

/// One kevent queue.
pub struct Instance {
    ring: Arc<Ring>,
    me: ConsumerId,
    _liveness: Liveness,
    /// The doorbell's ringing end (`wakefd.rs` in kevent-ring: a socket, shared with
    /// every attached process, rung without ever blocking).
    doorbell: Arc<WakeFd>,
    /// The queue's handle: an fd number of our own, so that handles behave like the
    /// original's file descriptors (`EBADF` once closed), and the notify fd other event
    /// loops watch ([`Instance::notify_fd`]): in the owning process an eventfd the kernel
    /// rings; in another process an epoll fd of its own (`instance/notify.rs`).
    handle: OwnedFd,
    /// In a process that does not own the queue: what its handle watches.
    peer_notify: Option<PeerNotify>,
    owner: Option<Owner>,
    /// Where the queue's gate is and which process serves it: what `kevent_ctl` of a
    /// process that does not own the queue, and every `fork`ed child, connects to.
    /// `None` for a queue attached without a control channel ([`Instance::attach`]).
    gate: Option<GateAddr>,
    /// The connection to the gate, in a process that does not own the queue: made by
    /// [`Instance::connect`], or on the first `kevent_ctl` (a forked child).
    client: Mutex<Option<GateClient>>,
    /// This process added kevents through its connection: if the connection is lost,
    /// the owner drops them, and the next call says so (see [`Instance::client`]).
    kevents_through_client: AtomicBool,
    /// The process this `Instance` value belongs to (a forked child inherits a copy that
    /// must not act as the owner; see [`Instance::for_this_process`]).
    pid: u32,
    /// Spin before sleeping, in nanoseconds.
    spin_ns: AtomicU64,
}

/// Default spin before a consumer sleeps: none. Consumers of the owning process harvest
/// and then block in `epoll_wait` as epoll's own consumers do, so spinning only burns the
/// CPU the writer needs on a small machine: measured with `kevent bench`, a 20 µs spin
/// cost 12x epoll's CPU per event at 20k events/s and gained nothing under load. A
/// consumer in another process may still profit from a short spin (`set_spin`): waking
/// a sleeper on the other core costs 27–49 µs here, a spinning one < 100 ns.
pub const DEFAULT_SPIN: Duration = Duration::ZERO;

impl Instance {
    /// Whether this value was made in (or attached by) the calling process. A `fork`ed
    /// child holds copies of its parent's values; it must use
    /// [`Instance::for_this_process`] (the `kevent_*` calls do that for it).
    pub fn is_local(&self) -> bool {
        self.pid == crate::pid::current()
    }

    /// The handle number (what `kevent_init` returns).
    pub fn handle(&self) -> RawFd {
        self.handle.as_raw_fd()
    }

    /// The ring.
    pub fn ring(&self) -> &Arc<Ring> {
        &self.ring
    }

    /// This process's consumer id (the owner field of the slots it claims).
    pub fn consumer(&self) -> ConsumerId {
        self.me
    }

    /// How long a waiter spins before it sleeps (default [`DEFAULT_SPIN`]).
    pub fn set_spin(&self, spin: Duration) {
        self.spin_ns.store(
            spin.as_nanos().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    /// How long a waiter spins before it sleeps (see [`Instance::set_spin`]).
    pub fn spin(&self) -> Duration {
        Duration::from_nanos(self.spin_ns.load(Ordering::Relaxed))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if self.is_local() {
            self.close();
        } else if let Some(owner) = &self.owner {
            // A forked child must not join (or detach) a thread that exists only in its
            // parent: forget the handle.
            if let Some(t) = owner
                .thread
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
            {
                std::mem::forget(t);
            }
            owner.gate.forget_thread();
        }
    }
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("handle", &self.handle())
            .field("ring", &self.ring)
            .field("consumer", &self.me)
            .finish()
    }
}

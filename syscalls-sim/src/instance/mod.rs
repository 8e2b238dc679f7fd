//! [`Instance`]: one kevent queue as seen from one process — its ring, its consumer record,
//! and, in the process that created it, the simulated kernel and its producer thread.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use kevent_ring::{
    Claim, ConsumerId, Deadline, Liveness, Producer, Ring, Ukevent, WaitOutcome, WaitSpec, WakeFd,
};
use rustix::event::epoll;

use crate::abi::*;
use crate::gate::{self, Gate, GateAddr, GateClient, GateCtx};
use crate::kernel::{Kernel, KernelLock, TOKEN_BELL, TOKEN_DOORBELL};
use crate::outbox::Outbox;
use crate::reaper::{Reaper, DEFAULT_REAP_INTERVAL};
mod harvest;
mod notify;

use crate::thread::{Harvesters, ProducerThread};
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
    /// poller's bell, which the ring writes to reach it, is in this set (see
    /// `poller.rs`).
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
    /// rings; in another process an epoll fd of its own (`queue/notify.rs`).
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
    /// `kevent_init`: a queue with a ring of `num` entries (rounded up to a power of two;
    /// `0` means the default internal ring) and its producer thread.
    pub fn create(num: u32, flags: u32) -> io::Result<Arc<Instance>> {
        Self::create_with(num, flags, DEFAULT_REAP_INTERVAL)
    }

    /// [`Instance::create`] with the time within which a dead consumer's entries are
    /// delivered again (default 100 ms; `EINVAL` below [`MIN_REAP_INTERVAL`](crate::MIN_REAP_INTERVAL), 1 ms).
    pub fn create_with(num: u32, flags: u32, reap_interval: Duration) -> io::Result<Arc<Instance>> {
        let q = Self::create_paused(num, flags, reap_interval)?;
        q.start()?;
        Ok(q)
    }

    /// Creates a queue whose threads (producer, gate) do not run until [`Instance::start`]:
    /// for programs that `fork` consumers first (no thread may exist at `fork`).
    /// `kevent_ctl` works before the start; events are published once it has started.
    /// The gate's socket is bound here (an abstract name the kernel picks, see `gate.rs`)
    /// but served only from the start: children may attach before it, while their
    /// `kevent_ctl` waits for it and fails with `TimedOut` after
    /// [`Instance::GATE_TIMEOUT`].
    pub fn create_paused(
        num: u32,
        flags: u32,
        reap_interval: Duration,
    ) -> io::Result<Arc<Instance>> {
        if flags != 0
            || num == 1
            || num > kevent_ring::layout::MAX_CAPACITY
            || reap_interval < crate::MIN_REAP_INTERVAL
        {
            return Err(errno(libc::EINVAL));
        }
        let capacity = if num == 0 {
            KEVENT_DEFAULT_RING
        } else {
            num.next_power_of_two()
        };
        let ring = Arc::new(Ring::create("kevent", capacity)?);
        let liveness = Liveness::register(&ring)?;
        let epoll = Arc::new(epoll::create(epoll::CreateFlags::CLOEXEC)?);
        // The doorbell: the kernel reads one end (in its epoll set); every attached
        // process, this one included, rings the other.
        let (doorbell_in, doorbell) = WakeFd::pair()?;
        epoll::add(
            epoll.as_fd(),
            doorbell_in.as_fd(),
            epoll::EventData::new_u64(TOKEN_DOORBELL),
            epoll::EventFlags::IN,
        )?;
        // The poller blocks in `epoll_wait` on this same set; its bell is in it,
        // edge-triggered (see `poller.rs`).
        let bell = WakeFd::private()?;
        epoll::add(
            epoll.as_fd(),
            bell.as_fd(),
            epoll::EventData::new_u64(TOKEN_BELL),
            epoll::EventFlags::IN | epoll::EventFlags::ET,
        )?;
        ring.set_bell(bell.try_clone()?);
        let harvesters = Arc::new(Harvesters::default());
        let producer = Producer::new(ring.clone()).map_err(io::Error::from)?;
        let outbox = Arc::new(Outbox::new(doorbell.try_clone()?));
        let mut kernel = Kernel::new(producer, epoll.clone(), doorbell_in, outbox);
        kernel.set_bell(bell.try_clone()?, harvesters.clone());
        let epoch = kernel.epoch.clone();
        let done_pending = kernel.done_pending.clone();
        let kernel = Arc::new(KernelLock::new(kernel));
        let doorbell = Arc::new(doorbell);
        let ctx_epoll = epoll.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let memfd = ring.memfd().expect("a memfd ring").try_clone_to_owned()?;
        let mut reaper = Reaper::new(memfd.try_clone()?, reap_interval);
        let thread = ProducerThread {
            kernel: kernel.clone(),
            epoll,
            ring: ring.clone(),
            stop: stop.clone(),
            housekeeping: Box::new(move |k| reaper.tick(k)),
            harvesters: harvesters.clone(),
            epoch: epoch.clone(),
        };
        let handle = WakeFd::private()?.into();
        // Bound now (an autobound abstract name, see gate.rs), served from `start`.
        let gate = Gate::new(GateCtx {
            kernel: kernel.clone(),
            harvesters: harvesters.clone(),
            memfd: Arc::new(memfd),
            doorbell: doorbell.clone(),
        })?;
        let gate_addr = gate.addr().clone();
        let queue = Instance {
            me: liveness.id(),
            ring,
            _liveness: liveness,
            doorbell,
            handle,
            owner: Some(Owner {
                kernel,
                stop,
                thread: Mutex::new(None),
                paused: Mutex::new(Some(thread)),
                harvesters,
                harvest: AtomicBool::new(true),
                ctx_epoll,
                epoch,
                bell,
                done_pending,
                notify: std::sync::OnceLock::new(),
                tid: Arc::new(std::sync::atomic::AtomicI32::new(0)),
                gate,
            }),
            gate: Some(gate_addr),
            client: Mutex::new(None),
            kevents_through_client: AtomicBool::new(false),
            peer_notify: None,
            pid: crate::pid::current(),
            spin_ns: AtomicU64::new(DEFAULT_SPIN.as_nanos() as u64),
        };
        Ok(Arc::new(queue))
    }

    /// Starts the producer and gate threads of a queue made with
    /// [`Instance::create_paused`] (a no-op if they run already).
    pub fn start(&self) -> io::Result<()> {
        let owner = self.owner.as_ref().ok_or_else(|| errno(libc::EOPNOTSUPP))?;
        let Some(thread) = owner
            .paused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return Ok(());
        };
        let tid = owner.tid.clone();
        let producer = std::thread::Builder::new()
            .name("kevent-producer".into())
            .spawn(move || {
                tid.store(
                    rustix::thread::gettid().as_raw_nonzero().get(),
                    Ordering::Release,
                );
                thread.run()
            })?;
        *owner.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(producer);
        owner.gate.start()
    }

    /// The producer thread's kernel thread id, once it runs (for per-thread CPU
    /// accounting in `/proc/self/task/<tid>`).
    pub fn producer_tid(&self) -> Option<i32> {
        let tid = self.owner.as_ref()?.tid.load(Ordering::Acquire);
        (tid != 0).then_some(tid)
    }

    /// Lets processes attached through the gate add signal kevents (default: refused
    /// with `EPERM`). A signal kevent changes this process's disposition of that signal
    /// while it is registered; allow it only for peers trusted with that.
    ///
    /// # Errors
    /// `EOPNOTSUPP` in a process that does not own the queue.
    pub fn allow_remote_signals(&self, allow: bool) -> io::Result<()> {
        let owner = self
            .owner
            .as_ref()
            .filter(|_| self.is_local())
            .ok_or_else(|| errno(libc::EOPNOTSUPP))?;
        if let Some(k) = owner.kernel.lock().as_mut() {
            k.remote_signals = allow;
        }
        Ok(())
    }

    /// How long a live consumer may hold the entry at the release position while the
    /// ring is full or a backlog waits, before that entry is delivered to another
    /// consumer, flagged redelivered (default [`crate::DEFAULT_LEASE`], 2 s; checked every
    /// half reap interval). Its late commit is then a no-op.
    ///
    /// # Errors
    /// `EOPNOTSUPP` in a process that does not own the queue.
    pub fn set_lease(&self, lease: Duration) -> io::Result<()> {
        let owner = self
            .owner
            .as_ref()
            .filter(|_| self.is_local())
            .ok_or_else(|| errno(libc::EOPNOTSUPP))?;
        if let Some(k) = owner.kernel.lock().as_mut() {
            k.lease = lease;
        }
        Ok(())
    }

    /// What the owner holds, at most, for each process attached through the gate — its
    /// registrations (`ENOSPC` beyond), the fds held for them (`EMFILE` beyond) — and for
    /// all of them together (see [`PeerLimits`](crate::PeerLimits); the defaults are
    /// sized from this process's `RLIMIT_NOFILE`). Applies to ADDs from now on; what
    /// peers hold already stays.
    ///
    /// # Errors
    /// `EOPNOTSUPP` in a process that does not own the queue.
    pub fn set_peer_limits(&self, limits: crate::PeerLimits) -> io::Result<()> {
        let owner = self
            .owner
            .as_ref()
            .filter(|_| self.is_local())
            .ok_or_else(|| errno(libc::EOPNOTSUPP))?;
        if let Some(k) = owner.kernel.lock().as_mut() {
            k.peer_limits = limits;
        }
        Ok(())
    }

    /// Serves the queue's gate on a Unix socket at `path` as well, so that any process
    /// of the same user can [`Instance::connect`] to it. The socket file is removed when the
    /// queue closes. Who may connect: processes of this process's effective uid, and root
    /// (both ends check `SO_PEERCRED`; see `gate.rs`); the file's permissions are the
    /// umask's.
    ///
    /// # Errors
    /// `EOPNOTSUPP` in a process that does not own the queue; `EADDRINUSE` if `path`
    /// exists.
    pub fn listen(&self, path: &std::path::Path) -> io::Result<()> {
        match &self.owner {
            Some(owner) if self.is_local() => owner.gate.listen(path),
            _ => Err(errno(libc::EOPNOTSUPP)),
        }
    }

    /// How long a process that does not own the queue waits on its gate — to connect,
    /// to send a request, for a reply — before the call fails with `TimedOut`
    /// (ETIMEDOUT): 5 s. A gate that is not served yet (a queue made with
    /// [`Instance::create_paused`] and not started) answers nothing.
    pub const GATE_TIMEOUT: Duration = gate::TIMEOUT;

    /// How many connections a queue's gate serves at a time (128). A process that
    /// connects beyond is refused at once (`ConnectionRefused`, ECONNREFUSED); a
    /// connection is held by each [`Instance::connect`]ed consumer and by each forked child
    /// that has called `kevent_ctl`, until it exits or drops its queue.
    pub const MAX_GATE_CONNECTIONS: usize = gate::MAX_CONNECTIONS;

    /// How many connections one process may hold to a queue's gate at a time (8): one
    /// more is refused at once (`ConnectionRefused`), and the others are unaffected.
    pub const MAX_GATE_CONNECTIONS_PER_PROCESS: usize = gate::MAX_CONNECTIONS_PER_PROCESS;

    /// Attaches to the queue served at `path` (see [`Instance::listen`]): maps its ring,
    /// registers as a consumer, and controls it through the socket.
    ///
    /// The server is checked before anything is sent: it must run as this process's
    /// effective uid (root attaches only to root's queues). Its pid is recorded: a child
    /// this process forks re-attaches only to that process.
    ///
    /// # Errors
    /// The errors of `connect(2)` with their errno (`ENOENT`, `ECONNREFUSED`…);
    /// `PermissionDenied` (EPERM): another user serves `path`; `TimedOut` (ETIMEDOUT):
    /// no answer within [`Instance::GATE_TIMEOUT`]; `ConnectionRefused`: the gate serves
    /// [`Instance::MAX_GATE_CONNECTIONS`] already.
    pub fn connect(path: &std::path::Path) -> io::Result<Arc<Instance>> {
        let addr = rustix::net::SocketAddrUnix::new(path)?;
        // The errno is kept (`raw_os_error`); the safe API adds the path to the message.
        let (client, owner) = GateClient::connect(&addr, None)?;
        let (memfd, doorbell) = client.attach()?;
        let gate = GateAddr::new(addr, owner);
        Self::attached(memfd.as_fd(), doorbell, Some(gate), Some(client))
    }

    /// Attaches to a ring from its memfd and the queue's doorbell (the ringing end,
    /// received by other means): a consumer without a control channel. `kevent_ctl`
    /// answers `EOPNOTSUPP`, here and in every child it forks: such a queue has no gate
    /// address, so nothing ever connects anywhere on its behalf.
    ///
    /// # Errors
    /// The ring's validation errors (`InvalidData`, with what is wrong); `EINVAL` if
    /// `doorbell` is not a doorbell (a Unix stream socket, or an eventfd).
    pub fn attach(memfd: BorrowedFd<'_>, doorbell: OwnedFd) -> io::Result<Arc<Instance>> {
        Self::attached(memfd, doorbell, None, None)
    }

    fn attached(
        memfd: BorrowedFd<'_>,
        doorbell: OwnedFd,
        gate: Option<GateAddr>,
        client: Option<GateClient>,
    ) -> io::Result<Arc<Instance>> {
        let ring = Arc::new(Ring::attach(memfd)?);
        let doorbell = WakeFd::from_fd(doorbell)?;
        // Our wakers reach the owner's poller through the doorbell, which it relays.
        ring.set_bell(doorbell.try_clone()?);
        let liveness = Liveness::register(&ring)?;
        let (handle, peer_notify) = PeerNotify::new()?;
        Ok(Arc::new(Instance {
            me: liveness.id(),
            ring,
            _liveness: liveness,
            doorbell: Arc::new(doorbell),
            handle,
            peer_notify: Some(peer_notify),
            owner: None,
            gate,
            client: Mutex::new(client),
            kevents_through_client: AtomicBool::new(false),
            pid: crate::pid::current(),
            spin_ns: AtomicU64::new(DEFAULT_SPIN.as_nanos() as u64),
        }))
    }

    /// Whether this value was made in (or attached by) the calling process. A `fork`ed
    /// child holds copies of its parent's values; it must use
    /// [`Instance::for_this_process`] (the `kevent_*` calls do that for it).
    pub fn is_local(&self) -> bool {
        self.pid == crate::pid::current()
    }

    /// The queue as this process should use it: `self` in the process that made it; in a
    /// `fork`ed child, a new attachment (its own consumer record and liveness token)
    /// built from the inherited memfd and doorbell.
    ///
    /// Its `kevent_ctl` goes through the owner's gate, connected on the first call (so
    /// a child that only consumes holds no connection, and children forked before
    /// [`Instance::start`] attach at once). The connection is made only to the process
    /// recorded as the owner — the one that created the queue, or that served the path
    /// the parent [`connect`](Instance::connect)ed to — running as this process's
    /// effective uid; anything else serving the name (the owner closed the queue and
    /// another process took it) is refused with `PermissionDenied` (EPERM) before
    /// anything is sent. A queue [`attach`](Instance::attach)ed without a control channel
    /// stays without one: `EOPNOTSUPP`.
    ///
    /// Reads only fields that never change, and takes no lock: safe to call in a child
    /// forked while other threads were inside `kevent_*` calls on this queue.
    pub fn for_this_process(self: &Arc<Self>) -> io::Result<Arc<Instance>> {
        if self.is_local() {
            return Ok(self.clone());
        }
        let memfd = self.ring.memfd().ok_or_else(|| errno(libc::EBADF))?;
        let doorbell = self.doorbell.as_fd().try_clone_to_owned()?;
        Self::attached(memfd, doorbell, self.gate.clone(), None)
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

    /// `kevent_ctl`.
    pub fn ctl(&self, cmd: u32, events: &mut [Ukevent]) -> io::Result<usize> {
        if cmd > KEVENT_CTL_READY {
            return Err(errno(libc::EINVAL));
        }
        if events.len() > KEVENT_MAX_EVENTS {
            return Err(errno(libc::EINVAL));
        }
        if let Some(b) = self.ring.broken() {
            return Err(b.into());
        }
        if !self.is_local() {
            // A fork's copy: its locks and connection are the parent's.
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "kevent_ctl: this queue value belongs to process {}; a forked child \
                     uses Instance::for_this_process (the kevent_* calls do)",
                    self.pid
                ),
            ));
        }
        if let Some(owner) = &self.owner {
            let mut guard = owner.kernel.lock();
            let kernel = guard.as_mut().ok_or_else(|| errno(libc::EBADF))?;
            return kernel.ctl(cmd, events, &[], crate::kernel::Caller::Local);
        }
        if self.ring.owner_died() {
            return Err(errno(libc::EPIPE));
        }
        let n = self
            .client()?
            .as_ref()
            .expect("connected")
            .ctl(cmd, events)?;
        if cmd == KEVENT_CTL_ADD {
            self.kevents_through_client.store(true, Ordering::Relaxed);
        }
        Ok(n)
    }

    /// The control connection of a consumer in another process, made (or remade, if
    /// the last one failed on the way) on demand; a remade one re-arms the notify fd,
    /// which the owner forgot with the old connection.
    ///
    /// # Errors
    /// `EOPNOTSUPP`: attached without a control channel (`Instance::attach`; use
    /// `Instance::connect`). `ECONNRESET` once, when the connection is remade after this
    /// process had added kevents through the old one: the owner dropped them with it
    /// (`peer.rs`) and they must be added again; the next call goes through.
    pub(super) fn client(&self) -> io::Result<std::sync::MutexGuard<'_, Option<GateClient>>> {
        let gate = self.gate.as_ref().ok_or_else(|| errno(libc::EOPNOTSUPP))?;
        let mut client = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if client.as_ref().is_none_or(GateClient::is_broken) {
            // First use in this process, or the last connection failed on the way. A
            // queue closed under a connection stays closed: EPIPE, as the call that found
            // it closed said, not the errors of connecting to a socket that is gone
            // (ENOENT, ECONNREFUSED). (A first connection — a forked child's — is tried:
            // whoever serves the name now is refused by the credential check.)
            let remade = client.is_some();
            if remade && (self.ring.is_closed() || self.ring.owner_died()) {
                return Err(errno(libc::EPIPE));
            }
            *client = None;
            let fresh = gate.connect()?;
            let notify = self.peer_notify.as_ref().filter(|n| n.is_armed());
            if let Some(notify) = notify {
                let inbox = fresh.arm_notify()?;
                let alive = || !self.ring.owner_died();
                notify.arm(self.handle.as_fd(), inbox, self.owner_pid(), alive)?;
            }
            *client = Some(fresh);
            if remade && self.kevents_through_client.swap(false, Ordering::Relaxed) {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "kevent_ctl: the connection to the queue's owner was lost, and with it \
                     the kevents this process had added (add them again); connected anew",
                ));
            }
        }
        Ok(client)
    }

    fn deadline(timeout: Timeout, flags: u32) -> io::Result<Option<Deadline>> {
        if flags & !KEVENT_FLAGS_ABSTIME != 0 {
            return Err(errno(libc::EINVAL));
        }
        Ok(match timeout {
            None => None,
            Some(ns) if flags & KEVENT_FLAGS_ABSTIME != 0 => Some(Deadline::Realtime(ns)),
            Some(ns) => Some(Deadline::Monotonic(
                kevent_ring::monotonic_now().saturating_add(ns),
            )),
        })
    }

    fn outcome_error(outcome: WaitOutcome) -> Option<io::Error> {
        match outcome {
            // The queue closed, or its owner died (`Ring::owner_died` tells which).
            WaitOutcome::Closed => Some(errno(libc::EPIPE)),
            WaitOutcome::Broken => Some(io::Error::new(
                io::ErrorKind::InvalidData,
                "kevent ring is broken",
            )),
            WaitOutcome::Interrupted => Some(errno(libc::EINTR)),
            _ => None,
        }
    }

    /// How a wait of this process's consumer goes (what [`Instance::next_batch`] takes):
    /// until `deadline` (`None`: for ever; one in the past: only look), spinning first
    /// as [`Instance::set_spin`] says unless it only looks, returning on explicit wake-ups;
    /// `old_uidx` as for `kevent_wait`. The raw calls and the safe API all build their
    /// waits here.
    pub fn wait_spec(&self, old_uidx: Option<u64>, deadline: Option<Deadline>) -> WaitSpec {
        WaitSpec {
            old_uidx,
            deadline,
            spin: if kevent_ring::deadline_passed(deadline) {
                Duration::ZERO
            } else {
                self.spin()
            },
            return_on_wake: true,
            kicks: 0, // next_batch reads the count itself
            sleeper: Some(self.me),
        }
    }

    /// `kevent_wait`: waits until entries are ready (or `old_uidx` is stale, a wake-up
    /// request arrives, or the timeout passes) and claims up to `num` of them.
    pub fn wait(&self, num: u32, old_uidx: u64, timeout: Timeout, flags: u32) -> io::Result<Claim> {
        if num == 0 || u64::from(num) > self.ring.capacity() || flags & !KEVENT_FLAGS_ABSTIME != 0 {
            return Err(errno(libc::EINVAL));
        }
        let nonblocking = timeout == Some(0) && flags & KEVENT_FLAGS_ABSTIME == 0;
        let deadline = if nonblocking {
            Some(Deadline::Monotonic(0))
        } else {
            Self::deadline(timeout, flags)?
        };
        let spec = self.wait_spec(Some(old_uidx), deadline);
        let (claim, outcome) = self.next_batch(u64::from(num), &spec)?;
        match Self::outcome_error(outcome) {
            Some(e) => Err(e),
            None => Ok(claim),
        }
    }

    /// Reads a claimed entry (see [`Ring::take`]).
    pub fn entry(&self, pos: u64) -> Option<Ukevent> {
        self.ring.take(self.me, pos)
    }

    /// `kevent_commit`: done with every entry this process claimed below the position
    /// `(new_uidx, over)` names. Returns how many entries it committed.
    pub fn commit(&self, new_uidx: u32, over: u32) -> io::Result<u64> {
        let pos = self
            .ring
            .position_of(new_uidx, over)
            .ok_or_else(|| errno(libc::EINVAL))?;
        let u = self.ring.uidx();
        if pos > self.ring.kidx() {
            return Err(errno(libc::EINVAL));
        }
        if pos < u {
            let (_, over_now) = self.ring.kevent_view(u);
            // A position from before the last wrap of uidx: never taken for a new wrap.
            return if over < over_now {
                Err(errno(libc::EOVERFLOW))
            } else {
                Ok(0)
            };
        }
        let n = self.ring.commit_below(self.me, pos);
        self.after_commit(u..pos);
        Ok(n)
    }

    /// Commits exactly the positions in `range` that this process claimed.
    pub fn commit_range(&self, range: std::ops::Range<u64>) -> u64 {
        let n = self.ring.complete_range(self.me, range.clone());
        self.after_commit(range);
        n
    }

    /// After a commit of the positions in `range`: in the owning process, the kernel
    /// handles the completions at once (`kernel/release.rs`: a level kevent is re-checked
    /// without waiting for the in-order release); elsewhere, the producer hears of it
    /// through the doorbell if it asked.
    fn after_commit(&self, range: std::ops::Range<u64>) {
        if let Some(owner) = self.owner.as_ref().filter(|_| self.is_local()) {
            if owner.kernel.completed(range) {
                return; // the kernel's part is done (and the doorbell asked again)
            }
        }
        if self.ring.doorbell_wanted() {
            // In the owning process, do the producer's part of the commit here (process
            // the release, re-check, drain the backlog) instead of waking it. If it is
            // busy (holds the kernel), it checks for releases before it sleeps again.
            if self.harvesters().is_some() {
                if let Some(owner) = &self.owner {
                    if let Some(mut guard) = owner.kernel.try_lock() {
                        if let Some(k) = guard.as_mut() {
                            k.service(0);
                            if k.wants_release_notice() {
                                self.ring.request_doorbell();
                            }
                        }
                        return;
                    }
                }
            }
            let _ = self.doorbell.ring();
        }
    }

    /// `kevent_get_events`: copies at least `min` (waiting up to the timeout) and at most
    /// `max` ready events into `buf` and commits them. Returns how many it copied.
    pub fn get_events(
        &self,
        min: u32,
        max: u32,
        timeout: Timeout,
        buf: &mut [Ukevent],
        flags: u32,
    ) -> io::Result<usize> {
        let (min, max) = (min as usize, max as usize);
        if max == 0 || max > buf.len() || min > max || flags & !KEVENT_FLAGS_ABSTIME != 0 {
            return Err(errno(libc::EINVAL));
        }
        let nonblocking = min == 0 || (timeout == Some(0) && flags & KEVENT_FLAGS_ABSTIME == 0);
        let deadline = if nonblocking {
            Some(Deadline::Monotonic(0))
        } else {
            Self::deadline(timeout, flags)?
        };
        let spec = self.wait_spec(None, deadline);
        let mut got = 0;
        loop {
            let (claim, outcome) = self.next_batch((max - got) as u64, &spec)?;
            for pos in claim.start..claim.end {
                if let Some(ev) = self.ring.take(self.me, pos) {
                    buf[got] = ev;
                    got += 1;
                }
            }
            if !claim.is_empty() {
                self.commit_range(claim.start..claim.end);
            }
            if let Some(e) = Self::outcome_error(outcome) {
                return if got > 0 { Ok(got) } else { Err(e) };
            }
            if got >= min.max(1) || got == max || outcome != WaitOutcome::Ready {
                return Ok(got);
            }
        }
    }

    /// Stops the producer thread, closes the ring (waiters return an error) and every fd
    /// the kernel made. Idempotent.
    pub fn close(&self) {
        if !self.is_local() {
            // A forked child's copy of the parent's queue: touching the shared ring or
            // joining a thread that does not exist here would be wrong.
            return;
        }
        let Some(owner) = &self.owner else {
            // An attached consumer leaves: the reaper re-delivers what it still holds.
            self.ring.depart(self.me);
            return;
        };
        owner.stop.store(true, Ordering::Release);
        // Closed first: waiters (on the futex, or blocked in epoll_wait as harvester and
        // woken by the doorbell below) must see it when they wake.
        self.ring.close();
        // The gate thread ends (its connections close: peers get BrokenPipe); the
        // listeners are shut down (a child's inherited copy cannot accept, connecting
        // to the name is refused) and the socket files removed.
        owner.gate.close();
        let _ = self.doorbell.ring();
        if let Some(k) = owner.kernel.lock().as_ref() {
            k.notify_loops(); // an event loop asleep on the notify fd learns of the close
        }
        if let Some(t) = owner
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = t.join();
        }
        self.ring.close();
        owner.kernel.lock().take();
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

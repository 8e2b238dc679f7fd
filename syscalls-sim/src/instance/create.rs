//! Making an instance (`kevent_init`), in the process that owns it: the ring, the
//! kernel, the producer and gate threads; the owner's settings; closing it.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kevent_ring::{Liveness, Producer, Ring, WakeFd};

use super::{errno, Instance, Owner, DEFAULT_SPIN};
use crate::abi::*;
use crate::epoll;
use crate::gate::{Gate, GateCtx};
use crate::harvesters::Harvesters;
use crate::kernel::{Kernel, KernelLock, TOKEN_BELL, TOKEN_DOORBELL};
use crate::outbox::Outbox;
use crate::reaper::{Reaper, DEFAULT_REAP_INTERVAL};
use crate::thread::ProducerThread;

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
        let epoll = Arc::new(rustix::event::epoll::create(
            rustix::event::epoll::CreateFlags::CLOEXEC,
        )?);
        // The doorbell: the kernel reads one end (in its epoll set); every attached
        // process, this one included, rings the other.
        let (doorbell_in, doorbell) = WakeFd::pair()?;
        let events = libc::EPOLLIN as u32;
        epoll::add(
            epoll.as_fd(),
            doorbell_in.as_raw_fd(),
            TOKEN_DOORBELL,
            events,
        )
        .map_err(errno)?;
        // The poller blocks in `epoll_wait` on this same set; its bell is in it,
        // edge-triggered (see `wake/poller.rs` in kevent-ring).
        let bell = WakeFd::private()?;
        let events = (libc::EPOLLIN | libc::EPOLLET) as u32;
        epoll::add(epoll.as_fd(), bell.as_raw_fd(), TOKEN_BELL, events).map_err(errno)?;
        ring.set_bell(bell.try_clone()?);
        let harvesters = Arc::new(Harvesters::default());
        let producer = Producer::new(ring.clone()).map_err(io::Error::from)?;
        let outbox = Arc::new(Outbox::new(doorbell.try_clone()?));
        let mut kernel = Kernel::new(
            producer,
            epoll.clone(),
            doorbell_in,
            outbox,
            crate::DEFAULT_LEASE,
        );
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
        let (held_tx, held) = std::sync::mpsc::sync_channel(1);
        let producer = std::thread::Builder::new()
            .name("kevent-producer".into())
            .spawn(move || {
                tid.store(
                    rustix::thread::gettid().as_raw_nonzero().get(),
                    Ordering::Release,
                );
                thread.run(move || {
                    let _ = held_tx.send(());
                })
            })?;
        // Return only once the thread holds the owner word: from then on this process's
        // death, however early, reaches every consumer of another process. (Killed
        // before, it left the word unheld: their waits slept for good, and an event loop
        // on the notify fd spun on the owner's pidfd. tests/owner_death.rs.) A thread
        // that ends before it gets there drops the sender: no wait for ever.
        let _ = held.recv();
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
        self.set_in_kernel(|k| k.remote_signals = allow)
    }

    /// How long a live consumer may hold the entry at the release position while the
    /// ring is full or a backlog waits, before that entry is delivered to another
    /// consumer, flagged redelivered (default [`crate::DEFAULT_LEASE`], 2 s; checked every
    /// half reap interval). Its late commit is then a no-op.
    ///
    /// # Errors
    /// `EOPNOTSUPP` in a process that does not own the queue.
    pub fn set_lease(&self, lease: Duration) -> io::Result<()> {
        self.set_in_kernel(|k| k.lease = lease)
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
        self.set_in_kernel(|k| k.peer_limits = limits)
    }

    /// Runs `set` on the kernel's settings, if this process owns the queue.
    fn set_in_kernel(&self, set: impl FnOnce(&mut crate::kernel::Kernel)) -> io::Result<()> {
        let owner = self
            .owner
            .as_ref()
            .filter(|_| self.is_local())
            .ok_or_else(|| errno(libc::EOPNOTSUPP))?;
        if let Some(k) = owner.kernel.lock().as_mut() {
            set(k);
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

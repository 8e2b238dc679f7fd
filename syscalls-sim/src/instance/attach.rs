//! Attaching to an instance from another process: through its gate (`connect`), from a
//! memfd and a doorbell received otherwise (`attach`), or as a forked child
//! (`for_this_process`).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kevent_ring::{Liveness, Ring, WakeFd};

use super::notify::PeerNotify;
use super::{errno, Instance, DEFAULT_SPIN};
use crate::gate::{self, GateAddr, GateClient};

impl Instance {
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
}

//! Processes are peers (ARCHITECTURE.md §5): every process that controls a queue has its own
//! registrations, and what the owner holds on a peer's behalf is bounded.
//!
//! * **Namespaces.** A registration belongs to a [`PeerId`]: the owner's own
//!   ([`PeerId::OWNER`]), or one gate connection's — a process attached through the gate
//!   (`Instance::connect`, or a forked child's first `kevent_ctl`). Kevents are looked up by
//!   (peer, type, id): the id of an fd kevent is the caller's fd number *in the caller's
//!   process*, so two processes may register the same number, and a peer's MODIFY,
//!   REMOVE and READY reach only its own kevents. The owner's `kevent_ctl` reaches only
//!   the owner's: it ends a peer's kevents only by closing the queue (or when the peer's
//!   connection ends).
//! * **Lifetime.** A peer's kevents, and the fds held for them, go when its connection
//!   ends or its process dies (the gate watches a pidfd of the process that connected,
//!   so a peer whose own socket is registered — its copy held here — still goes).
//! * **Bounds** ([`PeerLimits`]): registrations per peer (`ENOSPC` beyond, as epoll's
//!   `max_user_watches`), fds held per peer and for all peers together (`EMFILE`
//!   beyond), so one peer at its bound leaves the owner and the other peers their share.

use std::collections::{HashMap, HashSet};

/// Who a registration belongs to: the owner, or one gate connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct PeerId(pub(crate) u64);

impl PeerId {
    /// The process that created the queue (its threads' `kevent_ctl`).
    pub(crate) const OWNER: PeerId = PeerId(0);
}

/// What the owner holds for each process attached through the gate, at most
/// ([`crate::Instance::set_peer_limits`]). The owner's own registrations are not bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLimits {
    /// Registrations of one peer (default 16,384; each costs the owner ~200 bytes).
    /// One more is refused with `ENOSPC`.
    pub registrations: usize,
    /// All peers' registrations together (default 131,072).
    pub all_registrations: usize,
    /// Fds the owner holds for one peer: a duplicate of each fd it registers (timers
    /// hold none: they share the queue's timerfds) (default: an eighth of the owner's `RLIMIT_NOFILE` soft limit when the
    /// queue was made, at least 16). One more is refused with `EMFILE`.
    pub fds: usize,
    /// Fds held for all peers together (default: half the soft limit, at least 64).
    pub all_fds: usize,
}

impl Default for PeerLimits {
    fn default() -> PeerLimits {
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(1 << 20)
            .min(1 << 20) as usize;
        PeerLimits {
            registrations: 16_384,
            all_registrations: 131_072,
            fds: (soft / 8).max(16),
            all_fds: (soft / 2).max(64),
        }
    }
}

/// What one peer holds.
#[derive(Debug, Default)]
pub(crate) struct PeerUse {
    /// Its registrations (indices into the kernel's table).
    pub(crate) regs: HashSet<usize>,
    /// Fds held for it.
    pub(crate) fds: usize,
}

/// The peers' accounting.
#[derive(Debug, Default)]
pub(crate) struct Peers {
    by_peer: HashMap<PeerId, PeerUse>,
    registrations: usize,
    fds: usize,
}

impl Peers {
    /// Whether `peer` may register one more kevent holding `fds` fds; the errno if not.
    pub(crate) fn admit(&self, limits: &PeerLimits, peer: PeerId, fds: usize) -> Result<(), i32> {
        if peer == PeerId::OWNER {
            return Ok(());
        }
        let mine = self.by_peer.get(&peer);
        let (regs, held) = mine.map_or((0, 0), |u| (u.regs.len(), u.fds));
        if regs >= limits.registrations || self.registrations >= limits.all_registrations {
            return Err(libc::ENOSPC);
        }
        if fds > 0 && (held + fds > limits.fds || self.fds + fds > limits.all_fds) {
            return Err(libc::EMFILE);
        }
        Ok(())
    }

    /// Counts registration `idx` of `peer`, holding `fds` fds.
    pub(crate) fn add(&mut self, peer: PeerId, idx: usize, fds: usize) {
        if peer == PeerId::OWNER {
            return;
        }
        let mine = self.by_peer.entry(peer).or_default();
        if mine.regs.insert(idx) {
            self.registrations += 1;
        }
        mine.fds += fds;
        self.fds += fds;
    }

    /// Uncounts registration `idx` of `peer`, which held `fds` fds.
    pub(crate) fn remove(&mut self, peer: PeerId, idx: usize, fds: usize) {
        let Some(mine) = self.by_peer.get_mut(&peer) else {
            return;
        };
        if mine.regs.remove(&idx) {
            self.registrations -= 1;
        }
        mine.fds = mine.fds.saturating_sub(fds);
        self.fds = self.fds.saturating_sub(fds);
        if mine.regs.is_empty() {
            self.by_peer.remove(&peer);
        }
    }

    /// The registrations of `peer` (to drop them all when it goes).
    pub(crate) fn registrations_of(&self, peer: PeerId) -> Vec<usize> {
        self.by_peer
            .get(&peer)
            .map(|u| u.regs.iter().copied().collect())
            .unwrap_or_default()
    }
}

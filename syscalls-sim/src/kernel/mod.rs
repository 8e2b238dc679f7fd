//! The simulated kernel's state: the registration table, the backlog, and the rules that
//! turn readiness into ring entries (ARCHITECTURE.md §4).
//!
//! Everything here runs under one mutex, held by whoever acts as the kernel at the
//! moment: the producer thread after `epoll_wait`, or a thread inside `kevent_ctl`. The
//! ring has a single producer, and this mutex is what makes it single.
//!
//! * **Coalescing.** A kevent has at most one *unclaimed* entry (in the backlog, or READY
//!   in the ring). Readiness for a kevent whose entry is still unclaimed is merged into
//!   the registration and counted as coalesced. Once a consumer has claimed the entry, an
//!   edge-triggered kevent may get a new entry on its next edge (as epoll re-reports an
//!   `EPOLLET` fd once `epoll_wait` has returned it); a level-triggered one waits for the
//!   commit, so it never has more than one entry outstanding.
//! * **Level-triggered** fd kevents are re-checked with one batched `poll(2)` when their
//!   entries end; still ready means a new entry. A re-check while the producer thread
//!   is parked moves the fd to epoll's level-triggered mode instead, where epoll
//!   re-reports it by itself, until epoll reports it while its entry is out
//!   (`source/fd.rs`).
//! * **Backlog.** When the ring is full, entries wait in a FIFO that is drained, ahead of
//!   anything newer, as commits free room. Nothing is dropped; `lost` stays 0.
//! * **Releases** (`uidx` passing an entry) are mapped back to kevents through a side
//!   table indexed like the ring and stamped with each entry's position and the
//!   registration's generation, so a stale mapping is never acted on.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use kevent_ring::{Producer, PushError, Ring, SlotState, Status, WakeFd};

mod ctl;
mod lock;
mod release;
mod tables;
mod timers;

pub(crate) use ctl::{compact_reported, Caller};
pub(crate) use lock::KernelLock;
pub(crate) use release::Completions;

use crate::abi::*;
use crate::epoll::{Reports, Taken};
use crate::harvesters::Harvesters;
use crate::outbox::Outbox;
use crate::peer::{PeerId, PeerLimits, Peers};
use crate::registration::{level_hold, Arm, Pending, Registration, Report, Swallow};
use crate::source::inode::Inodes;
use crate::source::signal::Signals;
use crate::source::timer::{Clock, Timers};
use crate::source::{fd, Source};
use tables::{Backlog, Published, SideTable};

/// epoll token of the doorbell eventfd.
pub(crate) const TOKEN_DOORBELL: u64 = u64::MAX;
/// epoll token of the poller's bell (edge-triggered; see `epoll.rs`, and `wake/poller.rs` in kevent-ring).
pub(crate) const TOKEN_BELL: u64 = u64::MAX - 1;
const TOKEN_SIGHANDLER: u64 = u64::MAX - 2;
const TOKEN_INOTIFY: u64 = u64::MAX - 3;
/// epoll tokens of the timerfds of the two clocks' timer heaps (`source/timer.rs`).
const TOKEN_TIMERS_MONOTONIC: u64 = u64::MAX - 4;
const TOKEN_TIMERS_REALTIME: u64 = u64::MAX - 5;

fn token(idx: usize, gen: u32) -> u64 {
    u64::from(gen) << 32 | idx as u64
}

/// The simulated kernel of one queue.
pub(crate) struct Kernel {
    pub(crate) producer: Producer,
    pub(crate) epoll: Arc<OwnedFd>,
    /// The doorbell's reading end (in the epoll set as [`TOKEN_DOORBELL`]); every
    /// attached process holds the ringing end.
    doorbell: WakeFd,
    /// The poller's bell (in the epoll set as [`TOKEN_BELL`]) and the word saying
    /// whether a consumer of this process is blocked as the poller.
    bell: Option<(WakeFd, Arc<Harvesters>)>,
    /// The notify fds (the owner's handle when armed, consumers in other processes'
    /// channels) and the doorbell's ringing end: written after the lock is released.
    pub(crate) outbox: Arc<Outbox>,
    /// Bumped at the end of every `kevent_ctl`. Whoever takes events from the epoll fd
    /// reads it right after `epoll_wait` returns: a report taken while a ctl was still
    /// running reads that ctl's number (see `Registration::swallow`).
    pub(crate) epoch: Arc<std::sync::atomic::AtomicU64>,
    /// Whether other processes may add signal kevents (`Instance::allow_remote_signals`).
    pub(crate) remote_signals: bool,
    /// How long a live consumer may hold the entry at `uidx` while the ring is needed
    /// (see `reaper.rs`).
    pub(crate) lease: std::time::Duration,
    regs: Vec<Option<Registration>>,
    free: Vec<usize>,
    /// (owner of the registration, type, id) → registration (see `peer.rs`).
    index: HashMap<(PeerId, u32, u64), usize>,
    /// What each process attached through the gate holds, and its bounds.
    peers: Peers,
    pub(crate) peer_limits: PeerLimits,
    backlog: Backlog,
    /// Per slot: the entry published there, and for which registration.
    side: SideTable,
    /// Releases up to here have been processed.
    released: u64,
    /// Level-triggered kevents ADD returned ready at once, to re-check when quiet
    /// (`recheck_done`), and whether there are any (read without the lock).
    done_level: Vec<(usize, u32)>,
    pub(crate) done_pending: Arc<std::sync::atomic::AtomicBool>,
    /// Level-triggered kevents released since the last re-check.
    recheck: Vec<usize>,
    /// The re-check's `poll(2)` array, kept for reuse.
    recheck_scratch: Vec<libc::pollfd>,
    /// Kevents released with arrivals merged meanwhile: they get a new entry.
    republish: Vec<usize>,
    /// Registrations whose release must be heard of (see `Registration::watched`).
    watch: usize,
    /// Positions consumers of this process committed, not yet handled (`release.rs`).
    pub(crate) completions: Arc<Completions>,
    next_gen: u32,
    signals: Signals,
    sig_regs: HashMap<i32, Vec<usize>>,
    inodes: Inodes,
    wd_regs: HashMap<i32, Vec<usize>>,
    timers: Timers,
    /// The timers an expiry found due, kept for reuse (`timers.rs`).
    timers_due: Vec<(usize, u32, u64)>,
}

impl Kernel {
    pub(crate) fn new(
        producer: Producer,
        epoll: Arc<OwnedFd>,
        doorbell: WakeFd,
        outbox: Arc<Outbox>,
        lease: std::time::Duration,
    ) -> Kernel {
        let released = producer.position();
        Kernel {
            producer,
            epoll,
            doorbell,
            bell: None,
            outbox,
            epoch: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            remote_signals: false,
            lease,
            regs: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
            peers: Peers::default(),
            peer_limits: PeerLimits::default(),
            backlog: Backlog::default(),
            side: SideTable::new(released),
            released,
            done_level: Vec::new(),
            done_pending: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            recheck: Vec::new(),
            recheck_scratch: Vec::new(),
            republish: Vec::new(),
            watch: 0,
            completions: Arc::new(Completions::default()),
            next_gen: 1,
            signals: Signals::default(),
            sig_regs: HashMap::new(),
            inodes: Inodes::default(),
            wd_regs: HashMap::new(),
            timers: Timers::new([TOKEN_TIMERS_MONOTONIC, TOKEN_TIMERS_REALTIME]),
            timers_due: Vec::new(),
        }
    }

    pub(crate) fn ring(&self) -> &Arc<Ring> {
        self.producer.ring()
    }

    /// The poller's bell, registered in the epoll set as [`TOKEN_BELL`], and the
    /// harvesters whose `blocker` says whether the poller is blocked.
    pub(crate) fn set_bell(&mut self, bell: WakeFd, harvesters: Arc<Harvesters>) {
        self.bell = Some((bell, harvesters));
    }

    /// Whether the producer must hear of the next commit before it sleeps.
    pub(crate) fn wants_release_notice(&self) -> bool {
        !self.backlog.is_empty() || self.watch > 0
    }

    /// Whether ready kevents wait for room in the ring.
    pub(crate) fn backlog_waiting(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Whether releases happened that `service` has not processed yet.
    pub(crate) fn releases_pending(&self) -> bool {
        self.ring().uidx() != self.released
    }

    fn reg(&mut self, idx: usize) -> Option<&mut Registration> {
        self.regs.get_mut(idx).and_then(Option::as_mut)
    }

    /// Current readiness of an fd kevent (`None` for other sources).
    /// The `poll(2)` flags seen are kept for the event (`Registration::revents`).
    fn poll_one(&mut self, idx: usize) -> Option<u32> {
        let reg = self.regs.get_mut(idx)?.as_mut()?;
        let Source::Fd { fd } = &reg.source else {
            return None;
        };
        let rev = fd::poll_now(&[(fd.raw(), reg.interest)]).map_or(0, |r| r[0]);
        let bits = fd::report(reg.ev.type_, reg.ev.event, rev);
        if bits != 0 {
            reg.note_revents(rev);
        }
        Some(bits)
    }

    /// Looks at an fd kevent's readiness now (`poll(2)`) and reports it if ready; returns
    /// whether it was.
    fn report_if_ready(&mut self, idx: usize) -> bool {
        match self.poll_one(idx).filter(|&b| b != 0) {
            Some(bits) => {
                self.mark_ready(idx, bits, 0);
                true
            }
            None => false,
        }
    }

    // --- readiness ----------------------------------------------------------------------

    /// Handles one epoll event, taken by a wait at `taken`. Returns whether it was a
    /// level-triggered epoll's re-report of an entry still out, dropped (`on_fd_token`).
    pub(crate) fn on_token(&mut self, tok: u64, flags: u32, taken: Taken) -> bool {
        match tok {
            TOKEN_DOORBELL => {
                // Reset it; the releases it announces are handled by `service`, the
                // completions (of consumers in other processes, which say nothing of
                // which entries) here.
                self.doorbell.reset();
                self.scan_completions();
                // Another process's waker rings the doorbell to reach a poller of ours
                // (it cannot reach our bell): relay it if entries wait.
                if self.ring().pollers() > 0 && self.ring().has_claimable() {
                    self.ring().ring_bell();
                }
            }
            TOKEN_BELL => {
                let Some((bell, harvesters)) = &self.bell else {
                    return false;
                };
                bell.reset();
                // The edge was meant for the poller, blocked in `epoll_wait` on this
                // epoll fd, and someone else took it (a harvester's `epoll_wait(0)`, the
                // producer thread): ring again while the poller is blocked. The poller
                // takes its own bell edges after it stopped being the poller, so it
                // never rings for itself. SeqCst fence: if the poller's announcement
                // (`blocker`, then `poller_enter`'s fence) is not seen here, this fence
                // comes first in their order, after the waker's ring — so the poller's
                // re-check sees the waker's news and it does not sleep.
                std::sync::atomic::fence(Ordering::SeqCst);
                if harvesters.blocker.load(Ordering::Relaxed) {
                    self.ring().ring_bell();
                }
            }
            TOKEN_SIGHANDLER => {
                for (signo, n) in self.signals.handler_deltas() {
                    self.signal_arrived(signo, n);
                }
            }
            TOKEN_TIMERS_MONOTONIC => self.timers_fired(Clock::Monotonic),
            TOKEN_TIMERS_REALTIME => self.timers_fired(Clock::Realtime),
            TOKEN_INOTIFY => {
                for (wd, bit) in self.inodes.read() {
                    for idx in self.wd_regs.get(&wd).cloned().unwrap_or_default() {
                        if self.reg(idx).is_some_and(|r| r.ev.event & bit != 0) {
                            self.mark_ready(idx, bit, 1);
                        }
                    }
                }
            }
            _ => return self.on_fd_token(tok, flags, taken),
        }
        false
    }

    /// [`Kernel::on_token`] for a registration's token: an fd's readiness report (the
    /// path of nearly every event, kept to one look-up of the registration).
    #[inline]
    fn on_fd_token(&mut self, tok: u64, flags: u32, taken: Taken) -> bool {
        let (idx, gen) = ((tok & 0xffff_ffff) as usize, (tok >> 32) as u32);
        let Some(reg) = self.reg(idx).filter(|r| r.gen == gen) else {
            return false;
        };
        if let Some(sw) = reg.swallow {
            // Maybe the report of the readiness ADD or MODIFY found (`Swallow`).
            match sw.judge(taken) {
                Report::Ctls => {
                    reg.swallow = Some(Swallow {
                        dropped: true,
                        ..sw
                    });
                    return false;
                }
                Report::Unsure => {
                    reg.swallow = None;
                    self.report_if_ready(idx);
                    return false;
                }
                Report::Newer => reg.swallow = None,
            }
        }
        if reg.arm == Arm::Level || reg.verify_next {
            // Taken by a wait entered while an entry of it was out (`Taken::released`):
            // a level-triggered epoll's re-report, or the one `back_to_edge`'s
            // `EPOLL_CTL_MOD` queued, may be of readiness its consumer has read since.
            let maybe_stale =
                reg.pending == Pending::Backlog || taken.released < reg.published_below;
            if let (Arm::Level, Pending::InRing(pos)) = (reg.arm, reg.pending) {
                // Its commit asked nothing of the kernel (nothing to re-check): the entry
                // may be over without the kernel knowing yet.
                self.catch_up(pos);
            }
            let Some(reg) = self.reg(idx) else {
                return false;
            };
            let out = reg.pending != Pending::Idle;
            if reg.arm == Arm::Level && out && !taken.blocking && !reg.disabled {
                // A harvest's `epoll_wait(0)` met epoll's re-report of an entry still out
                // (its own earlier batch's, typically): nothing to do, epoll reports the
                // fd again after the commit while it is ready. A wait that could block
                // would spin on it: that one sends it back to `EPOLLET`, below.
                return true;
            }
            if reg.arm == Arm::Level && (maybe_stale || out || reg.disabled) {
                // Reported while its entry is out: epoll would report it at every
                // `epoll_wait` until the commit (`source/fd.rs`).
                self.back_to_edge(idx);
            }
            let Some(reg) = self.reg(idx) else {
                return false;
            };
            if reg.pending == Pending::Idle {
                reg.verify_next = false;
                if maybe_stale {
                    // Looked at after the entry ended: reported only if still ready.
                    self.report_if_ready(idx);
                    return false;
                }
            }
            // An entry still out: merged below, as any report, and re-checked at its end.
        }
        let Some(reg) = self.reg(idx) else {
            return false;
        };
        if let Source::Fd { .. } = &reg.source {
            let bits = fd::report(reg.ev.type_, reg.ev.event, flags);
            if bits != 0 {
                reg.note_revents(flags);
                self.mark_ready(idx, bits, 0);
            }
        }
        false
    }

    /// Learns whether the entry at `pos` is over: the releases up to `uidx` now, or else
    /// its completion (`release.rs`).
    fn catch_up(&mut self, pos: u64) {
        if let Ok(released) = self.producer.released(self.released) {
            if released.end > pos {
                self.note_releases(released.end);
                return;
            }
        }
        self.note_completion(pos);
    }

    /// Puts a level kevent's fd back into the epoll set `EPOLLET` (see `source/fd.rs`),
    /// held there for a while (`level_hold`): its entries end with the `poll(2)`
    /// re-check again, so an entry out now is watched.
    fn back_to_edge(&mut self, idx: usize) {
        let Some(reg) = self.regs.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        if let Source::Fd { fd } = &reg.source {
            // An error means the number no longer names the file: epoll dropped it.
            let _ = fd::arm(
                self.epoll.as_fd(),
                fd,
                reg.interest,
                token(idx, reg.gen),
                false,
            );
        }
        reg.arm = Arm::Edge;
        reg.verify_next = true;
        reg.demoted = reg.demoted.saturating_add(1);
        reg.hold = level_hold(reg.demoted);
        if matches!(reg.pending, Pending::InRing(_)) {
            self.watch(idx);
        }
    }

    /// Whether new arrivals for `idx` would only be merged into its outstanding entry
    /// (see `mark_ready`): it is pending, and not an edge-triggered kevent whose entry a
    /// consumer has claimed (that one gets a new entry).
    fn only_merges(&self, idx: usize) -> bool {
        let Some(reg) = self.regs.get(idx).and_then(Option::as_ref) else {
            return false;
        };
        match reg.pending {
            Pending::Idle => false,
            Pending::Backlog => true,
            Pending::InRing(pos) => {
                let ring = self.ring();
                let unclaimed = ring.slot_state(pos)
                    == Some(SlotState::new(pos / ring.capacity(), 0, Status::Ready));
                unclaimed || !reg.edge_triggered()
            }
        }
    }

    fn signal_arrived(&mut self, signo: i32, n: u64) {
        for idx in self.sig_regs.get(&signo).cloned().unwrap_or_default() {
            self.mark_ready(idx, KEVENT_SIGNAL_DELIVERY, n);
        }
    }

    fn watch(&mut self, idx: usize) {
        let reg = self.regs[idx].as_mut().expect("registered");
        if !reg.watched {
            reg.watched = true;
            self.watch += 1;
            self.note_watch_count();
        }
    }

    fn unwatch(&mut self, idx: usize) {
        let reg = self.regs[idx].as_mut().expect("registered");
        if reg.watched {
            reg.watched = false;
            self.watch -= 1;
            self.note_watch_count();
        }
    }

    /// Tells committers whether their completions matter (`release.rs`).
    fn note_watch_count(&self) {
        self.completions
            .wanted
            .store(self.watch > 0, Ordering::Relaxed);
    }

    /// New readiness (`bits`) or arrivals (`count`) for a kevent: queue an entry, or merge
    /// into the one already pending.
    fn mark_ready(&mut self, idx: usize, bits: u32, count: u64) {
        let Some(reg) = self.reg(idx) else { return };
        if reg.disabled {
            return;
        }
        reg.ready |= bits;
        reg.count = reg.count.saturating_add(count);
        let edge = reg.edge_triggered();
        let is_fd = reg.is_fd();
        let pending = reg.pending;
        let ring = self.producer.ring();
        match pending {
            Pending::Idle => self.publish(idx),
            Pending::Backlog => {
                ring.stats().coalesced.fetch_add(1, Ordering::Relaxed);
            }
            Pending::InRing(pos) => {
                let unclaimed = ring.slot_state(pos)
                    == Some(SlotState::new(pos / ring.capacity(), 0, Status::Ready));
                if !unclaimed && edge && !is_fd {
                    // A counted source (timer, signal, ...) whose entry was claimed: new
                    // arrivals are a new event.
                    self.publish(idx);
                } else {
                    ring.stats().coalesced.fetch_add(1, Ordering::Relaxed);
                    // Merged; handled when the outstanding entry is released: an fd is
                    // re-checked then (poll) and reported again only if still ready, so
                    // an edge-triggered fd never has two entries out at once (two
                    // consumers racing for one byte, one of them reading nothing);
                    // counted arrivals get a new entry.
                    self.watch(idx);
                }
            }
        }
    }

    /// Queues an entry for `idx`: into the ring if it has room and no older entry waits,
    /// else at the back of the backlog.
    fn publish(&mut self, idx: usize) {
        if !self.backlog.is_empty() || self.try_push(idx) == Err(PushError::Full) {
            let reg = self.regs[idx].as_mut().expect("registered");
            if reg.pending != Pending::Backlog {
                reg.pending = Pending::Backlog;
                let gen = reg.gen;
                self.backlog.push_back(idx, gen);
                self.ring()
                    .stats()
                    .backlogged
                    .fetch_add(1, Ordering::Relaxed);
                self.publish_backlog_len();
            }
        }
    }

    fn publish_backlog_len(&self) {
        self.ring()
            .stats()
            .backlog_len
            .store(self.backlog.len() as u64, Ordering::Relaxed);
    }

    /// Pushes `idx`'s entry into the ring (not yet flushed).
    fn try_push(&mut self, idx: usize) -> Result<(), PushError> {
        // The slot about to be filled held the entry of position `next - capacity`: its
        // release must be accounted for — its claim stamp read — before the push
        // overwrites it. If it was not released when we looked, the ring is full to us,
        // even if a consumer releases it before `push` reads `uidx` again: pushing then
        // would overwrite a stamp nobody read, and a claimed entry would be taken for an
        // unclaimed one and delivered twice (tests/consumers_racing_the_producer.rs).
        let (next, cap) = (self.producer.position(), self.ring().capacity());
        if next >= cap && self.released <= next - cap {
            if let Ok(released) = self.producer.released(self.released) {
                self.note_releases(released.end.min(next + 1 - cap));
            }
            if self.released <= next - cap {
                return Err(PushError::Full);
            }
        }
        let reg = self.regs[idx].as_mut().expect("registered");
        let wake_all = reg.ev.req_flags & KEVENT_REQ_WAKEUP_ALL != 0;
        let entry = reg.peek_entry();
        let pos = self.producer.push(&entry, wake_all)?;
        reg.consume_entry();
        reg.pending = Pending::InRing(pos);
        reg.published_below = pos + 1;
        if reg.ev.req_flags & KEVENT_REQ_ONESHOT != 0 {
            reg.disabled = true;
        }
        let (gen, recheck) = (reg.gen, reg.rechecked_at_end());
        self.side.push(pos, Published::new(idx, gen, entry));
        if recheck {
            self.watch(idx);
        }
        Ok(())
    }

    /// Moves backlogged entries into the ring while it has room, oldest first.
    fn drain_backlog(&mut self) {
        while let Some(idx) = self.backlog.front(&self.regs) {
            let last_check = self.regs[idx].as_ref().is_some_and(|r| {
                r.ev.req_flags & KEVENT_REQ_LAST_CHECK != 0 && r.redeliver.is_none()
            });
            if last_check {
                if let Some(bits) = self.poll_one(idx) {
                    if bits == 0 {
                        // No longer ready: the condition passed, nothing to deliver.
                        self.backlog.pop_front();
                        let reg = self.regs[idx].as_mut().expect("registered");
                        reg.pending = Pending::Idle;
                        reg.ready = 0;
                        continue;
                    }
                    self.regs[idx].as_mut().expect("registered").ready = bits;
                }
            }
            match self.try_push(idx) {
                Ok(()) => {
                    self.backlog.pop_front();
                }
                Err(_) => break,
            }
        }
        self.publish_backlog_len();
    }

    /// Processes releases, drains the backlog, re-checks released level-triggered
    /// kevents, and publishes (one `kidx` store, one wake call). `reserve`: how many of
    /// the new entries the caller, a consumer, claims itself right after (it wakes that
    /// many fewer sleepers).
    pub(crate) fn service(&mut self, reserve: u64) -> u64 {
        self.drain_completions();
        loop {
            let released = match self.producer.released(self.released) {
                Ok(r) => r,
                Err(_) => return 0,
            };
            self.note_releases(released.end);
            for idx in std::mem::take(&mut self.republish) {
                let ready = self
                    .regs
                    .get(idx)
                    .and_then(Option::as_ref)
                    .is_some_and(|r| {
                        r.pending == Pending::Idle
                            && (r.redeliver.is_some() || (r.has_news() && !r.disabled))
                    });
                if ready {
                    self.publish(idx);
                }
            }
            self.drain_backlog();
            let rechecked = self.recheck_level();
            if (!rechecked && self.republish.is_empty()) || self.producer.room().unwrap_or(0) == 0 {
                break;
            }
        }
        let published = self.producer.flush_reserving(reserve);
        if published > 0 {
            self.notify_loops();
        }
        published
    }

    /// Makes the notify fds readable (event loops asleep on them are sleepers too, see
    /// `Instance::notify_fd`) once the lock is released (`outbox.rs`).
    pub(crate) fn notify_loops(&self) {
        self.outbox.notify_later();
    }

    /// Makes every publish also make `fd` readable: the owner's handle (`peer` is
    /// [`PeerId::OWNER`]) or a consumer in another process's channel (replacing an
    /// earlier one of that peer). Readable at once if entries wait.
    pub(crate) fn add_notify(&mut self, peer: PeerId, fd: WakeFd) {
        self.outbox.add_target(peer, fd);
        if self.ring().has_claimable() {
            self.notify_loops();
        }
    }

    /// Ends a stint as the kernel outside the producer thread (ctl, harvest): if commits
    /// matter now (a backlog, level re-checks), ask for the doorbell — the producer
    /// thread may be asleep without having asked — and catch releases that raced in.
    pub(crate) fn settle(&mut self) {
        if self.wants_release_notice() {
            self.ring().request_doorbell();
            if self.releases_pending() {
                self.service(0);
            }
        }
    }

    /// One non-blocking round of the producer's work, done by a consumer of the owning
    /// process instead of waking the producer thread (see `Instance::next_batch`): collect
    /// ready sources with `epoll_wait(0)`, turn them into entries, publish, waking
    /// `reserve` fewer sleepers (the caller claims that many itself). Returns how many
    /// entries it published.
    pub(crate) fn harvest(&mut self, reserve: u64) -> u64 {
        self.harvest_now();
        self.recheck_done();
        let n = self.service(reserve);
        self.settle();
        n
    }

    /// The poller's round (see `Instance::next_batch`): turns the reports it took in its
    /// blocking `epoll_wait` into readiness and publishes, waking `reserve` fewer
    /// sleepers; returns how many entries it published. Its bell's reports are skipped:
    /// the poller reset the bell itself, and its own edges need no ringing again.
    pub(crate) fn harvest_reports(&mut self, reports: &Reports, reserve: u64) -> u64 {
        for (tok, flags) in reports.iter().filter(|&(tok, _)| tok != TOKEN_BELL) {
            self.on_token(tok, flags, reports.taken());
        }
        self.recheck_done();
        let n = self.service(reserve);
        self.settle();
        n
    }

    /// Takes what the epoll fd has ready now (`epoll_wait(0)`) and turns it into
    /// readiness, without publishing.
    fn harvest_now(&mut self) {
        thread_local! {
            // Per harvesting thread (epoll events are not Send, so not in the kernel).
            static REPORTS: std::cell::RefCell<Reports> = std::cell::RefCell::new(Reports::new());
        }
        REPORTS.with(|reports| {
            let mut reports = reports.borrow_mut();
            let zero = kevent_ring::timespec(0);
            // Until epoll has no more: a ctl's harvest must find the reports its ADDs
            // queued (`Swallow`).
            while reports
                .take(self.epoll.as_fd(), Some(&zero), &self.epoch, self.ring())
                .is_ok()
            {
                let mut news = false;
                for (tok, flags) in reports.iter() {
                    news |= !self.on_token(tok, flags, reports.taken());
                }
                // A full batch of nothing but re-reports of entries still out: what
                // follows would be more of them (`on_fd_token`).
                if !reports.filled() || !news {
                    break;
                }
            }
        });
    }

    /// Re-checks released level-triggered kevents in one `poll(2)`; returns whether any
    /// was still ready (and got a new entry). One that may move to epoll's
    /// level-triggered mode does so instead (`source/fd.rs`): its `EPOLL_CTL_MOD` is its
    /// re-check, reported by the next `epoll_wait`.
    fn recheck_level(&mut self) -> bool {
        if self.recheck.is_empty() {
            return false;
        }
        // The lists' memory is kept from one re-check to the next (this runs after most
        // commits of level kevents).
        let mut list = std::mem::take(&mut self.recheck);
        let mut scratch = std::mem::take(&mut self.recheck_scratch);
        scratch.clear();
        let epoll = self.epoll.as_fd();
        let parked = self.producer.ring().producer_parked();
        list.retain(|&idx| {
            let Some(reg) = self.regs.get_mut(idx).and_then(Option::as_mut) else {
                return false;
            };
            let Source::Fd { fd } = &reg.source else {
                return false;
            };
            if reg.pending != Pending::Idle {
                return false;
            }
            if reg.level_fd() && reg.arm == Arm::Edge {
                reg.hold = reg.hold.saturating_sub(1);
            }
            // The producer thread parked (consumers harvest): in `epoll_wait`, it would
            // take epoll's re-reports of the fd while its entry is out.
            if reg.may_arm_level()
                && reg.redeliver.is_none()
                && parked
                && fd::arm(epoll, fd, reg.interest, token(idx, reg.gen), true).is_ok()
            {
                // As the re-check's answer would, epoll's replaces the edges merged
                // meanwhile.
                reg.arm = Arm::Level;
                reg.ready = 0;
                reg.revents = 0;
                return false;
            }
            scratch.push(fd::pollfd(fd.raw(), reg.interest));
            true
        });
        let polled = !scratch.is_empty() && fd::poll_in_place(&mut scratch).is_ok();
        let mut any = false;
        for (&idx, p) in list.iter().zip(&scratch).filter(|_| polled) {
            let rev = fd::revents(p);
            let reg = self.regs[idx].as_mut().expect("listed");
            // The re-check's answer replaces whatever edges were merged meanwhile.
            reg.ready = 0;
            reg.revents = 0;
            let bits = fd::report(reg.ev.type_, reg.ev.event, rev);
            if bits != 0 {
                self.regs[idx].as_mut().expect("listed").note_revents(rev);
                self.mark_ready(idx, bits, 0);
                any = true;
            }
        }
        list.clear();
        // Kevents listed meanwhile (mark_ready above lists none) stay; the spare memory
        // goes back for the next re-check.
        if self.recheck.is_empty() {
            self.recheck = list;
        }
        self.recheck_scratch = scratch;
        any
    }

    /// Re-delivers the entries at `positions` (reclaimed from a dead or stalled consumer,
    /// in ascending ring order), flagged `REDELIVERED`, ahead of the backlog and in that
    /// order — a batch promises ring order (`kevent::Batch::iter`), and one consumer's
    /// claims come back as one run. If a kevent has a newer entry already, the old entry's
    /// readiness and counts are merged into it instead: nothing is lost.
    pub(crate) fn redeliver(&mut self, positions: &[u64]) {
        let mut ahead = Vec::new();
        for &pos in positions {
            let Some(&rec) = self.side.get(pos) else {
                continue;
            };
            let (idx, gen, entry) = (rec.idx(), rec.gen, rec.entry);
            let Some(reg) = self.regs.get_mut(idx).and_then(Option::as_mut) else {
                continue;
            };
            if reg.gen != gen {
                continue;
            }
            self.producer
                .ring()
                .stats()
                .redelivered
                .fetch_add(1, Ordering::Relaxed);
            if reg.pending == Pending::InRing(pos) {
                reg.redeliver = Some(Box::new(entry));
                reg.pending = Pending::Backlog;
                ahead.push((idx, gen));
            } else {
                let count = u64::from(entry.ret_data[0]) | u64::from(entry.ret_data[1]) << 32;
                let was_disabled = std::mem::replace(&mut reg.disabled, false);
                self.mark_ready(idx, entry.event, count);
                if let Some(reg) = self.reg(idx) {
                    reg.disabled |= was_disabled;
                }
            }
        }
        // Pushed to the front last one first, so that the first comes out first.
        for &(idx, gen) in ahead.iter().rev() {
            self.backlog.push_front(idx, gen);
        }
        if !ahead.is_empty() {
            self.publish_backlog_len();
        }
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        // Every fd the kernel made (the timers' timerfds, inotify, its copies of fds received through
        // the gate) is an OwnedFd in the table and closes here; the epoll fd closes with
        // the last Arc.
        self.regs.clear();
    }
}

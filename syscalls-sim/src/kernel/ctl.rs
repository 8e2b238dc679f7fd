//! `kevent_ctl` in the kernel: ADD, REMOVE, MODIFY and READY on the registration table.

use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;

use kevent_ring::{ConsumerId, Ukevent};

use super::{token, Kernel, TOKEN_INOTIFY, TOKEN_SIGHANDLER};
use crate::abi::*;
use crate::peer::PeerId;
use crate::registration::{held_fds, Arm, Pending, Registration, Swallow};
use crate::source::signal;
use crate::source::{fd, Source};

/// The errno of one `kevent_ctl` entry.
type EntryResult = Result<(), i32>;

/// Moves the entries ADD reported (`DONE`: ready at once, or failed) to the front,
/// keeping their order and the others' order; returns how many there are.
pub(crate) fn compact_reported(events: &mut [Ukevent]) -> usize {
    let (reported, quiet): (Vec<Ukevent>, Vec<Ukevent>) = events
        .iter()
        .partition(|e| e.ret_flags & KEVENT_RET_DONE != 0);
    let n = reported.len();
    for (slot, ev) in events.iter_mut().zip(reported.into_iter().chain(quiet)) {
        *slot = ev;
    }
    n
}

/// Who calls `kevent_ctl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller {
    /// A thread of the owning process: ADD's reported entries move to the front.
    Local,
    /// Another process, through its gate connection: its own registrations (`peer.rs`);
    /// results stay in place (the client compacts them), and the owner's process-wide
    /// state — its signal dispositions — is off limits unless the owner allowed it
    /// (`Instance::allow_remote_signals`).
    Gate(PeerId),
}

impl Caller {
    /// Whose registrations the call acts on.
    fn peer(self) -> PeerId {
        match self {
            Caller::Local => PeerId::OWNER,
            Caller::Gate(peer) => peer,
        }
    }
}

impl Kernel {
    /// `kevent_ctl`: see [`crate::kevent_ctl`] for the contract. `fd_for[i]`, when
    /// given, is the fd (in this process) behind entry `i` of an ADD — the gate's case,
    /// where the entry's id is the sender's fd number.
    pub(crate) fn ctl(
        &mut self,
        cmd: u32,
        events: &mut [Ukevent],
        fd_for: &[Option<i32>],
        caller: Caller,
    ) -> io::Result<usize> {
        let out = match cmd {
            KEVENT_CTL_ADD => self.ctl_add(events, fd_for, caller),
            KEVENT_CTL_REMOVE | KEVENT_CTL_MODIFY | KEVENT_CTL_READY => {
                if cmd == KEVENT_CTL_READY && events.is_empty() {
                    // An explicit wake-up: one sleeper, wherever it sleeps (futex, the
                    // sources, an event loop on the notify fd), returns `Woken`.
                    self.ring().kick(1);
                    self.notify_loops();
                    return Ok(0);
                }
                let mut failed = 0;
                let peer = caller.peer();
                for ev in events.iter_mut() {
                    let r = match cmd {
                        KEVENT_CTL_REMOVE => self.remove_one(ev, peer),
                        KEVENT_CTL_MODIFY => self.modify_one(ev, peer),
                        _ => self.ready_one(ev, peer),
                    };
                    ev.ret_flags = KEVENT_RET_DONE;
                    if let Err(errno) = r {
                        ev.ret_flags |= KEVENT_RET_BROKEN;
                        ev.ret_data[1] = errno as u32;
                        failed += 1;
                    }
                }
                if cmd == KEVENT_CTL_MODIFY {
                    self.take_found_reports(events, peer);
                }
                failed
            }
            _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
        };
        self.service(0);
        self.settle();
        // Release: a reader that sees the new number sees this ctl's effects.
        self.epoch.fetch_add(1, Ordering::Release);
        Ok(out)
    }

    /// ADD: the entries ready at once (`DONE`) and those that failed (`BROKEN|DONE`,
    /// errno in `ret_data[1]`) are written back at the front of `events`, in order,
    /// followed by the others; returns how many are at the front.
    fn ctl_add(&mut self, events: &mut [Ukevent], fd_for: &[Option<i32>], caller: Caller) -> usize {
        for (i, ev) in events.iter_mut().enumerate() {
            ev.ret_flags = 0;
            ev.ret_data = [0, 0];
            match self.add_one(ev, fd_for.get(i).copied().flatten(), caller) {
                Ok(true) => ev.ret_flags = KEVENT_RET_DONE,
                Ok(false) => {}
                Err(errno) => {
                    ev.ret_flags = KEVENT_RET_BROKEN | KEVENT_RET_DONE;
                    ev.ret_data[1] = errno as u32;
                }
            }
        }
        if self.done_pending.load(Ordering::Relaxed) {
            self.wake_for_done_recheck();
        }
        self.take_found_reports(events, caller.peer());
        if caller == Caller::Local {
            compact_reported(events)
        } else {
            events
                .iter()
                .filter(|e| e.ret_flags & KEVENT_RET_DONE != 0)
                .count()
        }
    }

    /// After ADDs or MODIFYs of `events`: takes the reports their `epoll_ctl` queued for
    /// the fds it found ready, while they can only be that readiness (which the ctl
    /// returned or queued itself): after this ctl, a new edge makes a new report. A report
    /// not found here was taken by a wait already under way — or dropped by epoll
    /// because the fd was drained meanwhile: still ready tells them apart (`Swallow`).
    fn take_found_reports(&mut self, events: &[Ukevent], peer: PeerId) {
        let found_ready = events.iter().any(|ev| {
            let reg = self.index.get(&(peer, ev.type_, ev.id));
            reg.and_then(|&i| self.regs[i].as_ref())
                .is_some_and(|r| r.swallow.is_some_and(|sw| !sw.dropped))
        });
        if !found_ready {
            return;
        }
        self.harvest_now();
        for ev in events.iter() {
            let Some(&idx) = self.index.get(&(peer, ev.type_, ev.id)) else {
                continue;
            };
            let pending = self.regs[idx]
                .as_ref()
                .is_some_and(|r| r.swallow.is_some_and(|sw| !sw.dropped));
            if pending && self.poll_one(idx).is_some_and(|bits| bits != 0) {
                if let Some(sw) = self.regs[idx].as_mut().and_then(|r| r.swallow.as_mut()) {
                    sw.elsewhere = true;
                }
            }
        }
    }

    /// Registers one kevent; `Ok(true)` if it was ready at once and is returned by ADD
    /// instead of queued.
    fn add_one(&mut self, ev: &Ukevent, fd: Option<i32>, caller: Caller) -> Result<bool, i32> {
        if ev.type_ >= KEVENT_MAX || ev.type_ == KEVENT_AIO || ev.type_ == KEVENT_NAIO {
            return Err(libc::ENOSYS);
        }
        if ev.type_ == KEVENT_SIGNAL && caller != Caller::Local && !self.remote_signals {
            // A signal kevent changes the owner's disposition of that signal.
            return Err(libc::EPERM);
        }
        if ev.req_flags & !KEVENT_REQ_ALL != 0 {
            return Err(libc::EINVAL);
        }
        let peer = caller.peer();
        let key = (peer, ev.type_, ev.id);
        if let Some(&old) = self.index.get(&key) {
            // Registered — unless the fd number was closed and now names another file:
            // that registration is stale (its file left epoll when it closed).
            let stale = self.regs[old]
                .as_ref()
                .is_some_and(|r| matches!(&r.source, Source::Fd { fd } if !fd.is_current()));
            if !stale {
                return Err(libc::EEXIST);
            }
            self.unregister(old);
        }
        // What the owner holds for a peer is bounded (`peer.rs`): checked before any fd
        // is duplicated. A received fd is duplicated (timers share one timerfd per clock).
        let fds = match ev.type_ {
            KEVENT_SOCKET | KEVENT_PIPE | KEVENT_POLL if fd.is_some() => 1,
            _ => 0,
        };
        self.peers.admit(&self.peer_limits, peer, fds)?;
        let idx = self.free.pop().unwrap_or_else(|| {
            self.regs.push(None);
            self.regs.len() - 1
        });
        let gen = self.next_gen;
        self.next_gen = self.next_gen.wrapping_add(1).max(1);
        match self.make_source(ev, fd, idx, gen) {
            Ok((source, interest)) => {
                self.peers.add(peer, idx, held_fds(&source));
                self.regs[idx] = Some(Registration::new(*ev, peer, gen, source, interest));
                self.index.insert(key, idx);
                self.ring()
                    .stats()
                    .registered
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(errno) => {
                self.free.push(idx);
                return Err(errno);
            }
        }
        // An fd that is ready already: returned by ADD, or queued with ALWAYS_QUEUE.
        let ready_now = self.poll_one(idx).unwrap_or(0);
        if ready_now == 0 {
            return Ok(false);
        }
        if ev.req_flags & KEVENT_REQ_ALWAYS_QUEUE != 0 {
            self.mark_ready(idx, ready_now, 0);
            // Queued: its epoll report is the same readiness (see `Registration::swallow`).
            let ctl = self.epoch.load(Ordering::Relaxed);
            if let Some(reg) = self.reg(idx) {
                reg.swallow = Some(Swallow::new(ctl));
            }
            Ok(false)
        } else {
            // The epoll_ctl(ADD) of a ready fd queued a report of this same readiness,
            // which ADD returns: that report is not delivered again if it is taken
            // before this ctl ends (see `Registration::swallow`).
            let ctl = self.epoch.load(Ordering::Relaxed);
            let reg = self.reg(idx).expect("registered");
            reg.swallow = Some(Swallow::new(ctl));
            if ev.req_flags & KEVENT_REQ_ONESHOT != 0 {
                reg.disabled = true;
            } else if reg.level_fd() {
                // Level-triggered: if the caller leaves it ready, it must be reported
                // again (W4, "ADD's DONE return included") — but not before the caller
                // had the returned event (ADD's answer is not also queued): re-checked
                // at the next quiet moment (`recheck_done`).
                self.note_done_level(idx, gen);
            }
            Ok(true)
        }
    }

    /// Lists a level kevent ADD returned ready for its re-check (`recheck_done`). Entries
    /// of kevents removed meanwhile are pruned whenever the list doubles past 64: ADD and
    /// REMOVE churn while nobody waits (no quiet moment) must not grow it without bound.
    fn note_done_level(&mut self, idx: usize, gen: u32) {
        let len = self.done_level.len();
        if len >= 64 && len.is_power_of_two() {
            let regs = &self.regs;
            self.done_level.retain(|&(i, g)| {
                regs.get(i)
                    .and_then(Option::as_ref)
                    .is_some_and(|r| r.gen == g)
            });
        }
        self.done_level.push((idx, gen));
        self.done_pending.store(true, Ordering::Relaxed);
    }

    /// The level-triggered kevents ADD returned ready at once (`DONE`), re-checked at a
    /// quiet moment — a consumer of this process found the ring empty and harvests
    /// before it sleeps, or the producer thread finds a consumer asleep on the futex with
    /// the ring empty: one still ready (its caller left it so) is queued, as a released
    /// level kevent is (ARCHITECTURE.md §3, W4). Returns whether any was.
    pub(crate) fn recheck_done(&mut self) -> bool {
        // A load first: this runs on every harvest, and the flag is rarely set (the
        // kernel's lock is held, so load-then-store races with nobody who writes it).
        if !self.done_pending.load(Ordering::Relaxed) {
            return false;
        }
        self.done_pending.store(false, Ordering::Relaxed);
        let mut any = false;
        for (idx, gen) in std::mem::take(&mut self.done_level) {
            let idle = self
                .regs
                .get(idx)
                .and_then(Option::as_ref)
                .is_some_and(|r| {
                    r.gen == gen && r.pending == Pending::Idle && !r.disabled && !r.has_news()
                });
            if idle {
                any |= self.report_if_ready(idx);
            }
        }
        any
    }

    /// A level kevent ADD returned ready waits for its re-check at a quiet moment; if a
    /// consumer is asleep now, this is one: wake whoever re-checks — the poller (its bell:
    /// it wakes, finds the ring empty and harvests, re-checking), or the producer thread
    /// watching for futex sleepers (the doorbell, in its epoll set: its next loop
    /// re-checks). Without it a consumer blocked before the ADD slept on with the source
    /// ready (found by an outside trial).
    fn wake_for_done_recheck(&self) {
        let poller = self
            .bell
            .as_ref()
            .is_some_and(|(_, h)| h.blocker.load(Ordering::Relaxed));
        if poller {
            self.ring().ring_bell();
        } else if self.ring().sleepers() > 0 {
            // After the lock is released (`outbox.rs`).
            self.outbox.doorbell_later();
        }
    }

    fn make_source(
        &mut self,
        ev: &Ukevent,
        fd: Option<i32>,
        idx: usize,
        gen: u32,
    ) -> Result<(Source, u32), i32> {
        let received = fd.is_some();
        let fd = fd.unwrap_or(ev.id_raw()[0] as i32);
        let tok = token(idx, gen);
        let epoll = self.epoll.clone();
        match ev.type_ {
            KEVENT_SOCKET | KEVENT_PIPE | KEVENT_POLL => {
                let interest = fd::interest(ev.type_, ev.event)?;
                let watched = if received {
                    // Received through the gate: it closes when the request is done.
                    fd::register_dup(epoll.as_fd(), fd, interest, tok)?
                } else {
                    fd::register(epoll.as_fd(), fd, interest, tok)?
                };
                Ok((Source::Fd { fd: watched }, interest))
            }
            KEVENT_TIMER | KEVENT_POSIX_TIMER => Ok((self.add_timer(ev, idx, gen)?, 0)),
            KEVENT_SIGNAL => {
                if ev.event != KEVENT_SIGNAL_DELIVERY {
                    return Err(libc::EINVAL);
                }
                let (signo, nomask) = signal::parse_id(ev.id)?;
                self.signals
                    .add(epoll.as_fd(), signo, nomask, TOKEN_SIGHANDLER)?;
                self.sig_regs.entry(signo).or_default().push(idx);
                Ok((Source::Signal { signo, nomask }, 0))
            }
            KEVENT_INODE => {
                let wd = self
                    .inodes
                    .add(epoll.as_fd(), fd, ev.event, TOKEN_INOTIFY)?;
                self.wd_regs.entry(wd).or_default().push(idx);
                Ok((Source::Inode { wd }, 0))
            }
            KEVENT_USER => Ok((Source::User, 0)),
            _ => Err(libc::ENOSYS),
        }
    }

    /// `peer`'s kevent named by `ev` (`ENOENT`: it has none; another process's kevents
    /// of that type and id are not its).
    fn lookup(&self, ev: &Ukevent, peer: PeerId) -> Result<usize, i32> {
        self.index
            .get(&(peer, ev.type_, ev.id))
            .copied()
            .ok_or(libc::ENOENT)
    }

    fn remove_one(&mut self, ev: &Ukevent, peer: PeerId) -> EntryResult {
        let idx = self.lookup(ev, peer)?;
        self.unregister(idx);
        Ok(())
    }

    /// A peer went (its gate connection ended, or its process died): its kevents go —
    /// entries nobody claimed yet are taken back — and so do the fds held for it and its
    /// notify fd. Returns how many kevents it had.
    pub(crate) fn drop_peer(&mut self, peer: PeerId) -> usize {
        self.outbox.drop_target(peer);
        let regs = self.peers.registrations_of(peer);
        for &idx in &regs {
            if self
                .regs
                .get(idx)
                .and_then(Option::as_ref)
                .is_some_and(|r| r.peer == peer)
            {
                self.unregister(idx);
            }
        }
        self.service(0);
        self.settle();
        regs.len()
    }

    /// Drops registration `idx`: its pending entry is taken back (never delivered), its
    /// source released.
    fn unregister(&mut self, idx: usize) {
        let reg = self.regs[idx].take().expect("indexed registrations exist");
        self.index.remove(&(reg.peer, reg.ev.type_, reg.ev.id));
        self.peers.remove(reg.peer, idx, reg.held_fds());
        self.free.push(idx);
        self.ring()
            .stats()
            .registered
            .fetch_sub(1, Ordering::Relaxed);
        if reg.watched {
            self.watch -= 1;
            self.note_watch_count();
        }
        match reg.pending {
            Pending::Backlog => self.backlog.forget(&self.regs),
            // A removed kevent is never delivered: take back an entry nobody claimed yet.
            Pending::InRing(pos) => {
                self.ring().reclaim(ConsumerId(0), pos);
            }
            Pending::Idle => {}
        }
        self.publish_backlog_len();
        self.unschedule(&reg.source);
        match reg.source {
            Source::Fd { fd } => fd::delete(self.epoll.as_fd(), &fd),
            Source::Timer { .. } | Source::User => {}
            Source::Signal { signo, nomask } => {
                let regs = self.sig_regs.entry(signo).or_default();
                regs.retain(|&i| i != idx);
                let last = regs.is_empty();
                if last {
                    self.sig_regs.remove(&signo);
                }
                self.signals.remove(signo, nomask, last);
            }
            Source::Inode { wd } => {
                let regs = self.wd_regs.entry(wd).or_default();
                regs.retain(|&i| i != idx);
                if regs.is_empty() {
                    self.wd_regs.remove(&wd);
                    self.inodes.remove(wd);
                }
            }
        }
    }

    fn modify_one(&mut self, ev: &Ukevent, peer: PeerId) -> EntryResult {
        let idx = self.lookup(ev, peer)?;
        if ev.req_flags & !KEVENT_REQ_ALL != 0 {
            return Err(libc::EINVAL);
        }
        let epoll = self.epoll.clone();
        let reg = self.reg(idx).expect("indexed");
        if let Source::Fd { fd } = &reg.source {
            let interest = fd::interest(ev.type_, ev.event)?;
            fd::modify(epoll.as_fd(), fd, interest, token(idx, reg.gen))?;
            reg.interest = interest;
            reg.ev.event = ev.event;
        }
        reg.ev.req_flags = ev.req_flags;
        reg.ev.user = ev.user;
        reg.disabled = false;
        if reg.arm == Arm::Level {
            // `fd::modify` registered it `EPOLLET` again: a later re-check of its
            // new mode decides (`source/fd.rs`); an entry out now ends with one.
            reg.arm = Arm::Edge;
            if matches!(reg.pending, Pending::InRing(_)) && reg.rechecked_at_end() {
                self.watch(idx);
            }
        }
        let reg = self.reg(idx).expect("indexed");
        if reg.paused && reg.pending == Pending::Idle {
            // A timer that rested while disabled runs again (`timers.rs`).
            reg.paused = false;
            self.resume_timer(idx);
        }
        // An fd's entry nobody has claimed yet was built with the old cookie and mask:
        // taken back (as REMOVE takes it back), and the look below reports the fd
        // afresh — one event, carrying what MODIFY set. (A claimed entry is its
        // consumer's: the MODIFY's readiness follows it after its commit, as an
        // `epoll_wait` after `EPOLL_CTL_MOD` reports a ready fd again.)
        let pending = self.reg(idx).filter(|r| r.is_fd()).map(|r| r.pending);
        if let Some(Pending::InRing(pos)) = pending {
            self.catch_up(pos); // the kernel may not know that it ended
            let still = self
                .reg(idx)
                .is_some_and(|r| r.pending == Pending::InRing(pos));
            if still && self.ring().reclaim(ConsumerId(0), pos) {
                self.unwatch(idx);
                let reg = self.reg(idx).expect("indexed");
                reg.pending = Pending::Idle;
                reg.ready = 0;
                reg.revents = 0;
            }
        }
        // Like EPOLL_CTL_MOD: a source that is ready now is reported — once: the report
        // the `epoll_ctl` queued of that readiness is swallowed, as ADD's is.
        if self.report_if_ready(idx) {
            let ctl = self.epoch.load(Ordering::Relaxed);
            if let Some(reg) = self.reg(idx) {
                reg.swallow = Some(Swallow::new(ctl));
            }
        }
        if self
            .reg(idx)
            .is_some_and(|r| r.has_news() && r.pending == Pending::Idle)
        {
            self.mark_ready(idx, 0, 0);
        }
        Ok(())
    }

    fn ready_one(&mut self, ev: &Ukevent, peer: PeerId) -> EntryResult {
        let idx = self.lookup(ev, peer)?;
        let reg = self.reg(idx).expect("indexed");
        let bits = if ev.event != 0 {
            ev.event
        } else {
            reg.ev.event.max(KEVENT_USER_READY)
        };
        // Each READY of a counted source is one arrival; an fd's readiness is a state.
        let count = if reg.is_fd() { 0 } else { 1 };
        self.mark_ready(idx, bits, count);
        Ok(())
    }
}

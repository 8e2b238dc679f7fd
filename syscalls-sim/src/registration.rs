//! One registered kevent: what the user asked for, what backs it, and where its pending
//! entry is.

use kevent_ring::Ukevent;

use crate::abi::*;
use crate::peer::PeerId;
use crate::source::{fd::Watched, Source};

/// Where a kevent's pending entry is (ARCHITECTURE.md §4: at most one pending entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pending {
    /// Nothing pending.
    Idle,
    /// Waiting in the producer's backlog for room in the ring.
    Backlog,
    /// Published at this ring position (maybe already claimed).
    InRing(u64),
}

/// How an fd kevent sits in the kernel's epoll set — what re-reports a level-triggered
/// one still ready when its entry ends (`source/fd.rs` has the whole story).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arm {
    /// `EPOLLET`, as registered: a level kevent is re-checked with `poll(2)` when its
    /// entry ends.
    Edge,
    /// Level-triggered in epoll: epoll itself reports the fd again at the next
    /// `epoll_wait` while it is ready, so the end of its entry needs no re-check, and a
    /// commit of it nothing from the kernel.
    Level,
}

/// Re-checks a level kevent waits, `EPOLLET`, after its `n`-th return (n ≥ 1) from
/// [`Arm::Level`] before it may move there again: 128, 256, … up to 65,536 — so a
/// kevent that several consumers share costs a few `epoll_ctl` over its first tens of
/// thousands of events and then almost none, and one whose lone consumer was disturbed
/// once (the producer thread was in `epoll_wait`) comes back soon.
pub(crate) fn level_hold(n: u8) -> u32 {
    64 << n.min(10)
}

/// A registered kevent.
#[derive(Debug)]
pub(crate) struct Registration {
    /// The kevent as the user registered it (id, type, event, req_flags, cookie).
    pub(crate) ev: Ukevent,
    /// The process it belongs to (`peer.rs`).
    pub(crate) peer: PeerId,
    /// Distinguishes this registration from earlier ones in the same table slot.
    pub(crate) gen: u32,
    pub(crate) source: Source,
    /// `poll(2)` interest of an fd source.
    pub(crate) interest: u32,
    /// Event bits seen since the last entry was built.
    pub(crate) ready: u32,
    /// Arrivals (timer expirations, signals, inode events) since the last entry.
    pub(crate) count: u64,
    pub(crate) pending: Pending,
    /// A `ONESHOT` kevent that fired: registered but inactive until MODIFY.
    pub(crate) disabled: bool,
    /// Counted in `Kernel::watch` (its release must be heard of).
    pub(crate) watched: bool,
    /// The entry to deliver again (its consumer died), flagged `REDELIVERED` (boxed: it is
    /// rare, and a registration without it inline is 168 bytes, not 208).
    pub(crate) redeliver: Option<Box<Ukevent>>,
    /// ADD or MODIFY found this fd ready (and returned or queued that readiness): the
    /// report its `epoll_ctl` queued of the same readiness must not be delivered again
    /// ([`Swallow`]).
    pub(crate) swallow: Option<Swallow>,
    /// A timer held back (out of its heap, uncounted) until its entry is released, or
    /// (disabled by ONESHOT) until MODIFY (`kernel/timers.rs`).
    pub(crate) paused: bool,
    /// The `poll(2)` status flags of an fd seen since the last entry (`POLLIN`,
    /// `POLLOUT`, `POLLPRI`, `POLLERR`, `POLLHUP`, `POLLRDHUP`): an fd event carries them
    /// in `ret_data[1]`, so that a consumer can tell a hang-up or an error from data.
    pub(crate) revents: u32,
    /// How an fd sits in the epoll set ([`Arm`]; `Edge` for other sources).
    pub(crate) arm: Arm,
    /// How often it went back from [`Arm::Level`], and how many re-checks it waits
    /// before it may move there again ([`level_hold`]).
    pub(crate) demoted: u8,
    pub(crate) hold: u32,
    /// It just went back to `EPOLLET`: its next report after its entry ended may be
    /// stale too (`Kernel::on_fd_token`).
    pub(crate) verify_next: bool,
    /// The position after its last published entry (0: none yet): a report of a wait
    /// entered before `uidx` passed it may be older than that entry's reads
    /// (`epoll::Taken::released`).
    pub(crate) published_below: u64,
}

/// The report of the readiness an ADD (or a MODIFY: the same story) found (see
/// [`Registration::swallow`]).
///
/// The ctl itself takes what epoll has ready before it ends (`Kernel::harvest_now`), and
/// drops this fd's report (taken while the ctl ran: `returned == ctl`). A wait already
/// under way — the producer thread's, a poller's — may have taken it first; it is then
/// handled after the ctl, by a thread that may have been preempted between its wait's
/// return and its look at the epoch (`returned` is later then: a lone ET pipe was
/// reported twice, 3 % of runs of `share.c`). So the ctl notes that it did not find the
/// report while the fd is still ready (`elsewhere`; not ready, epoll may have dropped
/// the report, the fd drained meanwhile), and the next report of a wait entered before
/// the ctl ended is dropped as that one. Any other report is newer readiness — or
/// ADD's, merged with newer (an edge-triggered epoll keeps one report per fd): the fd
/// is checked with `poll(2)` and reported if it is still ready. What this can still
/// drop: a third thread drains and refills the fd during the ctl, and data written
/// after the ctl's end merges into the refill's report.
///
/// Every report taken *before* the ctl ended (`returned <= ctl`) is dropped, not only
/// the first: the readiness it saw is what the ctl found and returned or queued. A
/// MODIFY meets such reports — taken before it by a wait that then queued for the
/// kernel's lock, a level-triggered epoll's re-report of the fd (`source/fd.rs`) — and
/// one merged into the MODIFY's entry came back, after the commit, as a second event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Swallow {
    /// The ctl's epoch (`Kernel::epoch` while it ran).
    pub(crate) ctl: u64,
    /// The ctl's own harvest did not find the report: a wait under way took it.
    pub(crate) elsewhere: bool,
    /// A report taken before the ctl ended was dropped already: the next one is newer.
    pub(crate) dropped: bool,
}

/// What a report of a swallowing fd is ([`Swallow::judge`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Report {
    /// Taken before the ctl ended, or the ctl's own taken by a wait under way: dropped.
    Ctls,
    /// Newer, and the ctl's own was dropped already: an ordinary report.
    Newer,
    /// Newer, or the ctl's merged with newer: reported if the fd is still ready.
    Unsure,
}

impl Swallow {
    /// A swallow for the ctl of epoch `ctl`.
    pub(crate) fn new(ctl: u64) -> Swallow {
        Swallow {
            ctl,
            elsewhere: false,
            dropped: false,
        }
    }

    /// What a report of this fd taken at `taken` is.
    pub(crate) fn judge(self, taken: crate::epoll::Taken) -> Report {
        if taken.returned <= self.ctl {
            Report::Ctls
        } else if self.dropped {
            Report::Newer
        } else if self.elsewhere && taken.entered <= self.ctl {
            Report::Ctls
        } else {
            Report::Unsure
        }
    }
}

impl Registration {
    pub(crate) fn new(ev: Ukevent, peer: PeerId, gen: u32, source: Source, interest: u32) -> Self {
        Registration {
            ev,
            peer,
            gen,
            source,
            interest,
            ready: 0,
            count: 0,
            pending: Pending::Idle,
            disabled: false,
            watched: false,
            redeliver: None,
            swallow: None,
            paused: false,
            revents: 0,
            arm: Arm::Edge,
            demoted: 0,
            hold: 0,
            verify_next: false,
            published_below: 0,
        }
    }

    /// How many fds of the queue's process this registration holds: a duplicate of a
    /// received fd (counted against its peer's bound, `peer.rs`).
    pub(crate) fn held_fds(&self) -> usize {
        held_fds(&self.source)
    }

    /// Whether readiness is a state that can persist (fd sources), as opposed to counted
    /// arrivals that a delivered entry consumes.
    pub(crate) fn is_fd(&self) -> bool {
        matches!(self.source, Source::Fd { .. })
    }

    pub(crate) fn edge_triggered(&self) -> bool {
        self.ev.req_flags & KEVENT_REQ_ET != 0
    }

    pub(crate) fn level_fd(&self) -> bool {
        self.is_fd() && !self.edge_triggered()
    }

    /// Whether the end of this kevent's entry must be followed by a `poll(2)` re-check
    /// of its fd: level-triggered, and not re-reported by epoll itself ([`Arm::Level`]).
    pub(crate) fn rechecked_at_end(&self) -> bool {
        self.level_fd() && self.arm != Arm::Level
    }

    /// Whether its fd may sit in the epoll set level-triggered from now on ([`Arm`]):
    /// a level kevent, idle, not held back after a return from there, and that
    /// nothing else keeps quiet — a `ONESHOT` or disabled kevent, or the report of
    /// ADD's readiness still to swallow, would be reported at every `epoll_wait`.
    pub(crate) fn may_arm_level(&self) -> bool {
        self.level_fd()
            && self.arm == Arm::Edge
            && self.hold == 0
            && self.ev.req_flags & KEVENT_REQ_ONESHOT == 0
            && !self.disabled
            && self.swallow.is_none_or(|sw| sw.dropped)
            && self.pending == Pending::Idle
    }

    /// Whether there is something to deliver.
    pub(crate) fn has_news(&self) -> bool {
        self.ready != 0 || self.count != 0 || self.redeliver.is_some()
    }

    /// The entry to publish now, built from what accumulated; [`Registration::consume_entry`]
    /// once it is published (a push that fails — the ring full — leaves it all in place).
    pub(crate) fn peek_entry(&self) -> Ukevent {
        if let Some(ev) = &self.redeliver {
            let mut ev = **ev;
            ev.ret_flags |= KEVENT_RET_REDELIVERED;
            return ev;
        }
        let mut ev = self.ev;
        if self.ready != 0 {
            ev.event = self.ready;
        }
        ev.ret_flags = 0;
        ev.ret_data = if self.is_fd() {
            [0, self.revents]
        } else {
            [self.count as u32, (self.count >> 32) as u32]
        };
        ev
    }

    /// What [`Registration::peek_entry`] built is published: the redelivered entry, or
    /// else the readiness and counts it carried, are gone from here.
    pub(crate) fn consume_entry(&mut self) {
        if self.redeliver.take().is_some() {
            return;
        }
        if self.is_fd() {
            self.revents = 0;
        }
        self.ready = 0;
        self.count = 0;
    }

    /// Keeps the status flags of a readiness report of this fd (see `revents`).
    pub(crate) fn note_revents(&mut self, revents: u32) {
        const STATUS: u32 = KEVENT_POLL_POLLIN
            | KEVENT_POLL_POLLPRI
            | KEVENT_POLL_POLLOUT
            | KEVENT_POLL_POLLERR
            | KEVENT_POLL_POLLHUP
            | KEVENT_POLL_POLLRDHUP;
        self.revents |= revents & STATUS;
    }
}

/// How many fds of the queue's process `source` holds (see [`Registration::held_fds`]).
pub(crate) fn held_fds(source: &Source) -> usize {
    match source {
        Source::Fd {
            fd: Watched::Ours(_),
        } => 1,
        _ => 0,
    }
}

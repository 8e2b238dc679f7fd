//! The harvest policy of the owning process: who does the producer's work, who blocks on
//! the sources, who sleeps on the futex — and how every waker reaches each of them.
//!
//! A consumer of the process that made the queue ([`Instance::next_batch`]):
//!
//! 1. claims what the ring holds;
//! 2. finding nothing, *harvests*: `epoll_wait(0)` on the queue's sources under the kernel
//!    lock, publishes what it found, and claims it — as io_uring does without its polling
//!    thread, no hand-over to another thread;
//! 3. finding nothing either, blocks: on the sources themselves if no other consumer does
//!    (it becomes *the poller*: `epoll_wait` on the kernel's epoll fd, its bell in that
//!    set), else on the ring's futex, as consumers in other processes always do.
//!
//! The producer thread parks while consumers harvest or poll (it would only be woken by
//! every edge to hand over events they find themselves), and watches the sources whenever
//! a futex sleeper needs it. The handshakes that make this race-free — the futex's, the
//! poller's bell, the park word — are the ring's (`wake/wait.rs` and `wake/poller.rs` in
//! kevent-ring, loom-checked); the rules they give (ARCHITECTURE.md §3):
//!
//! | waker | futex sleepers | the poller | notify-fd loop |
//! |---|---|---|---|
//! | publish (producer, harvester, ctl, reaper) | `FUTEX_WAKE` one per entry (fewer by what the publisher claims itself) | the bell, if the futex reached fewer than asked | its eventfd |
//! | `WAKEUP_ALL` entry, `kevent_ctl(READY)` with no events | all / one, and `kicks` moves: they return `Woken` | the bell | its eventfd |
//! | close, a broken ring | all (`closed`/`broken` seen) | the bell | its eventfd (close) |
//! | a consumer in another process passing on entries | `FUTEX_WAKE` | the doorbell, which the owner relays to the bell | — |
//!
//! A wait returns with no entries only when its deadline passed, an explicit wake-up
//! happened since it began, a signal interrupted it (`EINTR`), or the queue closed or
//! broke: a sleeper woken for an entry another consumer took first sleeps on.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use kevent_ring::{Claim, Deadline, WaitOutcome, WaitSpec};

use super::{errno, Instance};
use crate::epoll::Reports;
use crate::harvesters::Harvesters;
use crate::kernel::TOKEN_BELL;
use crate::peer::PeerId;

impl Instance {
    /// Whether consumers in the owning process harvest ready sources themselves when
    /// they would otherwise sleep (default `true`; see [`Instance::next_batch`]).
    pub fn set_harvest(&self, on: bool) {
        if let Some(owner) = &self.owner {
            owner.harvest.store(on, Ordering::Relaxed);
        }
    }

    pub(super) fn harvesters(&self) -> Option<&Arc<Harvesters>> {
        let owner = self.owner.as_ref()?;
        (self.is_local() && owner.harvest.load(Ordering::Relaxed)).then_some(&owner.harvesters)
    }

    /// Does the producer's work once, here, if nobody else is doing it right now;
    /// `reserve`: how many of the entries it publishes the caller will claim itself.
    fn harvest_inline(&self, reserve: u64) -> u64 {
        let Some(owner) = &self.owner else { return 0 };
        owner.harvesters.rounds.fetch_add(1, Ordering::Relaxed);
        let Some(mut guard) = owner.kernel.try_lock() else {
            return 0; // the producer thread (or another harvester) is at it
        };
        guard.as_mut().map_or(0, |k| k.harvest(reserve))
    }

    /// Harvests until something is published, the ring has entries (another harvester
    /// or the producer published), or `spin` or the wait's `deadline` has passed (at
    /// least once). Spinning on `epoll_wait(0)` here, rather than on the ring, keeps the
    /// producer thread asleep.
    fn harvest_for(&self, spin: Duration, deadline: Option<Deadline>, reserve: u64) -> u64 {
        let start = std::time::Instant::now();
        loop {
            let n = self.harvest_inline(reserve);
            if n > 0
                || self.ring.has_claimable()
                || start.elapsed() >= spin
                || kevent_ring::deadline_passed(deadline)
            {
                return n;
            }
            std::hint::spin_loop();
        }
    }

    /// Becomes the poller if nobody is: blocks in `epoll_wait` on the queue's sources
    /// (the kernel's epoll fd, with the bell in its set) until a source or the bell is
    /// ready or the deadline passes, then turns the reports into entries, claiming
    /// `reserve` itself (see `epoll.rs` here and `wake/poller.rs` in kevent-ring for the handshake that
    /// makes every waker reach it). `None` if another consumer is the poller (the caller
    /// sleeps on the ring instead); `Some(Ok(()))` to look again; `Some(Err(outcome))`
    /// when the wait is over without entries.
    fn poll_sources(&self, spec: &WaitSpec, reserve: u64) -> Option<Result<(), WaitOutcome>> {
        thread_local! {
            // Per polling thread (epoll events are not Send).
            static REPORTS: std::cell::RefCell<Reports> = std::cell::RefCell::new(Reports::new());
        }
        let owner = self.owner.as_ref()?;
        let h = self.harvesters()?;
        if h.blocker
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        h.rounds.fetch_add(1, Ordering::Relaxed);
        REPORTS.with(|reports| {
            let mut reports = reports.borrow_mut();
            let polled = match self.ring.poller_enter(spec) {
                Some(WaitOutcome::Ready) => Ok(false),
                Some(outcome) => {
                    h.blocker.store(false, Ordering::Release);
                    return Some(Err(outcome));
                }
                None => {
                    let r = reports.take_until(
                        owner.ctx_epoll.as_fd(),
                        spec.deadline,
                        &owner.epoch,
                        &self.ring,
                    );
                    self.ring.poller_leave();
                    r.map(|()| true)
                }
            };
            // No longer the poller: a bell edge taken from here on is not rung again
            // for this thread (`Kernel::on_token`).
            h.blocker.store(false, Ordering::Release);
            match polled {
                Ok(false) => {}
                Ok(true) => {
                    let mut sources = false;
                    for (tok, _) in reports.iter() {
                        if tok == TOKEN_BELL {
                            // Reset it: what it announced is re-checked by the caller's
                            // loop. Without the kernel's lock: a waker rings the bell
                            // while it holds the lock (a `kevent_ctl` publishing), and
                            // waiting for it here would add a second wake-up.
                            owner.bell.reset();
                        } else {
                            sources = true;
                        }
                    }
                    if sources {
                        match owner.kernel.lock().as_mut() {
                            Some(kernel) => {
                                kernel.harvest_reports(&reports, reserve);
                            }
                            None => return Some(Err(WaitOutcome::Closed)),
                        }
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {
                    return Some(Err(WaitOutcome::Interrupted))
                }
                Err(_) => return None, // sleep on the ring instead
            }
            Some(Ok(()))
        })
    }

    /// Claims up to `max` entries, waiting until `spec.deadline` if there are none.
    ///
    /// In the owning process, a consumer that finds nothing to claim first does the
    /// producer's work itself — `epoll_wait(0)` on the queue's sources, publish — as
    /// io_uring does without its polling thread; only when that finds nothing either does
    /// it block: on the sources themselves if no other consumer does (the poller), else
    /// on the ring's futex. While consumers harvest or poll (and nobody sleeps on the
    /// ring) the producer thread parks, so an event costs no hand-over between threads.
    /// An empty claim means the wait ended without entries: the deadline passed, an
    /// explicit wake-up (if `spec.return_on_wake`), a signal, or the queue closed or broke
    /// (the outcome says which). ARCHITECTURE.md §3 (W1–W5) is the contract.
    pub fn next_batch(&self, max: u64, spec: &WaitSpec) -> io::Result<(Claim, WaitOutcome)> {
        // Explicit wake-ups from now on end this wait.
        self.next_batch_since(max, spec, self.ring.kicks())
    }

    /// [`Instance::next_batch`] that also ends on an explicit wake-up ([`Instance::wake_one`])
    /// made since `kicks` was read ([`Ring::kicks`](kevent_ring::Ring::kicks)): a caller
    /// that announces its sleep to its wakers first (an event loop's `notify_me`) reads
    /// the count before announcing, so that a wake-up between the two is not lost.
    pub fn next_batch_since(
        &self,
        max: u64,
        spec: &WaitSpec,
        kicks: u32,
    ) -> io::Result<(Claim, WaitOutcome)> {
        let harvesters = self.harvesters();
        let spec = &WaitSpec {
            sleeper: Some(self.me),
            kicks,
            ..*spec
        };
        let empty = |outcome| {
            let c = self.ring.cidx();
            Ok((
                Claim {
                    start: c,
                    end: c,
                    owned: 0,
                },
                outcome,
            ))
        };
        // Whether this call harvested since it last claimed: then the sources were just
        // looked at, and another `epoll_wait(0)` before claiming would find nothing new.
        let mut fresh = false;
        // Whether this call reset the notify fd (took a notification off it).
        let mut reset = false;
        loop {
            if harvesters.is_some()
                && !std::mem::take(&mut fresh)
                && self.ring.has_claimable()
                && self.ring.producer_parked()
            {
                // Nobody else watches the sources now: new readiness must not wait for
                // the ring to run dry (or for the producer's park to time out). With the
                // ring empty there is no need: the harvest below comes before any sleep.
                self.harvest_inline(max);
            }
            let claim = self.ring.claim(self.me, max);
            if claim.owned > 0 {
                if reset && self.ring.has_claimable() {
                    // The reset below may have eaten the notification of entries
                    // published between an empty claim and the reset, and this claim
                    // (at most `max`) left some of them behind: say so again, or an event
                    // loop that takes one batch per readiness of the fd (as
                    // `Loop::attach_queue` does) sleeps with entries waiting (W1/W5;
                    // tests/notify.rs, `the_notify_fd_stays_readable_when_…`). Entries
                    // published after the reset wrote the fd themselves.
                    self.rearm_notify();
                }
                return Ok((claim, WaitOutcome::Ready));
            }
            if !claim.is_empty() {
                // Only slots taken back (REMOVE, reaper) were in the run: release them —
                // they are DONE(RECLAIMED) and below `cidx` now, and no commit of ours
                // will pass them (a batch that owns nothing is never committed) — then
                // look again. Without this, a ring whose every slot was taken back stays
                // full for ever: the next event waits in the backlog while this
                // consumer sleeps in `epoll_wait` (tests/reclaimed_ring.rs).
                self.ring.advance();
                // However the ring's words are garbled, the wait ends by its deadline:
                // a ring whose claims keep owning nothing is not a reason to spin on.
                if kevent_ring::deadline_passed(spec.deadline) {
                    return empty(self.ring.wait_over(spec).unwrap_or(WaitOutcome::TimedOut));
                }
                continue;
            }
            reset |= self.drain_notify();
            match self.ring.wait_over(spec) {
                Some(WaitOutcome::Ready) => continue,
                Some(outcome) => return empty(outcome),
                None => {}
            }
            // Level kevents ADD returned ready wait for their re-check (W4): this is the
            // quiet moment — do it now, waiting for the kernel's lock if need be (a
            // harvest's `try_lock` may find the producer thread at work and skip it).
            if let Some(owner) = self.owner.as_ref().filter(|o| {
                harvesters.is_some()
                    && (o.done_pending.load(Ordering::Relaxed) || o.kernel.completions_pending())
            }) {
                if let Some(kernel) = owner.kernel.lock().as_mut() {
                    if kernel.harvest(max) > 0 {
                        fresh = true;
                        continue;
                    }
                }
            }
            // About to block as the poller without spinning first: its `epoll_wait` is
            // this look (it returns at once if a source is ready), so skip the
            // `epoll_wait(0)` — a sleep then costs one system call, as epoll's does.
            let will_poll = spec.spin.is_zero()
                && spec.old_uidx.is_none()
                && harvesters.is_some_and(|h| !h.blocker.load(Ordering::Relaxed))
                && !kevent_ring::deadline_passed(spec.deadline);
            if harvesters.is_some()
                && !will_poll
                && self.harvest_for(spec.spin, spec.deadline, max) > 0
            {
                fresh = true;
                continue;
            }
            if kevent_ring::deadline_passed(spec.deadline) {
                return empty(self.ring.wait_over(spec).unwrap_or(WaitOutcome::TimedOut));
            }
            if spec.old_uidx.is_none() {
                match self.poll_sources(spec, max) {
                    Some(Ok(())) => {
                        fresh = true;
                        continue;
                    }
                    Some(Err(outcome)) => return empty(outcome),
                    None => {}
                }
            }
            match self.ring.wait(spec)? {
                WaitOutcome::Ready => continue,
                outcome => return empty(outcome),
            }
        }
    }

    /// The queue's fd for other event loops (mio, tokio, epoll): readable when entries
    /// may be waiting. The first call arms it: from then on every publish makes it
    /// readable, a consumer of this process that finds the ring empty drains it, and the
    /// producer thread no longer parks for harvesting consumers (an event loop asleep on
    /// this fd is not harvesting). Register it for readability, and on readiness call
    /// [`Instance::wait`] (or `get_events`) with a zero timeout until it returns nothing.
    ///
    /// In a process that [`connect`](Instance::connect)ed, the fd (this value's handle, an
    /// eventfd) is sent to the owner through the gate, which writes it wherever it writes
    /// its own; it is forgotten when the connection closes (re-armed if the connection is
    /// remade).
    ///
    /// # Errors
    /// `EOPNOTSUPP`: a queue [`attach`](Instance::attach)ed without a control channel, or a
    /// value inherited across `fork` (use [`Instance::for_this_process`]). The gate's errors
    /// when the owner cannot be reached.
    pub fn notify_fd(&self) -> io::Result<BorrowedFd<'_>> {
        if !self.is_local() {
            return Err(errno(libc::EOPNOTSUPP));
        }
        let Some(owner) = &self.owner else {
            let notify = self
                .peer_notify
                .as_ref()
                .expect("a queue of another process");
            if !notify.is_armed() {
                let client = self.client()?;
                if !notify.is_armed() {
                    let inbox = client.as_ref().expect("connected").arm_notify()?;
                    let alive = || !self.ring.owner_died();
                    notify.arm(self.handle.as_fd(), inbox, self.owner_pid(), alive)?;
                }
            }
            return Ok(self.handle.as_fd());
        };
        if owner.notify.get().is_none() {
            let mut guard = owner.kernel.lock();
            if owner.notify.get().is_none() {
                owner.harvesters.never_park.store(true, Ordering::Release);
                let mine = kevent_ring::WakeFd::from_fd(self.handle.try_clone()?)?;
                let kernels = mine.try_clone()?;
                let _ = owner.notify.set(mine);
                if let Some(k) = guard.as_mut() {
                    k.add_notify(PeerId::OWNER, kernels);
                }
            }
        }
        Ok(self.handle.as_fd())
    }

    /// Resets the notify fd (if armed) when the ring is found empty; returns whether it
    /// took a notification off it. Entries published after the reset make it readable
    /// again; those published between the empty look and the reset do not — the caller
    /// re-checks the ring, and if it leaves entries there it calls `rearm_notify`.
    pub(super) fn drain_notify(&self) -> bool {
        if let Some(notify) = &self.peer_notify {
            let (was_set, owner_gone) = notify.drain(self.handle.as_fd());
            if owner_gone {
                self.ring.note_owner_died();
            }
            return was_set;
        }
        self.owner
            .as_ref()
            .and_then(|o| o.notify.get())
            .is_some_and(|n| n.reset().was_set)
    }

    /// Makes the notify fd readable again (entries wait that its reset announced).
    fn rearm_notify(&self) {
        if let Some(notify) = &self.peer_notify {
            notify.kick();
        } else if let Some(n) = self.owner.as_ref().and_then(|o| o.notify.get()) {
            let _ = n.ring();
        }
    }

    /// An explicit wake-up (`kevent_ctl(READY)` with no events) without the kernel's
    /// lock: one sleeper — on the futex, the poller, or an event loop on the notify fd —
    /// returns [`WaitOutcome::Woken`] (a wait that asked for it). Nothing is remembered
    /// for a wait that begins later: a waiter reads [`Ring::kicks`](kevent_ring::Ring::kicks)
    /// first (see [`Instance::next_batch_since`]).
    pub fn wake_one(&self) {
        self.ring.kick(1);
        if let Some(owner) = self.owner.as_ref().filter(|_| self.is_local()) {
            owner.kernel.notify_loops_now();
        }
    }

    /// Consumers asleep waiting for entries: those on the ring's futex (any process) plus
    /// one of this process blocked in `epoll_wait` as the harvester.
    pub fn sleeping(&self) -> u32 {
        let blocked = self
            .owner
            .as_ref()
            .is_some_and(|o| o.harvesters.blocker.load(Ordering::Relaxed));
        self.ring.sleepers() + u32::from(blocked)
    }
}

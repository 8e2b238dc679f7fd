//! Timer kevents in the kernel: scheduling them in the queue's per-clock heaps
//! (`source/timer.rs`), firing those due when a clock's timerfd reports, and holding back
//! a timer whose entry is still out.

use std::os::fd::AsFd;

use super::Kernel;
use crate::abi::*;
use crate::registration::Registration;
use crate::source::timer::{self, Clock};
use crate::source::Source;

/// Whether registration `idx` of generation `gen` is a timer armed for `due` (a heap
/// entry that says otherwise is stale).
fn is_armed(regs: &[Option<Registration>], idx: usize, gen: u32, due: u64) -> bool {
    regs.get(idx).and_then(Option::as_ref).is_some_and(|r| {
        r.gen == gen && matches!(r.source, Source::Timer { armed: true, due: d, .. } if d == due)
    })
}

impl Kernel {
    /// The source of a new timer kevent (registration `idx`, generation `gen`), scheduled.
    pub(super) fn add_timer(&mut self, ev: &Ukevent, idx: usize, gen: u32) -> Result<Source, i32> {
        let s = timer::schedule_of(ev)?;
        self.timers
            .schedule(self.epoll.as_fd(), s.clock, s.due, idx, gen)?;
        Ok(Source::Timer {
            clock: s.clock,
            due: s.due,
            period: s.period,
            armed: true,
        })
    }

    /// `clock`'s timerfd reported: every timer due fires, and the timerfd is armed for the
    /// next deadline.
    pub(super) fn timers_fired(&mut self, clock: Clock) {
        let now = clock.now();
        let mut due = std::mem::take(&mut self.timers_due);
        let regs = &self.regs;
        self.timers
            .take_due(clock, now, |i, g, d| is_armed(regs, i, g, d), &mut due);
        for &(idx, _, _) in &due {
            self.fire(idx, now);
        }
        due.clear();
        self.timers_due = due;
        let regs = &self.regs;
        self.timers.rearm(clock, |i, g, d| is_armed(regs, i, g, d));
    }

    /// Timer `idx`, taken from its heap (no longer armed), is due at `now`.
    fn fire(&mut self, idx: usize, now: u64) {
        let disabled = self.regs[idx].as_ref().is_some_and(|r| r.disabled);
        if disabled || self.only_merges(idx) {
            // Its entry is still out, or it is a ONESHOT kevent that fired (disabled
            // until MODIFY): the timer waits, uncounted, until the entry is released or
            // MODIFY enables it (`resume_timer`), then counts what passed. A fast
            // periodic timer must not keep the kernel busy meanwhile.
            let reg = self.regs[idx].as_mut().expect("registered");
            if let Source::Timer { armed, .. } = &mut reg.source {
                *armed = false;
            }
            reg.paused = true;
            self.watch(idx);
            return;
        }
        let reg = self.regs[idx].as_mut().expect("registered");
        let gen = reg.gen;
        let Source::Timer {
            clock,
            due,
            period,
            armed,
        } = &mut reg.source
        else {
            return;
        };
        let (n, next) = timer::expirations(*due, *period, now);
        let clock = *clock;
        *armed = next.is_some();
        if let Some(next) = next {
            *due = next;
            // The clock's timerfd exists (this timer was in its heap): cannot fail.
            let _ = self
                .timers
                .schedule(self.epoll.as_fd(), clock, next, idx, gen);
        }
        self.mark_ready(idx, KEVENT_TIMER_FIRED, n);
    }

    /// The entry of a timer held back by `fire` was released: it is armed again for the
    /// deadline it had (fired at once if that passed, counting every period since).
    pub(super) fn resume_timer(&mut self, idx: usize) {
        let Some(reg) = self.regs.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        let gen = reg.gen;
        let Source::Timer {
            clock, due, armed, ..
        } = &mut reg.source
        else {
            return;
        };
        *armed = true;
        let (clock, due) = (*clock, *due);
        // The clock's timerfd exists (this timer was in its heap before): cannot fail.
        let _ = self
            .timers
            .schedule(self.epoll.as_fd(), clock, due, idx, gen);
    }

    /// A timer kevent was removed (its registration is out of the table): its heap
    /// entry, if armed, is stale now.
    pub(super) fn unschedule(&mut self, source: &Source) {
        if let Source::Timer {
            clock, armed: true, ..
        } = source
        {
            let regs = &self.regs;
            self.timers
                .forget(*clock, |i, g, d| is_armed(regs, i, g, d));
        }
    }
}

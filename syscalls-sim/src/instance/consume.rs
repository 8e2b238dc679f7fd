//! Taking events: `kevent_wait` (claim), reading entries, `kevent_commit`, and
//! `kevent_get_events` (both at once); what a commit tells the kernel.

use std::io;
use std::time::Duration;

use kevent_ring::{Claim, Deadline, Ukevent, WaitOutcome, WaitSpec};

use super::{errno, Instance};
use crate::abi::*;

impl Instance {
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

    /// Reads a claimed entry (see [`Ring::take`](kevent_ring::Ring::take)).
    #[inline]
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
}

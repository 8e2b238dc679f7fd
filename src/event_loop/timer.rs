//! [`Timer`]: nanosecond timers of a loop on `CLOCK_MONOTONIC` or `CLOCK_REALTIME`
//! (QEMU's `QEMUTimer` with `aio_timer_new`, `timer_mod`, `timer_del`).
//!
//! **Structure.** One binary heap per clock of (deadline, arming sequence, generation),
//! a min-heap on (deadline, sequence) so equal deadlines fire in arming order. Arming or
//! cancelling bumps the timer's generation instead of searching the heap (lazy
//! cancellation); an entry whose generation is no longer the timer's is dropped when it
//! reaches the top, and when stale entries outnumber live ones (and number more than 64)
//! the heap is rebuilt, which keeps it `O(live timers)` at an amortised `O(1)` per
//! cancellation. A poll peeks at each heap's top — its cost does not grow with the number
//! of timers — and pops the expired ones in `O(log n)` each. The nearest deadline becomes
//! the wait's timeout, to the nanosecond ([`Loop::compute_timeout`]); no timerfd is made.
//!
//! **Clocks.** Monotonic deadlines are `CLOCK_MONOTONIC` nanoseconds (what [`Instant`]
//! measures on Linux); realtime deadlines are nanoseconds since the Unix epoch. The wait
//! is relative, so a step of the wall clock while the loop sleeps is noticed when it next
//! wakes (QEMU's `QEMU_CLOCK_HOST` behaves alike): a realtime timer never fires early,
//! but may fire late by up to the sleep.
//!
//! A timer never fires before its deadline: a poll runs a timer only when its clock reads
//! at least the deadline.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::context::{Loop, Shared};
use super::lock;
use super::stats::bump;

/// A timer's callback.
pub(super) type TimerFn = Arc<dyn Fn(&Loop, &Timer) + Send + Sync>;

/// A timer's deadline when it is not armed.
const NOT_ARMED: u64 = u64::MAX;

/// Rebuild a heap when it holds more than this many stale entries and more stale than
/// live ones.
const COMPACT_AT: usize = 64;

/// The clock a [`Timer`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Clock {
    /// `CLOCK_MONOTONIC`: time since boot, never steps (QEMU's `QEMU_CLOCK_REALTIME`,
    /// despite its name).
    Monotonic,
    /// `CLOCK_REALTIME`: wall-clock time, nanoseconds since the Unix epoch; follows clock
    /// changes (QEMU's `QEMU_CLOCK_HOST`).
    Realtime,
}

impl Clock {
    /// The clock's time now, in nanoseconds (`qemu_clock_get_ns`).
    #[doc(alias = "qemu_clock_get_ns")]
    pub fn now_ns(self) -> u64 {
        match self {
            Clock::Monotonic => kevent_ring::monotonic_now(),
            Clock::Realtime => kevent_ring::realtime_now(),
        }
    }

    fn index(self) -> usize {
        match self {
            Clock::Monotonic => 0,
            Clock::Realtime => 1,
        }
    }
}

pub(super) struct TimerInner {
    clock: Clock,
    /// The generation of the live heap entry; changed only under the list's lock.
    gen: AtomicU64,
    /// The armed deadline or `NOT_ARMED`; changed only under the list's lock.
    deadline: AtomicU64,
    callback: Mutex<Option<TimerFn>>,
    shared: Arc<Shared>,
}

/// A timer of a loop: runs its callback in the loop once the clock reaches the deadline
/// it was armed with. One-shot, as QEMU's: a periodic timer re-arms itself from its
/// callback.
///
/// Made by [`Loop::timer`]; arm and cancel it from any thread. Arming one that is armed
/// moves its deadline. Cheap to clone (a handle); the callback gets the timer, so it need
/// not capture it.
///
/// ```
/// # use kevent::{Clock, Loop};
/// # use std::time::Duration;
/// let lp = Loop::new()?;
/// let t = lp.timer(Clock::Monotonic, |_lp, t| {
///     assert!(Clock::Monotonic.now_ns() >= t.deadline_ns().unwrap_or(0));
/// });
/// t.arm_after(Duration::from_millis(5));
/// assert!(lp.compute_timeout().unwrap() <= Duration::from_millis(5));
/// while t.is_armed() {
///     lp.poll(true);
/// }
/// # Ok::<(), kevent::Error>(())
/// ```
#[derive(Clone)]
pub struct Timer {
    inner: Arc<TimerInner>,
}

impl Timer {
    pub(super) fn new(shared: &Arc<Shared>, clock: Clock, callback: TimerFn) -> Timer {
        Timer {
            inner: Arc::new(TimerInner {
                clock,
                gen: AtomicU64::new(0),
                deadline: AtomicU64::new(NOT_ARMED),
                callback: Mutex::new(Some(callback)),
                shared: shared.clone(),
            }),
        }
    }

    /// `timer_mod_ns`: arms the timer for `deadline_ns` on its clock (see [`Clock`]); a
    /// deadline in the past fires at the loop's next iteration. Wakes the loop if this is
    /// now its nearest deadline and it sleeps.
    #[doc(alias = "timer_mod")]
    pub fn arm_at_ns(&self, deadline_ns: u64) {
        let deadline = deadline_ns.min(NOT_ARMED - 1);
        let shared = &self.inner.shared;
        let earliest = lock(&shared.timers).arm(&self.inner, deadline);
        if earliest {
            shared.notify();
        }
    }

    /// Arms the timer `delay` from now on its clock.
    pub fn arm_after(&self, delay: Duration) {
        let ns = delay.as_nanos().min(u128::from(u64::MAX)) as u64;
        self.arm_at_ns(self.inner.clock.now_ns().saturating_add(ns));
    }

    /// Arms the timer at `when` (converted to the timer's clock by the distance from now).
    pub fn arm_at(&self, when: Instant) {
        self.arm_after(when.saturating_duration_since(Instant::now()));
    }

    /// `timer_del`: disarms it if armed (a callback already running is not stopped).
    #[doc(alias = "timer_del")]
    pub fn cancel(&self) {
        lock(&self.inner.shared.timers).cancel(&self.inner);
    }

    /// Disarms it and drops its callback: it never runs again.
    pub fn delete(&self) {
        self.cancel();
        let callback = lock(&self.inner.callback).take();
        drop(callback);
    }

    /// `timer_pending`: whether it is armed.
    #[doc(alias = "timer_pending")]
    pub fn is_armed(&self) -> bool {
        self.inner.deadline.load(Ordering::Acquire) != NOT_ARMED
    }

    /// `timer_expire_time_ns`: the deadline it is armed for, on its clock.
    #[doc(alias = "timer_expire_time_ns")]
    pub fn deadline_ns(&self) -> Option<u64> {
        let d = self.inner.deadline.load(Ordering::Acquire);
        (d != NOT_ARMED).then_some(d)
    }

    /// The timer's clock.
    pub fn clock(&self) -> Clock {
        self.inner.clock
    }
}

impl fmt::Debug for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timer")
            .field("clock", &self.inner.clock)
            .field("deadline_ns", &self.deadline_ns())
            .finish()
    }
}

struct HeapEntry {
    deadline: u64,
    seq: u64,
    gen: u64,
    timer: Arc<TimerInner>,
}

impl HeapEntry {
    fn is_live(&self) -> bool {
        self.timer.gen.load(Ordering::Relaxed) == self.gen
    }
}

impl PartialEq for HeapEntry {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.seq) == (other.deadline, other.seq)
    }
}

impl Eq for HeapEntry {}

impl PartialOrd for HeapEntry {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for HeapEntry {
    /// Reversed: `BinaryHeap` is a max-heap, and the earliest deadline must be on top.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.deadline, other.seq).cmp(&(self.deadline, self.seq))
    }
}

/// The armed timers of a loop, per clock (behind the loop's timer lock).
#[derive(Default)]
pub(super) struct TimerList {
    heaps: [BinaryHeap<HeapEntry>; 2],
    stale: [usize; 2],
    seq: u64,
    /// Set when the loop is dropped: arming does nothing any more (heap entries hold
    /// the timers, which hold the loop's shared state).
    closed: bool,
}

impl TimerList {
    /// Arms `t` for `deadline`; returns whether it is now the nearest of its clock.
    fn arm(&mut self, t: &Arc<TimerInner>, deadline: u64) -> bool {
        if self.closed {
            return false;
        }
        let c = t.clock.index();
        self.disarm(t);
        self.compact(c);
        let gen = t.gen.load(Ordering::Relaxed).wrapping_add(1);
        t.gen.store(gen, Ordering::Relaxed);
        t.deadline.store(deadline, Ordering::Release);
        let earliest = self.heaps[c]
            .peek()
            .is_none_or(|top| deadline < top.deadline);
        self.seq += 1;
        self.heaps[c].push(HeapEntry {
            deadline,
            seq: self.seq,
            gen,
            timer: t.clone(),
        });
        earliest
    }

    fn cancel(&mut self, t: &Arc<TimerInner>) {
        self.disarm(t);
        self.compact(t.clock.index());
    }

    /// Makes `t`'s heap entry, if any, stale.
    fn disarm(&mut self, t: &TimerInner) {
        if t.deadline.load(Ordering::Relaxed) != NOT_ARMED {
            t.gen.store(
                t.gen.load(Ordering::Relaxed).wrapping_add(1),
                Ordering::Relaxed,
            );
            t.deadline.store(NOT_ARMED, Ordering::Release);
            self.stale[t.clock.index()] += 1;
        }
    }

    fn compact(&mut self, c: usize) {
        let live = self.heaps[c].len().saturating_sub(self.stale[c]);
        if self.stale[c] > COMPACT_AT && self.stale[c] > live {
            self.heaps[c].retain(HeapEntry::is_live);
            self.stale[c] = 0;
        }
    }

    /// Drops stale entries from the top of heap `c`.
    fn skim(&mut self, c: usize) {
        while self.heaps[c].peek().is_some_and(|top| !top.is_live()) {
            self.heaps[c].pop();
            self.stale[c] -= 1;
        }
    }

    /// The nearest deadline on `clock`.
    pub(super) fn earliest(&mut self, clock: Clock) -> Option<u64> {
        let c = clock.index();
        self.skim(c);
        self.heaps[c].peek().map(|top| top.deadline)
    }

    /// Takes the next timer of `clock` due at `now` that was armed before sequence number
    /// `before`, disarming it.
    fn pop_expired(&mut self, clock: Clock, now: u64, before: u64) -> Option<Arc<TimerInner>> {
        let c = clock.index();
        self.skim(c);
        let top = self.heaps[c].peek()?;
        if top.deadline > now || top.seq >= before {
            return None;
        }
        let entry = self.heaps[c].pop().expect("peeked");
        entry.timer.deadline.store(NOT_ARMED, Ordering::Release);
        Some(entry.timer)
    }

    /// The loop is going: drop every entry (and refuse new ones).
    pub(super) fn close(&mut self) {
        self.closed = true;
        for entry in self.heaps.iter_mut().flat_map(std::mem::take) {
            if entry.is_live() {
                entry.timer.deadline.store(NOT_ARMED, Ordering::Release);
            }
        }
        self.stale = [0; 2];
    }
}

impl Loop {
    /// `aio_timer_new`: a timer on `clock` whose `callback` runs in this loop; not armed
    /// yet ([`Timer::arm_after`], [`Timer::arm_at_ns`]).
    #[doc(alias = "aio_timer_new")]
    pub fn timer(
        &self,
        clock: Clock,
        callback: impl Fn(&Loop, &Timer) + Send + Sync + 'static,
    ) -> Timer {
        Timer::new(&self.shared, clock, Arc::new(callback))
    }

    /// The time until the nearest timer deadline, over both clocks (`None`: no timer).
    pub(super) fn timer_timeout(&self) -> Option<Duration> {
        let mut timers = lock(&self.shared.timers);
        [Clock::Monotonic, Clock::Realtime]
            .into_iter()
            .filter_map(|clock| {
                let at = timers.earliest(clock)?;
                Some(Duration::from_nanos(at.saturating_sub(clock.now_ns())))
            })
            .min()
    }

    /// `timerlistgroup_run_timers`: runs the timers that are due, each clock read once;
    /// timers armed meanwhile (by a callback, for the past) wait for the next poll.
    /// Returns whether any ran.
    pub(super) fn run_timers(&self) -> bool {
        let mut progress = false;
        let (before, armed) = {
            let mut timers = lock(&self.shared.timers);
            let armed = [Clock::Monotonic, Clock::Realtime].map(|c| timers.earliest(c).is_some());
            (timers.seq + 1, armed)
        };
        for (clock, armed) in [Clock::Monotonic, Clock::Realtime].into_iter().zip(armed) {
            if !armed {
                continue; // no clock read for a clock without timers
            }
            let now = clock.now_ns();
            loop {
                let Some(t) = lock(&self.shared.timers).pop_expired(clock, now, before) else {
                    break;
                };
                let Some(callback) = lock(&t.callback).clone() else {
                    continue;
                };
                callback(self, &Timer { inner: t });
                bump(&self.shared.counters.timers_fired);
                progress = true;
            }
        }
        progress
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list_with(n: usize) -> (Loop, Vec<Timer>) {
        let lp = Loop::new().expect("a loop");
        let timers = (0..n)
            .map(|_| lp.timer(Clock::Monotonic, |_, _| {}))
            .collect();
        (lp, timers)
    }

    #[test]
    fn equal_deadlines_fire_in_arming_order_and_rearming_leaves_one_live_entry() {
        let (lp, ts) = list_with(3);
        let mut list = lock(&lp.shared.timers);
        list.arm(&ts[2].inner, 100);
        list.arm(&ts[0].inner, 100);
        list.arm(&ts[1].inner, 50);
        list.arm(&ts[1].inner, 100); // re-armed: its entry for 50 goes stale
        assert_eq!(list.earliest(Clock::Monotonic), Some(100));
        let order: Vec<_> =
            std::iter::from_fn(|| list.pop_expired(Clock::Monotonic, 100, u64::MAX))
                .map(|t| ts.iter().position(|x| Arc::ptr_eq(&x.inner, &t)).unwrap())
                .collect();
        assert_eq!(order, [2, 0, 1]);
        assert_eq!(list.earliest(Clock::Monotonic), None);
    }

    #[test]
    fn cancelled_entries_are_compacted_so_the_heap_does_not_grow_with_rearming() {
        let (lp, ts) = list_with(1);
        let mut list = lock(&lp.shared.timers);
        for i in 0..10_000u64 {
            list.arm(&ts[0].inner, 1_000_000 + i);
            list.cancel(&ts[0].inner);
        }
        assert!(
            list.heaps[0].len() <= 2 * COMPACT_AT + 2,
            "{}",
            list.heaps[0].len()
        );
        assert_eq!(list.earliest(Clock::Monotonic), None);
    }

    #[test]
    fn a_timer_is_not_taken_before_its_deadline() {
        let (lp, ts) = list_with(1);
        let mut list = lock(&lp.shared.timers);
        list.arm(&ts[0].inner, 1_000);
        assert!(list.pop_expired(Clock::Monotonic, 999, u64::MAX).is_none());
        assert!(list
            .pop_expired(Clock::Monotonic, 1_000, u64::MAX)
            .is_some());
        assert!(!ts[0].is_armed());
    }
}

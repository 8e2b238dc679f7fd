//! The kernel's two queues of kevents: the backlog (ready kevents waiting for room in the
//! ring) and the side table (what the producer published at each position not yet
//! released). Both cost memory in proportion to what they hold — registrations waiting,
//! entries outstanding — never to the ring's capacity, and every operation is O(1).

use std::collections::VecDeque;

use kevent_ring::Ukevent;

use crate::registration::{Pending, Registration};

/// What the producer remembers of an entry it published (private memory: the copy in
/// the ring is writable by every participant and is never trusted).
#[derive(Clone, Copy)]
pub(crate) struct Published {
    /// The registration's index (as in its epoll token: 32 bits) and generation.
    idx: u32,
    pub(crate) gen: u32,
    pub(crate) entry: Ukevent,
}

impl Published {
    pub(crate) fn new(idx: usize, gen: u32, entry: Ukevent) -> Published {
        Published {
            idx: idx as u32,
            gen,
            entry,
        }
    }

    /// The registration's index.
    pub(crate) fn idx(&self) -> usize {
        self.idx as usize
    }
}

/// The published entries from the release position up, in position order (positions
/// are consecutive, so the record of `pos` is at `pos - base`).
pub(crate) struct SideTable {
    base: u64,
    items: VecDeque<Published>,
}

impl SideTable {
    /// An empty table whose next release is `start`.
    pub(crate) fn new(start: u64) -> SideTable {
        SideTable {
            base: start,
            items: VecDeque::new(),
        }
    }

    /// Records the entry just published at `pos`, the next position.
    pub(crate) fn push(&mut self, pos: u64, rec: Published) {
        debug_assert_eq!(pos, self.base + self.items.len() as u64);
        self.items.push_back(rec);
    }

    /// The record of `pos`, released now (positions are released in order).
    pub(crate) fn release(&mut self, pos: u64) -> Option<Published> {
        if pos != self.base {
            return None;
        }
        self.base += 1;
        let rec = self.items.pop_front();
        if self.items.is_empty() && self.items.capacity() > 1024 {
            // A burst is over: give the memory back.
            self.items.shrink_to(64);
        }
        rec
    }

    /// The positions still outstanding, in order.
    pub(crate) fn positions(&self) -> std::ops::Range<u64> {
        self.base..self.base + self.items.len() as u64
    }

    /// The record of `pos` if it is still outstanding.
    pub(crate) fn get(&self, pos: u64) -> Option<&Published> {
        let i = pos.checked_sub(self.base)?;
        self.items.get(usize::try_from(i).ok()?)
    }
}

/// Whether registration `idx` of generation `gen` waits in the backlog.
fn is_backlogged(regs: &[Option<Registration>], idx: usize, gen: u32) -> bool {
    regs.get(idx)
        .and_then(Option::as_ref)
        .is_some_and(|r| r.gen == gen && r.pending == Pending::Backlog)
}

/// Ready kevents waiting for room in the ring, oldest first. REMOVE is O(1): an entry
/// whose registration is gone (or was replaced, or left the backlog) is skipped when it
/// reaches the front.
#[derive(Default)]
pub(crate) struct Backlog {
    items: VecDeque<(usize, u32)>,
    live: usize,
}

impl Backlog {
    /// Live entries.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.live == 0
    }

    pub(crate) fn push_back(&mut self, idx: usize, gen: u32) {
        self.items.push_back((idx, gen));
        self.live += 1;
    }

    /// Ahead of everything (a redelivery).
    pub(crate) fn push_front(&mut self, idx: usize, gen: u32) {
        self.items.push_front((idx, gen));
        self.live += 1;
    }

    /// A registration in the backlog went away (REMOVE): its entry becomes stale. Stale
    /// entries are dropped when they reach the front, or all at once when they outnumber
    /// the live ones (REMOVE churn behind a backlog that never drains must not grow the
    /// queue: memory stays proportional to what waits).
    pub(crate) fn forget(&mut self, regs: &[Option<Registration>]) {
        self.live = self.live.saturating_sub(1);
        if self.live == 0 {
            self.items.clear();
        } else if self.items.len() > 64 && self.items.len() > 2 * self.live {
            self.items
                .retain(|&(idx, gen)| is_backlogged(regs, idx, gen));
            self.live = self.items.len();
        }
    }

    /// The oldest live entry, dropping stale ones on the way.
    pub(crate) fn front(&mut self, regs: &[Option<Registration>]) -> Option<usize> {
        while let Some(&(idx, gen)) = self.items.front() {
            if is_backlogged(regs, idx, gen) {
                return Some(idx);
            }
            self.items.pop_front();
        }
        None
    }

    /// Takes the front entry out (after [`Backlog::front`] returned it).
    pub(crate) fn pop_front(&mut self) {
        if self.items.pop_front().is_some() {
            self.live = self.live.saturating_sub(1);
        }
    }
}

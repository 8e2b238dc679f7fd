//! [`Batch`]: the events one [`wait`](crate::Queue::wait) claimed, committed when
//! dropped.
//!
//! A claim makes the entries this consumer's (slot state CLAIMED(me)); the commit marks
//! them DONE (`kevent_commit`), which lets the user index move past them and the producer
//! reuse their slots and re-arm their kevents. Tying the commit to the batch's lifetime
//! (as tokio-rs/io-uring publishes its queue index on drop) makes the acknowledgement
//! impossible to forget. The commit names the exact positions claimed
//! ([`kevent_syscalls::Instance::commit_range`]), so batches of several threads commit
//! independently, in any order.

use std::fmt;
use std::ops::Range;

use kevent_ring::Claim;
use kevent_syscalls as sys;

use crate::Event;

/// The events claimed by one [`wait`](crate::Queue::wait). Iterate over it (`for ev in
/// &batch`), then drop it or call [`commit`](Batch::commit).
///
/// **Committing is the acknowledgement.** Until the batch is committed its entries stay
/// claimed by this consumer, their slots cannot be reused, and a level-triggered kevent in
/// it is not reported again. After the commit a level-triggered source that is *still*
/// ready (you did not read all of it) is reported again: handle the event before the
/// batch goes.
///
/// If this process dies with a batch uncommitted, the producer's reaper re-delivers its
/// events to another consumer, flagged [`Event::is_redelivered`].
#[must_use = "dropping a Batch commits its events at once, unprocessed"]
pub struct Batch<'q> {
    queue: &'q sys::Instance,
    claim: Claim,
    open: bool,
}

impl<'q> Batch<'q> {
    pub(crate) fn new(queue: &'q sys::Instance, claim: Claim) -> Batch<'q> {
        Batch {
            queue,
            claim,
            open: true,
        }
    }

    /// Number of events in the batch.
    pub fn len(&self) -> usize {
        self.claim.owned as usize
    }

    /// Whether the batch is empty (the wait timed out or was woken).
    pub fn is_empty(&self) -> bool {
        self.claim.owned == 0
    }

    /// The events, in ring order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            queue: self.queue,
            positions: self.claim.start..self.claim.end,
        }
    }

    /// The ring positions claimed (`start..end`; the kevent `(index, over)` pair of a
    /// position is [`kevent_ring::Ring::kevent_view`]).
    pub fn positions(&self) -> Range<u64> {
        self.claim.start..self.claim.end
    }

    /// `kevent_commit`: done with every event of the batch. Returns how many entries were
    /// committed: fewer than [`len`](Batch::len) if the kernel took some back — from a
    /// consumer that died, or one that held the oldest entry past its lease while the
    /// ring was full or events waited ([`Builder::lease`](crate::Builder::lease)); those
    /// were delivered to another consumer, and this commit of them is a no-op.
    #[doc(alias = "kevent_commit")]
    pub fn commit(mut self) -> u64 {
        self.finish()
    }

    /// Gives the events back unprocessed. This *is* a commit — the ring has no way to
    /// un-claim an entry — so what comes back depends on the kevent:
    ///
    /// * a **level-triggered** fd that is still ready is reported again at once (the
    ///   commit re-arms it, and the producer re-checks readiness): releasing it is safe;
    /// * **edge-triggered** and **oneshot** kevents, timer expirations, signals, user and
    ///   inode events are **not** redelivered: their readiness and counts were in these
    ///   entries and are gone.
    ///
    /// Use it to say "not now" to level-triggered sources; for anything else process the
    /// event or keep the batch. Returns how many entries were committed.
    pub fn release(mut self) -> u64 {
        self.finish()
    }

    fn finish(&mut self) -> u64 {
        if !std::mem::replace(&mut self.open, false) || self.claim.is_empty() {
            return 0;
        }
        self.queue.commit_range(self.claim.start..self.claim.end)
    }
}

impl Drop for Batch<'_> {
    /// Commits the batch if it was not committed yet.
    fn drop(&mut self) {
        self.finish();
    }
}

impl<'a> IntoIterator for &'a Batch<'_> {
    type Item = Event;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("positions", &self.positions())
            .field("len", &self.len())
            .field("open", &self.open)
            .finish()
    }
}

/// Iterator over the events of a [`Batch`].
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    queue: &'a sys::Instance,
    positions: Range<u64>,
}

impl Iterator for Iter<'_> {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        // A claimed position that is not ours (the reaper took it while our claim was
        // stalled) reads as None: skip it.
        self.positions
            .by_ref()
            .find_map(|pos| self.queue.entry(pos))
            .map(Event::from_raw)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (
            0,
            Some((self.positions.end - self.positions.start) as usize),
        )
    }
}

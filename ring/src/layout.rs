//! The shared-memory layout: one header page, then `capacity` 64-byte slots.
//!
//! Everything here is `#[repr(C)]` and every offset is pinned by a test (`tests` below):
//! the layout is an ABI shared by every process that maps the ring, possibly built by
//! another version of this library. Every field is an atomic, because every participant
//! can write these pages at any time (see "Untrusted memory" in ARCHITECTURE.md §3).
//!
//! The hot words (`kidx`, `cidx`, `uidx`, the wake-up word) each sit on their own
//! 128-byte line — two cache lines, since x86's adjacent-line prefetcher pairs them — so
//! the producer and the consumers do not bounce each other's lines. The alignment is
//! spelled out here rather than borrowed from `crossbeam_utils::CachePadded`, whose
//! alignment depends on the target: an ABI must not.

use crate::sync::{AtomicU32, AtomicU64};

/// `"KEVTRING"`: the first eight bytes of every ring.
pub const MAGIC: u64 = u64::from_le_bytes(*b"KEVTRING");
/// The ABI version this library speaks.
pub const ABI_VERSION: u32 = 3;
/// Size of the header in bytes (one page on every Linux we run on).
pub const HEADER_SIZE: usize = 4096;
/// Size of one slot in bytes.
pub const SLOT_SIZE: usize = 64;
/// Number of records in the consumer table (consumer ids are `1..=MAX_CONSUMERS`).
pub const MAX_CONSUMERS: usize = 64;
/// Largest capacity a ring may have (2^24 slots, 1 GiB of slots).
pub const MAX_CAPACITY: u32 = 1 << 24;
/// Smallest capacity a ring may have. The original refused a ring of one entry
/// (`EINVAL`), and so do we.
pub const MIN_CAPACITY: u32 = 2;
/// File offset of the byte whose open-file-description lock is consumer `i`'s liveness
/// token (`LOCK_BASE + i`). Locks need no backing bytes; the range is inside the header
/// page's reserved tail only so that it is easy to recognise.
pub const LOCK_BASE: u64 = 3584;

/// The identity block: written once by the creator, validated by every attacher.
#[repr(C)]
pub struct Identity {
    /// [`MAGIC`].
    pub magic: AtomicU64,
    /// [`ABI_VERSION`].
    pub abi_version: AtomicU32,
    /// [`HEADER_SIZE`].
    pub header_size: AtomicU32,
    /// [`SLOT_SIZE`].
    pub slot_size: AtomicU32,
    /// Number of slots, a power of two in `MIN_CAPACITY..=MAX_CAPACITY`.
    pub capacity: AtomicU32,
    /// Ring flags (none are defined in ABI v1; unknown bits are kept, not rejected).
    pub flags: AtomicU32,
    /// [`MAX_CONSUMERS`].
    pub consumer_slots: AtomicU32,
    /// Non-zero once someone found the ring corrupt: the [`crate::Broken`] reason code.
    pub broken: AtomicU32,
    /// Non-zero once the producer has stopped; waiters return instead of sleeping.
    pub closed: AtomicU32,
    /// Process id of the producer (informational, for `kevent stat`).
    pub producer_pid: AtomicU32,
    _reserved: [AtomicU32; 21],
}

/// One 128-byte line holding a single free-running 64-bit position.
#[repr(C, align(128))]
pub struct PositionLine {
    /// The position.
    pub pos: AtomicU64,
}

/// The wake-up line: the futex word and the sleeper count (ARCHITECTURE.md §3, "Waiting").
#[repr(C, align(128))]
pub struct WakeLine {
    /// The futex word. Waiters sleep on it; a waker bumps it before `FUTEX_WAKE`.
    pub seq: AtomicU32,
    /// How many consumers are (about to be) asleep on `seq`.
    pub waiters: AtomicU32,
    /// Set by the producer when it wants a doorbell on commit (io_uring's
    /// `IORING_SQ_NEED_WAKEUP`): it has a backlog or level-triggered kevents to re-arm.
    pub need_doorbell: AtomicU32,
    /// How many consumers of the owning process are (about to be) blocked on the queue's
    /// sources instead of on `seq` (the poller, see `wake/poller.rs`): a waker that woke fewer
    /// futex sleepers than it meant to rings the bell for them.
    pub pollers: AtomicU32,
    /// Explicit wake-ups (`kevent_ctl(READY)` with no events, `WAKEUP_ALL`, close): a
    /// wait that asked for it returns `Woken` once this differs from what it saw at its
    /// start. Publishes never move it, so a sleeper woken for an entry someone else took
    /// sleeps on instead of returning empty.
    pub kicks: AtomicU32,
    /// Non-zero while the producer thread is parked (not watching the sources): a
    /// consumer about to sleep on `seq` unparks it first.
    pub unwatched: AtomicU32,
    /// The parked producer's futex word (shared: any process may unpark it).
    pub park: AtomicU32,
    /// The owner's liveness word: a robust futex held by the producer thread (its tid;
    /// `FUTEX_WAITERS` once someone sleeps on it). When that thread ends, however it
    /// ends, the kernel sets `FUTEX_OWNER_DIED` and wakes one sleeper (see `wake/owner.rs`).
    /// 0 until the producer thread runs.
    pub owner: AtomicU32,
}

/// Counters the producer keeps (consumers only read them).
#[repr(C, align(128))]
pub struct Stats {
    /// Entries published into the ring.
    pub posted: AtomicU64,
    /// Readiness merged into an already pending entry instead of a new one.
    pub coalesced: AtomicU64,
    /// Entries that had to wait in the backlog because the ring was full.
    pub backlogged: AtomicU64,
    /// Entries delivered again because the consumer that claimed them died.
    pub redelivered: AtomicU64,
    /// Entries lost. The design guarantees this stays 0; it exists to prove it.
    pub lost: AtomicU64,
    /// Current backlog length.
    pub backlog_len: AtomicU64,
    /// Number of registered kevents.
    pub registered: AtomicU64,
    /// `FUTEX_WAKE` calls the producer made.
    pub wake_calls: AtomicU64,
    /// Entries taken back from a live consumer that held them past its lease, and
    /// delivered again.
    pub expired: AtomicU64,
    /// Entries released without a claim (a stray write turned READY into DONE), found by
    /// the producer at release and delivered again.
    pub unclaimed: AtomicU64,
}

/// One consumer's record in the header's consumer table.
#[repr(C)]
pub struct ConsumerRecord {
    /// [`crate::consumers::RecordState`] as a number.
    pub state: AtomicU32,
    /// The consumer's process id (informational; liveness is the lock, not the pid).
    pub pid: AtomicU32,
    /// Bumped every time the record is taken, so a stale view is recognisable.
    pub generation: AtomicU32,
    /// This consumer's threads counted in the ring's `waiters` (asleep, or about to
    /// sleep): the reaper takes a dead consumer's share back out of `waiters`.
    pub sleeping: AtomicU32,
    /// Entries this consumer has claimed in its lifetime.
    pub claimed: AtomicU64,
    /// Entries this consumer has completed in its lifetime.
    pub completed: AtomicU64,
}

/// The header page.
#[repr(C)]
pub struct Header {
    /// Magic, version, geometry, flags.
    pub identity: Identity,
    /// `kidx`: the producer position (next position to publish). Written only by the
    /// producer.
    pub kidx: PositionLine,
    /// `cidx`: the claim position (next position to claim). Advanced by consumers.
    pub cidx: PositionLine,
    /// `uidx`: the user (release) position; every position below it is free for the
    /// producer's next lap. Advanced by whoever finds the slot at `uidx` done.
    pub uidx: PositionLine,
    /// The wake-up word and the sleeper count.
    pub wake: WakeLine,
    /// Statistics.
    pub stats: Stats,
    _gap: [u8; 256],
    /// The consumer table.
    pub consumers: [ConsumerRecord; MAX_CONSUMERS],
    _tail: [u8; 1024],
}

/// One ring entry: the ownership/lap state word and a `ukevent`.
#[repr(C, align(64))]
pub struct Slot {
    /// The [`crate::SlotState`] word.
    pub state: AtomicU64,
    /// The `ukevent`, as five words (see [`crate::Ukevent`]).
    pub words: [AtomicU64; 5],
    /// The claim stamp: the position, written by the consumer that claimed the entry
    /// ([`NO_CLAIM`] when published). The producer checks it when the entry is released:
    /// a DONE without it was never claimed (see `consumer.rs`).
    pub claim: AtomicU64,
    _reserved: AtomicU64,
}

/// The claim stamp of a slot nobody has claimed yet (no position ever reaches it).
pub const NO_CLAIM: u64 = u64::MAX;

impl Slot {
    /// A slot in its initial state: `EMPTY` for lap 0.
    pub fn new() -> Self {
        Slot {
            state: AtomicU64::new(0),
            words: core::array::from_fn(|_| AtomicU64::new(0)),
            claim: AtomicU64::new(0),
            _reserved: AtomicU64::new(0),
        }
    }
}

impl Default for Slot {
    fn default() -> Self {
        Self::new()
    }
}

impl Header {
    /// A header with every field zero (an all-zero page is a valid `Header` value).
    pub fn zeroed() -> Self {
        fn u32s<const N: usize>() -> [AtomicU32; N] {
            core::array::from_fn(|_| AtomicU32::new(0))
        }
        let line = || PositionLine {
            pos: AtomicU64::new(0),
        };
        Header {
            identity: Identity {
                magic: AtomicU64::new(0),
                abi_version: AtomicU32::new(0),
                header_size: AtomicU32::new(0),
                slot_size: AtomicU32::new(0),
                capacity: AtomicU32::new(0),
                flags: AtomicU32::new(0),
                consumer_slots: AtomicU32::new(0),
                broken: AtomicU32::new(0),
                closed: AtomicU32::new(0),
                producer_pid: AtomicU32::new(0),
                _reserved: u32s(),
            },
            kidx: line(),
            cidx: line(),
            uidx: line(),
            wake: WakeLine {
                seq: AtomicU32::new(0),
                waiters: AtomicU32::new(0),
                need_doorbell: AtomicU32::new(0),
                pollers: AtomicU32::new(0),
                kicks: AtomicU32::new(0),
                unwatched: AtomicU32::new(0),
                park: AtomicU32::new(0),
                owner: AtomicU32::new(0),
            },
            stats: Stats {
                posted: AtomicU64::new(0),
                coalesced: AtomicU64::new(0),
                backlogged: AtomicU64::new(0),
                redelivered: AtomicU64::new(0),
                lost: AtomicU64::new(0),
                backlog_len: AtomicU64::new(0),
                registered: AtomicU64::new(0),
                wake_calls: AtomicU64::new(0),
                expired: AtomicU64::new(0),
                unclaimed: AtomicU64::new(0),
            },
            _gap: [0; 256],
            consumers: core::array::from_fn(|_| ConsumerRecord {
                state: AtomicU32::new(0),
                pid: AtomicU32::new(0),
                generation: AtomicU32::new(0),
                sleeping: AtomicU32::new(0),
                claimed: AtomicU64::new(0),
                completed: AtomicU64::new(0),
            }),
            _tail: [0; 1024],
        }
    }
}

/// Checks a capacity requested by a caller (the kernel's `EINVAL` cases): a power of two
/// in `MIN_CAPACITY..=MAX_CAPACITY`.
pub fn check_capacity(capacity: u32) -> Result<(), crate::AttachError> {
    if capacity.is_power_of_two() && (MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
        Ok(())
    } else {
        Err(crate::AttachError::Capacity { found: capacity })
    }
}

/// Bytes a ring of `capacity` slots occupies (header + slots).
pub fn ring_bytes(capacity: u32) -> usize {
    HEADER_SIZE + capacity as usize * SLOT_SIZE
}

/// The layout is the ABI: every size and offset another process relies on is pinned at
/// compile time (a change that moves one fails the build, and must bump
/// [`ABI_VERSION`]). Not under loom, whose atomics have other sizes.
#[cfg(not(loom))]
const _: () = {
    use crate::Ukevent;
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<Header>() == HEADER_SIZE);
    assert!(size_of::<Identity>() == 128);
    assert!(offset_of!(Header, identity) == 0);
    assert!(offset_of!(Identity, magic) == 0);
    assert!(offset_of!(Identity, abi_version) == 8);
    assert!(offset_of!(Identity, header_size) == 12);
    assert!(offset_of!(Identity, slot_size) == 16);
    assert!(offset_of!(Identity, capacity) == 20);
    assert!(offset_of!(Identity, flags) == 24);
    assert!(offset_of!(Identity, consumer_slots) == 28);
    assert!(offset_of!(Identity, broken) == 32);
    assert!(offset_of!(Identity, closed) == 36);
    assert!(offset_of!(Identity, producer_pid) == 40);
    assert!(offset_of!(Header, kidx) == 128);
    assert!(offset_of!(Header, cidx) == 256);
    assert!(offset_of!(Header, uidx) == 384);
    assert!(offset_of!(Header, wake) == 512);
    assert!(offset_of!(WakeLine, seq) == 0);
    assert!(offset_of!(WakeLine, waiters) == 4);
    assert!(offset_of!(WakeLine, need_doorbell) == 8);
    assert!(offset_of!(WakeLine, pollers) == 12);
    assert!(offset_of!(WakeLine, kicks) == 16);
    assert!(offset_of!(WakeLine, unwatched) == 20);
    assert!(offset_of!(WakeLine, park) == 24);
    assert!(offset_of!(WakeLine, owner) == 28);
    assert!(size_of::<WakeLine>() == 128);
    assert!(offset_of!(Header, stats) == 640);
    assert!(offset_of!(Stats, posted) == 0);
    assert!(offset_of!(Stats, coalesced) == 8);
    assert!(offset_of!(Stats, backlogged) == 16);
    assert!(offset_of!(Stats, redelivered) == 24);
    assert!(offset_of!(Stats, lost) == 32);
    assert!(offset_of!(Stats, backlog_len) == 40);
    assert!(offset_of!(Stats, registered) == 48);
    assert!(offset_of!(Stats, wake_calls) == 56);
    assert!(offset_of!(Stats, expired) == 64);
    assert!(offset_of!(Stats, unclaimed) == 72);
    assert!(size_of::<Stats>() == 128);
    assert!(offset_of!(Header, consumers) == 1024);
    assert!(size_of::<ConsumerRecord>() == 32);
    assert!(offset_of!(ConsumerRecord, state) == 0);
    assert!(offset_of!(ConsumerRecord, pid) == 4);
    assert!(offset_of!(ConsumerRecord, generation) == 8);
    assert!(offset_of!(ConsumerRecord, sleeping) == 12);
    assert!(offset_of!(ConsumerRecord, claimed) == 16);
    assert!(offset_of!(ConsumerRecord, completed) == 24);
    assert!(1024 + MAX_CONSUMERS * 32 == 3072);
    assert!(LOCK_BASE as usize >= 3072 && LOCK_BASE as usize + MAX_CONSUMERS <= HEADER_SIZE);
    assert!(size_of::<Slot>() == SLOT_SIZE);
    assert!(align_of::<Slot>() == 64);
    assert!(offset_of!(Slot, state) == 0);
    assert!(offset_of!(Slot, words) == 8);
    assert!(offset_of!(Slot, claim) == 48);
    assert!(size_of::<Ukevent>() == 40);
    assert!(offset_of!(Ukevent, id) == 0);
    assert!(offset_of!(Ukevent, type_) == 8);
    assert!(offset_of!(Ukevent, event) == 12);
    assert!(offset_of!(Ukevent, req_flags) == 16);
    assert!(offset_of!(Ukevent, ret_flags) == 20);
    assert!(offset_of!(Ukevent, ret_data) == 24);
    assert!(offset_of!(Ukevent, user) == 32);
};

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn magic_spells_kevtring() {
        assert_eq!(&MAGIC.to_le_bytes(), b"KEVTRING");
    }
}

//! [`Ring`]: one mapping of the shared ring, with its geometry read once and kept
//! privately.
//!
//! The geometry (capacity, mask) is validated when the ring is created or attached and
//! never re-read from shared memory: a participant that scribbles over the header later
//! cannot make us index out of bounds, because every slot index is
//! `position & (capacity - 1)` with our own copy of the capacity.

use std::ptr::NonNull;

use crate::layout::{
    check_capacity, Header, Slot, ABI_VERSION, HEADER_SIZE, MAGIC, MAX_CONSUMERS, SLOT_SIZE,
};
use crate::state::LAP_MASK;
use crate::sync::Ordering;
use crate::{AttachError, Broken};

/// The memory a ring lives in.
pub(crate) enum Backing {
    /// Ordinary heap memory: tests and loom models.
    Heap(#[allow(dead_code)] Box<HeapRing>),
    /// A `MAP_SHARED` mapping of a memfd.
    #[cfg(not(loom))]
    Mapped(crate::memfd::Mapping),
}

/// A heap-allocated header and slot array (what loom models run on).
pub(crate) struct HeapRing {
    header: Header,
    slots: Box<[Slot]>,
}

/// A kevent ring: the header and `capacity` slots, in a memfd or on the heap.
///
/// `Ring` is `Send + Sync`; every access to the shared memory is atomic. The protocol
/// lives in [`crate::Producer`] (single producer) and in the consumer methods of this type
/// ([`Ring::claim`], [`Ring::complete`], [`Ring::advance`], [`Ring::wait`]).
pub struct Ring {
    header: NonNull<Header>,
    slots: NonNull<Slot>,
    capacity: u64,
    shift: u32,
    // Keeps `header` and `slots` alive; dropped last. (Under loom nothing reads it.)
    #[cfg_attr(loom, allow(dead_code))]
    backing: Backing,
    /// How [`Ring::wake`] reaches a poller (see `wake/poller.rs`).
    pub(crate) bell: crate::wake::poller::Bell,
    #[cfg(loom)]
    pub(crate) parking: crate::wake::futex::Parking,
    /// The loom model of the producer's `park` futex.
    #[cfg(loom)]
    pub(crate) park_parking: crate::wake::futex::Parking,
}

// SAFETY: the pointers point into `backing`, which the Ring owns and which lives as long
// as it does; all access through them is to atomics (`Header`, `Slot` hold only atomics
// and plain padding never read), so sharing across threads is data-race free.
unsafe impl Send for Ring {}
// SAFETY: as above: `&Ring` only ever performs atomic operations on the shared memory.
unsafe impl Sync for Ring {}

impl Ring {
    /// A ring of `capacity` slots in ordinary heap memory, usable by the threads of one
    /// process. Used by tests and by the loom models.
    pub fn heap(capacity: u32) -> Result<Ring, AttachError> {
        check_capacity(capacity)?;
        let heap = Box::new(HeapRing {
            header: Header::zeroed(),
            slots: (0..capacity).map(|_| Slot::new()).collect(),
        });
        let header = NonNull::from(&heap.header);
        let slots = NonNull::from(&heap.slots[0]);
        // SAFETY: header and slots point into the box we hand over as the backing.
        let ring = unsafe { Ring::from_parts(header, slots, capacity, Backing::Heap(heap)) };
        ring.init_identity();
        Ok(ring)
    }

    /// Creates a ring of `capacity` slots in a new memfd named `name`, sized and sealed
    /// against shrinking and growing, and mapped shared.
    ///
    /// `capacity` must be a power of two in `2..=2^24` (`EINVAL` otherwise).
    #[cfg(not(loom))]
    pub fn create(name: &str, capacity: u32) -> Result<Ring, AttachError> {
        check_capacity(capacity)?;
        let ring = Ring::over(crate::memfd::Mapping::create(name, capacity)?);
        ring.init_identity();
        Ok(ring)
    }

    /// Attaches to an existing ring from its memfd (the fd is duplicated; the caller
    /// keeps its own). Refuses anything that is not a sound ring of this ABI, with an
    /// error that says what is wrong.
    #[cfg(not(loom))]
    pub fn attach(fd: std::os::fd::BorrowedFd<'_>) -> Result<Ring, AttachError> {
        Ok(Ring::over(crate::memfd::Mapping::attach(fd)?))
    }

    #[cfg(not(loom))]
    fn over(mapping: crate::memfd::Mapping) -> Ring {
        let (header, slots, capacity) = (mapping.header(), mapping.slots(), mapping.capacity());
        // SAFETY: a Mapping holds a header and `capacity` slots (validated capacity; the
        // file is sized and sealed against shrinking), page-aligned, for as long as it
        // lives, and it lives in the backing we hand over. Header and Slot consist of
        // atomics only, valid for any bit pattern, including the zeroes of a fresh memfd.
        unsafe { Ring::from_parts(header, slots, capacity, Backing::Mapped(mapping)) }
    }

    /// Builds a ring over memory that holds a header and `capacity` slots.
    ///
    /// # Safety
    ///
    /// `header` must point to a `Header` and `slots` to `capacity` contiguous `Slot`s,
    /// both valid (as atomics) for as long as `backing` lives, and `capacity` must have
    /// passed [`check_capacity`].
    pub(crate) unsafe fn from_parts(
        header: NonNull<Header>,
        slots: NonNull<Slot>,
        capacity: u32,
        backing: Backing,
    ) -> Ring {
        Ring {
            header,
            slots,
            capacity: u64::from(capacity),
            shift: capacity.trailing_zeros(),
            backing,
            bell: crate::wake::poller::Bell::new(),
            #[cfg(loom)]
            parking: crate::wake::futex::Parking::new(),
            #[cfg(loom)]
            park_parking: crate::wake::futex::Parking::new(),
        }
    }

    /// Writes the identity block of a new ring.
    pub(crate) fn init_identity(&self) {
        let id = &self.header().identity;
        id.abi_version.store(ABI_VERSION, Ordering::Relaxed);
        id.header_size.store(HEADER_SIZE as u32, Ordering::Relaxed);
        id.slot_size.store(SLOT_SIZE as u32, Ordering::Relaxed);
        id.capacity.store(self.capacity as u32, Ordering::Relaxed);
        id.consumer_slots
            .store(MAX_CONSUMERS as u32, Ordering::Relaxed);
        id.producer_pid.store(std::process::id(), Ordering::Relaxed);
        // Release: an attacher that sees the magic (Acquire) sees the fields above.
        id.magic.store(MAGIC, Ordering::Release);
    }

    /// The shared counters (posted, coalesced, backlogged, redelivered, ...): what the
    /// producer updates and `kevent stat` reads, without reaching into the header.
    #[inline]
    pub fn stats(&self) -> &crate::layout::Stats {
        &self.header().stats
    }

    /// The shared header.
    #[inline]
    pub fn header(&self) -> &Header {
        // SAFETY: `header` is valid for the ring's lifetime (see `from_parts`).
        unsafe { self.header.as_ref() }
    }

    /// The slot that holds position `pos` (always in bounds: the index is masked with
    /// our private capacity).
    #[inline]
    pub(crate) fn slot(&self, pos: u64) -> &Slot {
        let index = (pos & (self.capacity - 1)) as usize;
        // SAFETY: index < capacity, and `slots` points to `capacity` slots valid for the
        // ring's lifetime (see `from_parts`).
        unsafe { &*self.slots.as_ptr().add(index) }
    }

    /// The lap of a position, as stored in a state word.
    #[inline]
    pub(crate) fn lap(&self, pos: u64) -> u64 {
        (pos >> self.shift) & LAP_MASK
    }

    /// Number of slots.
    #[inline]
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The kevent view of a position: `(index, over)`, i.e. `ring_kidx`/`ring_uidx`
    /// (position modulo capacity) and the wrap counter (position / capacity).
    pub fn kevent_view(&self, pos: u64) -> (u32, u32) {
        (
            (pos & (self.capacity - 1)) as u32,
            (pos >> self.shift) as u32,
        )
    }

    /// The position a kevent `(index, over)` pair names: the inverse of
    /// [`Ring::kevent_view`]. `None` if `index` is not below the capacity.
    pub fn position_of(&self, index: u32, over: u32) -> Option<u64> {
        (u64::from(index) < self.capacity).then(|| u64::from(over) << self.shift | u64::from(index))
    }

    /// The producer position `kidx` as last published.
    #[inline]
    pub fn kidx(&self) -> u64 {
        self.header().kidx.pos.load(Ordering::Acquire)
    }

    /// The claim position `cidx`.
    #[inline]
    pub fn cidx(&self) -> u64 {
        self.header().cidx.pos.load(Ordering::Acquire)
    }

    /// The user (release) position `uidx`.
    #[inline]
    pub fn uidx(&self) -> u64 {
        self.header().uidx.pos.load(Ordering::Acquire)
    }

    /// Whether the ring was marked broken, and why.
    #[inline]
    pub fn broken(&self) -> Option<Broken> {
        Broken::from_code(self.header().identity.broken.load(Ordering::Acquire))
    }

    /// Marks the ring broken (first reason wins) and wakes every waiter so that nobody
    /// sleeps on a ring that will never deliver again.
    pub fn mark_broken(&self, why: Broken) {
        let _ = self.header().identity.broken.compare_exchange(
            0,
            why as u32,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.wake_all();
    }

    /// Whether the producer has stopped.
    pub fn is_closed(&self) -> bool {
        self.header().identity.closed.load(Ordering::Acquire) != 0
    }

    /// Marks the ring closed (the producer stopped) and wakes every waiter.
    pub fn close(&self) {
        // A ring closed because its owner died stays closed for that reason.
        let _ = self.header().identity.closed.compare_exchange(
            0,
            crate::wake::owner::CLOSED_BY_OWNER,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.wake_all();
        // The parked producer too (it is the one to notice the close).
        self.unpark_producer();
    }

    /// The memfd behind the ring, if it is one.
    #[cfg(not(loom))]
    pub fn memfd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        match &self.backing {
            Backing::Heap(_) => None,
            Backing::Mapped(m) => Some(m.as_fd()),
        }
    }
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("capacity", &self.capacity)
            .field("kidx", &self.kidx())
            .field("cidx", &self.cidx())
            .field("uidx", &self.uidx())
            .field("broken", &self.broken())
            .finish()
    }
}

//! Helpers shared by the ring's integration tests: a bitmap in shared memory (visible to
//! forked children), a no-progress watchdog, and the content the stress tests put in
//! each event.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kevent_ring::Ukevent;

/// How long a loop may go without progress before the test fails instead of hanging.
pub const STALL_LIMIT: Duration = Duration::from_secs(30);

/// An anonymous `MAP_SHARED` mapping of `len` zeroed `AtomicU64` words: shared with every
/// child forked after it was made, unmapped on drop.
pub struct SharedWords {
    ptr: *mut AtomicU64,
    len: usize,
}

// SAFETY: the mapping is only accessed through atomics and lives as long as the value.
unsafe impl Send for SharedWords {}
// SAFETY: as above: `&SharedWords` hands out only `&[AtomicU64]`.
unsafe impl Sync for SharedWords {}

impl SharedWords {
    /// Maps `len` words (at least one).
    pub fn new(len: usize) -> SharedWords {
        let len = len.max(1);
        let bytes = len * std::mem::size_of::<AtomicU64>();
        // SAFETY: an anonymous mapping with no address hint touches no existing memory;
        // the result is checked against MAP_FAILED below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(
            ptr,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        SharedWords {
            ptr: ptr.cast(),
            len,
        }
    }

    /// The words.
    pub fn words(&self) -> &[AtomicU64] {
        // SAFETY: `ptr` points to `len` page-aligned, zero-initialised words that stay
        // mapped until drop; all-zero bytes are a valid `AtomicU64`, and every access
        // goes through the atomic API.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for SharedWords {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region `new` mapped; no reference into it outlives
        // `self` (`words` borrows `self`).
        unsafe {
            libc::munmap(self.ptr.cast(), self.len * std::mem::size_of::<AtomicU64>());
        }
    }
}

/// One bit per sequence number, in shared memory: marks each delivery and catches
/// duplicates.
pub struct DeliveryMap {
    bits: SharedWords,
    n: u64,
}

impl DeliveryMap {
    /// A map for sequence numbers `0..n`, all unseen.
    pub fn new(n: u64) -> DeliveryMap {
        DeliveryMap {
            bits: SharedWords::new(n.div_ceil(64) as usize),
            n,
        }
    }

    /// Marks `seq` delivered. Returns `false` if it already was (a duplicate) or if it
    /// is out of range (an entry nobody published).
    #[must_use]
    pub fn mark(&self, seq: u64) -> bool {
        if seq >= self.n {
            return false;
        }
        let bit = 1u64 << (seq % 64);
        // Relaxed: only the set of bits matters, read after the consumers are joined or
        // reaped (which orders their writes before the read).
        self.bits.words()[(seq / 64) as usize].fetch_or(bit, Ordering::Relaxed) & bit == 0
    }

    /// How many sequence numbers were delivered.
    pub fn delivered(&self) -> u64 {
        self.bits
            .words()
            .iter()
            .map(|w| u64::from(w.load(Ordering::Relaxed).count_ones()))
            .sum()
    }

    /// The first sequence number never delivered, if any.
    pub fn first_missing(&self) -> Option<u64> {
        (0..self.n).find(|&seq| {
            self.bits.words()[(seq / 64) as usize].load(Ordering::Relaxed) & (1 << (seq % 64)) == 0
        })
    }
}

/// Fails (panics) when a watched value stops moving for [`STALL_LIMIT`].
pub struct Watchdog {
    what: &'static str,
    last: u64,
    since: Instant,
}

impl Watchdog {
    /// A watchdog for the loop named `what`.
    pub fn new(what: &'static str) -> Watchdog {
        Watchdog {
            what,
            last: u64::MAX,
            since: Instant::now(),
        }
    }

    /// Records the watched value; panics if it has not changed for too long.
    pub fn check(&mut self, value: u64, state: impl FnOnce() -> String) {
        if value != self.last {
            self.last = value;
            self.since = Instant::now();
        } else if self.since.elapsed() > STALL_LIMIT {
            panic!(
                "{}: no progress for {STALL_LIMIT:?} (stuck at {value}): {}",
                self.what,
                state()
            );
        }
    }
}

/// The event the stress producer publishes as sequence number `seq`: the id is the
/// sequence number, the other words are derived from it so a torn read is caught.
pub fn stress_event(seq: u64) -> Ukevent {
    let mix = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    Ukevent {
        id: seq,
        type_: mix as u32,
        event: (mix >> 32) as u32,
        req_flags: 0,
        ret_flags: 0,
        ret_data: [seq as u32, (seq >> 32) as u32],
        user: !mix,
    }
}

/// Whether `ev` is exactly what [`stress_event`] made for its id.
pub fn is_intact(ev: &Ukevent) -> bool {
    *ev == stress_event(ev.id)
}

/// Events per stress run: 10 million in release builds, 1 million in debug builds;
/// `KEVENT_STRESS_EVENTS` overrides both.
pub fn stress_events() -> u64 {
    std::env::var("KEVENT_STRESS_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) {
            1_000_000
        } else {
            10_000_000
        })
}

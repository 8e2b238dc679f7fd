//! `struct kevent_ring`: the ring a C program reads its events from, in its own memory,
//! as the 2006 kernel wrote into it (take25–take30) — and how its indices map onto the
//! queue's shared ring.
//!
//! The shared ring (a memfd, `kevent-ring`) has 64-byte slots with a state word and
//! 64-bit positions, claimed by compare-and-swap; C code reading it directly would have
//! to follow that protocol. So each process keeps a *view*: `View::fill` copies the
//! entries one `kevent_wait` claimed for this process into the caller's `event[]` at
//! `ring_kidx`, remembering the shared position of each, and `View::commit` turns the
//! caller's `(new_uidx, over)` into commits of those shared positions. The view's
//! positions are this process's own, free-running 64-bit counters (`kidx`, `uidx`), so
//! its indices behave in one process as the original's did, whatever other processes
//! take from the shared ring; `(index, over)` is a position's view modulo the size the
//! caller gave (not rounded to a power of two), and a commit from before a wrap is
//! `EOVERFLOW`, never taken for a new wrap.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use kevent_ring::{Claim, Ukevent};
use kevent_syscalls::Instance;

use crate::boundary::err;

/// `struct kevent_ring` as C declares it: two indices, then the entries.
#[repr(C)]
pub struct KeventRing {
    /// `ring_kidx`: index one past the last entry copied in.
    pub ring_kidx: u32,
    /// `ring_over`: how many times `ring_kidx` went round the ring.
    pub ring_over: u32,
    /// `event[]`: the entries (a flexible array member in C).
    pub event: [Ukevent; 0],
}

/// Bytes of a ring of `num` entries (`KEVENT_RING_BYTES`).
pub(crate) fn ring_bytes(num: u32) -> usize {
    std::mem::size_of::<KeventRing>() + num as usize * std::mem::size_of::<Ukevent>()
}

/// The positions of one process's view; guarded by the view's mutex.
struct Positions {
    /// Next position to copy an entry into.
    kidx: u64,
    /// Every position below this one is committed.
    uidx: u64,
    /// Entries promised to `kevent_wait` calls still waiting (so that two concurrent
    /// waits never claim more than the ring has room for).
    reserved: u64,
    /// For each entry of `event[]`, the shared ring position it was copied from.
    shared: Box<[u64]>,
}

/// One process's view of a queue: the caller's ring and its positions.
pub(crate) struct View {
    ring: NonNull<KeventRing>,
    size: u32,
    positions: Mutex<Positions>,
}

// SAFETY: `ring` is memory the caller handed over for the handle's life (see
// `View::new`); this type writes it only under `positions`' mutex (the entries) or with
// atomic stores (the indices), so sharing a View across threads adds no data race on
// the Rust side.
unsafe impl Send for View {}
// SAFETY: as above.
unsafe impl Sync for View {}

impl View {
    /// A view over the caller's ring of `size` entries, its indices set to 0.
    ///
    /// # Safety
    /// `ring` must be aligned for `KeventRing` and valid for reads and writes of
    /// [`ring_bytes`]`(size)` bytes for as long as the view (or one made from it by
    /// [`View::restarted`]) is used: the caller's promise, as in 2006, to keep the ring
    /// until it closes the queue.
    pub(crate) unsafe fn new(ring: NonNull<KeventRing>, size: u32) -> View {
        let view = View {
            ring,
            size,
            positions: Mutex::new(Positions {
                kidx: 0,
                uidx: 0,
                reserved: 0,
                shared: vec![0; size as usize].into_boxed_slice(),
            }),
        };
        view.publish(0);
        view
    }

    /// The same ring, empty, for a `fork`ed child (its copy of the caller's memory, at
    /// the same address): the parent's claims are not the child's. Reads nothing the
    /// parent's threads could have held locked at the fork.
    pub(crate) fn restarted(&self) -> View {
        // SAFETY: the same memory, under the same promise, as `self`'s (`View::new`).
        unsafe { View::new(self.ring, self.size) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Positions> {
        self.positions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `(index, over)` view of a position.
    fn view_of(&self, pos: u64) -> (u32, u32) {
        let size = u64::from(self.size);
        ((pos % size) as u32, (pos / size) as u32)
    }

    /// The 64-bit position `(index, over)` names, taking the high bits of the wrap
    /// count from `near` (the caller's `over` is 32 bits; the view's is not): of the
    /// wrap counts with those low 32 bits, the one nearest `near`'s.
    fn position_near(&self, index: u32, over: u32, near: u64) -> u64 {
        let size = u64::from(self.size);
        let near_over = near / size;
        let mut full = (near_over & !0xffff_ffff) | u64::from(over);
        if full > near_over && full - near_over > 1 << 31 && full >= 1 << 32 {
            full -= 1 << 32;
        }
        full.saturating_mul(size).saturating_add(u64::from(index))
    }

    /// Writes `ring_kidx` and `ring_over` for position `kidx`.
    fn publish(&self, kidx: u64) {
        let (index, over) = self.view_of(kidx);
        let base = self.ring.as_ptr();
        // SAFETY: the two u32 fields of the caller's ring, aligned and valid (see
        // `View::new`). Atomic stores, because C threads may read them while another
        // thread's kevent_wait moves them; Release: a thread that reads the new index
        // with an acquire load sees the entries copied before it.
        unsafe {
            AtomicU32::from_ptr(&raw mut (*base).ring_over).store(over, Ordering::Relaxed);
            AtomicU32::from_ptr(&raw mut (*base).ring_kidx).store(index, Ordering::Release);
        }
    }

    /// Reserves room for up to `num` entries for a `kevent_wait` about to claim, and
    /// returns how many it may claim: 0 if `old_uidx` is not the view's user index (the
    /// caller's view is stale) or if the ring is full. Give the reservation back with
    /// `View::fill` or [`View::unreserve`].
    pub(crate) fn reserve(&self, old_uidx: u32, num: u32) -> u64 {
        let mut p = self.lock();
        if old_uidx != self.view_of(p.uidx).0 {
            return 0;
        }
        let used = p.kidx - p.uidx + p.reserved;
        let n = (u64::from(self.size) - used).min(u64::from(num));
        p.reserved += n;
        n
    }

    /// Gives back a reservation whose wait failed.
    pub(crate) fn unreserve(&self, reserved: u64) {
        self.lock().reserved -= reserved;
    }

    /// Copies the entries of `claim` this process owns into the ring at `ring_kidx`
    /// (a claim is at most `reserved` long), gives back the reservation, and returns how
    /// many it copied. An entry the queue took back meanwhile (the lease) is skipped:
    /// it was delivered again to another consumer.
    pub(crate) fn fill(&self, queue: &Instance, reserved: u64, claim: Claim) -> u32 {
        let mut p = self.lock();
        p.reserved -= reserved;
        let size = u64::from(self.size);
        let mut copied = 0;
        for pos in claim.start..claim.end {
            let Some(ev) = queue.entry(pos) else {
                continue;
            };
            debug_assert!(p.kidx - p.uidx < size, "a claim beyond its reservation");
            let i = (p.kidx % size) as usize;
            // SAFETY: i < size: the entry lies within the caller's ring (see
            // `View::new`); `event` is 8-aligned there. Only this thread writes entries
            // (we hold the mutex), and the entry is free: kidx - uidx < size.
            unsafe {
                let event = (&raw mut (*self.ring.as_ptr()).event).cast::<Ukevent>();
                event.add(i).write(ev);
            }
            p.shared[i] = pos;
            p.kidx += 1;
            copied += 1;
        }
        self.publish(p.kidx);
        copied
    }

    /// `kevent_commit(new_uidx, over)`: commits, in the shared ring, every entry this
    /// process copied in below that position; returns how many it committed.
    ///
    /// # Errors
    /// `EINVAL`: `new_uidx` not below the ring's size, or a position beyond `ring_kidx`.
    /// `EOVERFLOW`: a position from before the user index's last wrap.
    pub(crate) fn commit(&self, queue: &Instance, new_uidx: u32, over: u32) -> io::Result<u64> {
        if new_uidx >= self.size {
            return Err(err(libc::EINVAL));
        }
        let mut p = self.lock();
        let upto = self.position_near(new_uidx, over, p.kidx);
        if upto > p.kidx {
            return Err(err(libc::EINVAL));
        }
        if upto <= p.uidx {
            // Committed already (several threads may commit the same entries), or from
            // before the last wrap: never taken for a new one.
            return if upto / u64::from(self.size) < p.uidx / u64::from(self.size) {
                Err(err(libc::EOVERFLOW))
            } else {
                Ok(0)
            };
        }
        let size = u64::from(self.size);
        let mut committed = 0;
        // Consecutive shared positions are committed as one range.
        let mut run: Option<std::ops::Range<u64>> = None;
        for pos in p.uidx..upto {
            let shared = p.shared[(pos % size) as usize];
            match &mut run {
                Some(r) if r.end == shared => r.end += 1,
                _ => {
                    if let Some(r) = run.take() {
                        committed += queue.commit_range(r);
                    }
                    run = Some(shared..shared + 1);
                }
            }
        }
        if let Some(r) = run {
            committed += queue.commit_range(r);
        }
        p.uidx = upto;
        Ok(committed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(size: u32) -> (View, Box<[u64]>) {
        let mut mem = vec![0u64; ring_bytes(size).div_ceil(8)].into_boxed_slice();
        let ring = NonNull::new(mem.as_mut_ptr().cast::<KeventRing>()).unwrap();
        // SAFETY: `mem` is 8-aligned, holds ring_bytes(size) bytes, and is returned to
        // the test, which keeps it alive as long as the view.
        (unsafe { View::new(ring, size) }, mem)
    }

    #[test]
    fn a_wrap_count_is_widened_from_the_nearest_position() {
        let (v, _mem) = view(3);
        assert_eq!(v.position_near(2, 5, 16), 17);
        // Past 2^32 laps: the caller's 32-bit over names the current lap.
        let near = (1u64 << 32) * 3 + 7;
        assert_eq!(v.position_near(1, 2, near), near);
        // One lap behind, across the 2^32 boundary.
        let near = (1u64 << 32) * 3;
        assert_eq!(v.position_near(2, u32::MAX, near), near - 1);
    }

    #[test]
    fn reservations_never_exceed_the_room_and_stale_views_get_none() {
        let (v, _mem) = view(4);
        assert_eq!(v.reserve(0, 3), 3);
        assert_eq!(v.reserve(0, 3), 1);
        assert_eq!(v.reserve(0, 3), 0);
        v.unreserve(4);
        assert_eq!(v.reserve(1, 3), 0, "index 1 is not the user index");
    }
}

//! Zero-filled `MAP_SHARED | MAP_ANONYMOUS` arrays: the memory a run shares with its
//! consumers whether they are threads or forked processes.
//!
//! A forked child inherits the mapping at the same address, so the control word, the
//! per-consumer report slots and the writer's timestamps are visible to both sides without
//! any copying. Only types made of atomics live here (see [`Zeroable`]), so every access
//! above this file is safe code.

use std::io;
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};

use rustix::mm::{mmap_anonymous, munmap, MapFlags, ProtFlags};

/// Types for which the all-zero bit pattern is a valid value and which may be shared
/// between processes (no pointers, no heap ownership).
///
/// # Safety
///
/// Implementors must be valid when zero-filled, contain no pointers or owned resources,
/// and be safe to access concurrently through `&T` (i.e. be `Sync`).
pub unsafe trait Zeroable: Sync {}

// SAFETY: an atomic integer is valid when zero and holds no pointer.
unsafe impl Zeroable for AtomicU32 {}
// SAFETY: an atomic integer is valid when zero and holds no pointer.
unsafe impl Zeroable for AtomicU64 {}

/// An array of `len` zeroed `T` in a shared anonymous mapping, unmapped on drop.
pub struct SharedArray<T: Zeroable> {
    ptr: NonNull<T>,
    len: usize,
    bytes: usize,
}

// SAFETY: the mapping is plain memory; `T: Zeroable` implies `T: Sync`, and we only hand
// out `&[T]`, so sharing or sending the owner across threads is sound.
unsafe impl<T: Zeroable> Send for SharedArray<T> {}
// SAFETY: as above: only shared references to `Sync` values are handed out.
unsafe impl<T: Zeroable> Sync for SharedArray<T> {}

impl<T: Zeroable> SharedArray<T> {
    /// Maps `len` zeroed elements (at least one page is mapped even for `len == 0`).
    pub fn new(len: usize) -> io::Result<Self> {
        let bytes = std::mem::size_of::<T>()
            .checked_mul(len.max(1))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "mapping too large"))?;
        // SAFETY: a fresh anonymous mapping at a kernel-chosen address aliases nothing.
        let ptr = unsafe {
            mmap_anonymous(
                std::ptr::null_mut(),
                bytes,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
            )?
        };
        // mmap returns page-aligned memory, which satisfies the alignment of any atomic.
        let ptr = NonNull::new(ptr.cast::<T>())
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
        Ok(Self { ptr, len, bytes })
    }
}

impl<T: Zeroable> Deref for SharedArray<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        // SAFETY: the mapping holds `len` zero-filled `T` (valid by `Zeroable`), is aligned
        // (page-aligned) and lives until `drop`, which needs `&mut self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Zeroable> Drop for SharedArray<T> {
    fn drop(&mut self) {
        // SAFETY: we own the mapping of `bytes` bytes at `ptr`; no reference into it can
        // outlive `self`. A failure leaves a leak, never unsoundness.
        let _ = unsafe { munmap(self.ptr.as_ptr().cast(), self.bytes) };
    }
}

#[cfg(test)]
mod tests {
    use super::SharedArray;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn shared_array_starts_zeroed_and_is_writable() {
        let a = SharedArray::<AtomicU64>::new(1000).unwrap();
        assert_eq!(a.len(), 1000);
        assert!(a.iter().all(|x| x.load(Ordering::Relaxed) == 0));
        a[999].store(7, Ordering::Relaxed);
        assert_eq!(a[999].load(Ordering::Relaxed), 7);
    }
}

//! A ring's pages mapped anew, to scribble on them as a hostile peer would (or anonymous
//! memory, for [`super::proc::SharedWords`]), and the header offsets of the positions.

use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicU8};

use kevent_syscalls::Instance;

/// Offsets of the positions in the header (pinned by the ring's layout, at compile time).
pub const OFF_KIDX: usize = 128;
pub const OFF_CIDX: usize = 256;
pub const OFF_UIDX: usize = 384;

/// A `MAP_SHARED` mapping: anonymous (words shared with forked children) or of a ring's
/// memfd (to scribble on it). Accessed only atomically.
pub struct Shared {
    ptr: NonNull<u8>,
    pub len: usize,
}

// SAFETY: the memory is only accessed through atomics (see `u64_at` / `u8_at`).
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Shared {
    pub fn map(len: usize, fd: Option<std::os::fd::BorrowedFd<'_>>) -> Shared {
        let (flags, raw) = match fd {
            Some(fd) => (libc::MAP_SHARED, fd.as_raw_fd()),
            None => (libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1),
        };
        // SAFETY: a new mapping at an address the kernel picks: it affects no memory we
        // already use. For a memfd, `len` is at most the file's (sealed) length.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                raw,
                0,
            )
        };
        assert_ne!(
            p,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        Shared {
            ptr: NonNull::new(p.cast()).expect("mmap never returns null"),
            len,
        }
    }

    /// The whole ring of `q`, mapped anew.
    pub fn ring_of(q: &Instance) -> Shared {
        let memfd = q.ring().memfd().expect("a memfd ring");
        let len = rustix::fs::fstat(memfd).expect("fstat").st_size as usize;
        Shared::map(len, Some(memfd))
    }

    pub fn u64_at(&self, off: usize) -> &AtomicU64 {
        assert!(off.is_multiple_of(8) && off + 8 <= self.len, "offset {off}");
        // SAFETY: in bounds and 8-aligned (the mapping is page-aligned), valid for the
        // mapping's lifetime, which the borrow of `self` bounds; every bit pattern is a
        // valid AtomicU64, and other processes touch it only atomically too.
        unsafe { &*self.ptr.as_ptr().add(off).cast::<AtomicU64>() }
    }

    pub fn u8_at(&self, off: usize) -> &AtomicU8 {
        assert!(off < self.len, "offset {off}");
        // SAFETY: in bounds, valid for the mapping's lifetime (bounded by the borrow);
        // any byte is a valid AtomicU8.
        unsafe { &*self.ptr.as_ptr().add(off).cast::<AtomicU8>() }
    }

    pub fn word(&self, i: usize) -> &AtomicU64 {
        self.u64_at(i * 8)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly our mapping; no borrow of it outlives `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

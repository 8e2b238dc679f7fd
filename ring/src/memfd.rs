//! Rings in a memfd: create (sized, then sealed), and attach (validated).
//!
//! Attaching is where untrusted input enters: a file descriptor from another process.
//! Before a single slot is touched we check, in order: that the fd is sealed against
//! shrinking (otherwise a truncate by anyone would turn our next access into `SIGBUS`),
//! the file's length, the magic, the ABI version, the header and slot sizes, the
//! capacity, and that the file holds every slot the capacity implies.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use rustix::fs::{self, MemfdFlags, SealFlags};

use crate::layout::{ring_bytes, Header, Slot, ABI_VERSION, HEADER_SIZE, MAGIC, SLOT_SIZE};
use crate::ring::{check_capacity, Backing};
use crate::sync::Ordering;
use crate::{AttachError, Ring};

/// A `MAP_SHARED` mapping of a ring's memfd, unmapped on drop.
pub(crate) struct Mapping {
    /// Held, not read: unmapped on drop.
    pub(crate) _map: memmap2::MmapRaw,
    pub(crate) fd: OwnedFd,
}

fn io_err(what: &str, e: impl Into<std::io::Error>) -> AttachError {
    let e = e.into();
    AttachError::Io(e.kind(), format!("{what}: {e}"))
}

impl Ring {
    /// Creates a ring of `capacity` slots in a new memfd named `name`, sized and sealed
    /// against shrinking and growing, and mapped shared.
    ///
    /// `capacity` must be a power of two in `2..=2^24` (`EINVAL` otherwise).
    pub fn create(name: &str, capacity: u32) -> Result<Ring, AttachError> {
        check_capacity(capacity)?;
        let fd = fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
            .map_err(|e| io_err("memfd_create", e))?;
        let len = ring_bytes(capacity) as u64;
        fs::ftruncate(&fd, len).map_err(|e| io_err("ftruncate", e))?;
        fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
            .map_err(|e| io_err("sealing the ring memfd", e))?;
        let ring = map(fd, capacity)?;
        ring.init_identity();
        Ok(ring)
    }

    /// Attaches to an existing ring from its memfd (the fd is duplicated; the caller
    /// keeps its own). Refuses anything that is not a sound ring of this ABI, with an
    /// error that says what is wrong.
    pub fn attach(fd: BorrowedFd<'_>) -> Result<Ring, AttachError> {
        let fd = fd
            .try_clone_to_owned()
            .map_err(|e| io_err("duplicating the ring fd", e))?;
        let seals = fs::fcntl_get_seals(&fd).map_err(|e| match e {
            rustix::io::Errno::INVAL => AttachError::NotSealed,
            e => io_err("reading the seals of the ring fd", e),
        })?;
        if !seals.contains(SealFlags::SHRINK) {
            return Err(AttachError::NotSealed);
        }
        let len = fs::fstat(&fd).map_err(|e| io_err("fstat", e))?.st_size as u64;
        if len < HEADER_SIZE as u64 {
            return Err(AttachError::TooSmall { len });
        }
        let capacity = {
            let head = memmap2::MmapOptions::new()
                .len(HEADER_SIZE)
                .map_raw_read_only(&fd)
                .map_err(|e| io_err("mapping the ring header", e))?;
            // SAFETY: the mapping is HEADER_SIZE bytes, page aligned, and the file cannot
            // shrink (sealed, checked above); Header is repr(C), HEADER_SIZE bytes, made
            // only of atomics, for which every bit pattern is valid. We only load.
            let header = unsafe { &*(head.as_ptr() as *const Header) };
            validate_identity(header, len)?
        };
        map(fd, capacity)
    }
}

/// Checks the identity block of a mapped header against this ABI and the file length;
/// returns the capacity.
fn validate_identity(header: &Header, len: u64) -> Result<u32, AttachError> {
    let id = &header.identity;
    let magic = id.magic.load(Ordering::Acquire);
    if magic != MAGIC {
        return Err(AttachError::BadMagic { found: magic });
    }
    let version = id.abi_version.load(Ordering::Relaxed);
    if version != ABI_VERSION {
        return Err(AttachError::Version { found: version });
    }
    for (field, found, expected) in [
        (
            "header size",
            id.header_size.load(Ordering::Relaxed),
            HEADER_SIZE as u32,
        ),
        (
            "slot size",
            id.slot_size.load(Ordering::Relaxed),
            SLOT_SIZE as u32,
        ),
    ] {
        if found != expected {
            return Err(AttachError::Geometry {
                field,
                found,
                expected,
            });
        }
    }
    let capacity = id.capacity.load(Ordering::Relaxed);
    check_capacity(capacity)?;
    let needed = ring_bytes(capacity) as u64;
    if len < needed {
        return Err(AttachError::Truncated { len, needed });
    }
    if let Some(b) = crate::Broken::from_code(id.broken.load(Ordering::Acquire)) {
        return Err(AttachError::Broken(b));
    }
    Ok(capacity)
}

/// Maps `ring_bytes(capacity)` of `fd` shared and builds the ring over it.
fn map(fd: OwnedFd, capacity: u32) -> Result<Ring, AttachError> {
    let len = ring_bytes(capacity);
    let map = memmap2::MmapOptions::new()
        .len(len)
        .map_raw(&fd)
        .map_err(|e| io_err("mapping the ring", e))?;
    let base = map.as_mut_ptr();
    let header = NonNull::new(base as *mut Header).expect("mmap never returns null");
    // SAFETY: the mapping is `len` = HEADER_SIZE + capacity * SLOT_SIZE bytes, so the
    // slot array starts HEADER_SIZE bytes in and stays inside it.
    let slots = NonNull::new(unsafe { base.add(HEADER_SIZE) } as *mut Slot)
        .expect("inside a non-null mapping");
    // SAFETY: the mapping holds a header and `capacity` slots (sized above; the file is
    // sealed against shrinking), page-aligned (so Slot's 64-byte alignment holds), and it
    // lives in the backing we hand over. Header and Slot consist of atomics only, valid
    // for any bit pattern, including the zeroes of a fresh memfd.
    Ok(unsafe {
        Ring::from_parts(
            header,
            slots,
            capacity,
            Backing::Mapped(Mapping { _map: map, fd }),
        )
    })
}

impl AsFd for Mapping {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_ring_attaches_and_shares_memory() {
        let a = Ring::create("kevent-test", 8).unwrap();
        let b = Ring::attach(a.memfd().unwrap()).unwrap();
        assert_eq!(b.capacity(), 8);
        a.header().stats.posted.store(42, Ordering::Relaxed);
        assert_eq!(b.header().stats.posted.load(Ordering::Relaxed), 42);
    }

    #[test]
    fn a_bad_capacity_is_refused() {
        assert_eq!(
            Ring::create("x", 3).unwrap_err(),
            AttachError::Capacity { found: 3 }
        );
        assert!(Ring::create("x", 1).is_err());
        assert!(Ring::heap(0).is_err());
    }
}

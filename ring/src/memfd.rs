//! The memory of a shared ring: a memfd, created (sized, then sealed) or attached
//! (validated), and mapped shared. This module knows the layout, never the [`Ring`]
//! built over it (as io-uring's `Mmap`): `ring.rs` depends on it, not the other way.
//!
//! [`Ring`]: crate::Ring
//!
//! Attaching is where untrusted input enters: a file descriptor from another process.
//! Before a single slot is touched we check, in order: that the fd is sealed against
//! shrinking (otherwise a truncate by anyone would turn our next access into `SIGBUS`),
//! the file's length, the magic, the ABI version, the header and slot sizes, the
//! capacity, and that the file holds every slot the capacity implies.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use rustix::fs::{self, MemfdFlags, SealFlags};

use crate::layout::{
    check_capacity, ring_bytes, Header, Slot, ABI_VERSION, HEADER_SIZE, MAGIC, SLOT_SIZE,
};
use crate::sync::Ordering;
use crate::AttachError;

/// A `MAP_SHARED` mapping of a ring's memfd: a header and `capacity` slots, unmapped on
/// drop.
pub(crate) struct Mapping {
    map: memmap2::MmapRaw,
    fd: OwnedFd,
    capacity: u32,
}

fn io_err(what: &str, e: impl Into<std::io::Error>) -> AttachError {
    let e = e.into();
    AttachError::Io(e.kind(), format!("{what}: {e}"))
}

impl Mapping {
    /// A new memfd named `name` for a ring of `capacity` slots, sized and sealed
    /// against shrinking and growing, and mapped shared. Its identity block is left
    /// zero for the ring to fill in.
    pub(crate) fn create(name: &str, capacity: u32) -> Result<Mapping, AttachError> {
        check_capacity(capacity)?;
        let fd = fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
            .map_err(|e| io_err("memfd_create", e))?;
        let len = ring_bytes(capacity) as u64;
        fs::ftruncate(&fd, len).map_err(|e| io_err("ftruncate", e))?;
        fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
            .map_err(|e| io_err("sealing the ring memfd", e))?;
        map(fd, capacity)
    }

    /// Maps an existing ring's memfd (the fd is duplicated; the caller keeps its own).
    /// Refuses anything that is not a sound ring of this ABI, with an error that says
    /// what is wrong.
    pub(crate) fn attach(fd: BorrowedFd<'_>) -> Result<Mapping, AttachError> {
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

    /// Slots in the mapping (validated: a power of two in range).
    pub(crate) fn capacity(&self) -> u32 {
        self.capacity
    }

    /// The header at the start of the mapping.
    pub(crate) fn header(&self) -> NonNull<Header> {
        NonNull::new(self.map.as_mut_ptr() as *mut Header).expect("mmap never returns null")
    }

    /// The first of `capacity` slots, right after the header.
    pub(crate) fn slots(&self) -> NonNull<Slot> {
        // SAFETY: the mapping is HEADER_SIZE + capacity * SLOT_SIZE bytes (sized by
        // `map`), so the slot array starts HEADER_SIZE bytes in and stays inside it.
        let first = unsafe { self.map.as_mut_ptr().add(HEADER_SIZE) };
        NonNull::new(first as *mut Slot).expect("inside a non-null mapping")
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

/// Maps `ring_bytes(capacity)` of `fd` shared. The file holds that many bytes (sized
/// or checked by the caller) and is sealed against shrinking, so every access inside the
/// mapping stays valid; the mapping is page-aligned, so Slot's 64-byte alignment holds.
fn map(fd: OwnedFd, capacity: u32) -> Result<Mapping, AttachError> {
    let map = memmap2::MmapOptions::new()
        .len(ring_bytes(capacity))
        .map_raw(&fd)
        .map_err(|e| io_err("mapping the ring", e))?;
    Ok(Mapping { map, fd, capacity })
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
    fn a_created_mapping_attaches_and_shares_memory() {
        let a = Mapping::create("kevent-test", 8).unwrap();
        // A fresh memfd is zero: no magic yet, so attaching it is refused.
        assert!(matches!(
            Mapping::attach(a.as_fd()).err(),
            Some(AttachError::BadMagic { found: 0 })
        ));
        // SAFETY: the header lies inside `a`'s mapping, which outlives the reference;
        // Header is made of atomics only.
        let ha = unsafe { a.header().as_ref() };
        ha.identity.magic.store(MAGIC, Ordering::Relaxed);
        ha.identity
            .abi_version
            .store(ABI_VERSION, Ordering::Relaxed);
        ha.identity
            .header_size
            .store(HEADER_SIZE as u32, Ordering::Relaxed);
        ha.identity
            .slot_size
            .store(SLOT_SIZE as u32, Ordering::Relaxed);
        ha.identity.capacity.store(8, Ordering::Relaxed);
        let b = Mapping::attach(a.as_fd()).unwrap();
        assert_eq!(b.capacity(), 8);
        ha.stats.posted.store(42, Ordering::Relaxed);
        // SAFETY: as above, for `b`.
        let hb = unsafe { b.header().as_ref() };
        assert_eq!(hb.stats.posted.load(Ordering::Relaxed), 42);
    }

    #[test]
    fn a_bad_capacity_is_refused() {
        assert_eq!(
            Mapping::create("x", 3).err(),
            Some(AttachError::Capacity { found: 3 })
        );
        assert!(Mapping::create("x", 1).is_err());
    }
}

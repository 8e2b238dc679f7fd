//! `EFAULT`: the kernel's `copy_from_user` / `copy_to_user` failed for a bad pointer; a
//! library that touched one would crash its caller instead. So every pointer a call
//! reads or writes is checked first: not NULL, aligned, and `len` bytes this process can
//! read and write — by `process_vm_readv` from this process into itself over the same
//! range, which copies the bytes onto themselves and fails with `EFAULT` exactly where a
//! plain access would fault. It costs one system call (~1.7 µs on the 2-core VM of the
//! README's tables) per checked pointer: `kevent_ctl`, `kevent_get_events`, and
//! `kevent_init`/`kevent_connect` once per ring; `kevent_wait` and `kevent_commit` take
//! no pointer. Where a seccomp filter forbids the call (`EPERM`, `ENOSYS`) the check is
//! skipped, and a bad pointer faults as in any library.

use std::io;

use crate::boundary::err;

/// Checks that `len` bytes at `addr`, aligned to `align`, can be read and written by this
/// process. `len == 0` checks nothing but NULL and alignment.
///
/// The bytes are copied onto themselves: a thread writing them at the same moment could
/// see its write undone. The memory checked is what the caller hands to this call alone,
/// which is what the kernel's copies assumed as well.
pub(crate) fn check(addr: *const u8, len: usize, align: usize) -> io::Result<()> {
    if addr.is_null()
        || !(addr as usize).is_multiple_of(align)
        || (addr as usize).checked_add(len).is_none()
    {
        return Err(err(libc::EFAULT));
    }
    if len == 0 {
        return Ok(());
    }
    let iov = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len,
    };
    let pid = std::process::id() as libc::pid_t;
    // SAFETY: both iovecs describe the same range of this process; the kernel checks
    // every page of it and returns EFAULT (or a short count) where one is not readable
    // and writable; no memory outside the range is touched.
    let n = unsafe { libc::process_vm_readv(pid, &iov, 1, &iov, 1, 0) };
    if n == len as isize {
        return Ok(());
    }
    if n < 0 {
        let e = io::Error::last_os_error();
        if matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOSYS)) {
            return Ok(()); // cannot check here: see the module docs
        }
    }
    Err(err(libc::EFAULT))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn efault(r: io::Result<()>) -> bool {
        r.is_err_and(|e| e.raw_os_error() == Some(libc::EFAULT))
    }

    #[test]
    fn writable_memory_passes_and_keeps_its_bytes() {
        let mut buf = [7u64; 64];
        check(buf.as_mut_ptr().cast(), 512, 8).unwrap();
        assert!(buf.iter().all(|&b| b == 7));
    }

    #[test]
    fn null_misaligned_unmapped_and_read_only_memory_are_efault() {
        let buf = [0u64; 4];
        assert!(efault(check(std::ptr::null(), 8, 8)));
        assert!(efault(check(
            buf.as_ptr().cast::<u8>().wrapping_add(1),
            8,
            8
        )));
        // A page mapped without access, and one mapped read-only.
        for prot in [libc::PROT_NONE, libc::PROT_READ] {
            // SAFETY: a fresh anonymous private mapping of one page, unmapped below.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    prot,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED);
            assert!(efault(check(p.cast(), 40, 8)), "prot {prot}");
            // SAFETY: the mapping made above, used by nothing else.
            unsafe { libc::munmap(p, 4096) };
        }
    }
}

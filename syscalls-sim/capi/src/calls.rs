//! The C calls, under their 2006 names, as `include/kevent.h` declares them. Each one
//! checks its pointers (`usermem.rs`), runs inside `boundary::call` (-1
//! and `errno`; no unwinding), and leaves the work to `kevent_syscalls`.

use std::ffi::CStr;
use std::io;
use std::os::raw::{c_char, c_int, c_uint};
use std::os::unix::ffi::OsStrExt;
use std::ptr::NonNull;

use kevent_ring::Ukevent;
use kevent_syscalls::{Instance, KEVENT_FLAGS_ABSTIME, KEVENT_MAX_EVENTS};

use crate::boundary::{call, err};
use crate::handles;
use crate::timeout::{deadline, from_timespec};
use crate::usermem;
use crate::view::{ring_bytes, KeventRing, View};

/// Checks the `(ring, num)` pair of `kevent_init` / `kevent_connect` and makes the view:
/// `(NULL, 0)` is no ring; a ring without a size, a size without a ring, or one entry is
/// `EINVAL`, as in 2006; more than the largest shared ring is `EINVAL`.
fn view_for(ring: *mut KeventRing, num: c_uint) -> io::Result<Option<View>> {
    match (NonNull::new(ring), num) {
        (None, 0) => Ok(None),
        (Some(_), 0) | (None, _) | (_, 1) => Err(err(libc::EINVAL)),
        (Some(_), n) if n > kevent_ring::layout::MAX_CAPACITY => Err(err(libc::EINVAL)),
        (Some(ring), n) => {
            usermem::check(
                ring.as_ptr().cast(),
                ring_bytes(n),
                std::mem::align_of::<KeventRing>(),
            )?;
            // SAFETY: checked above: aligned, and readable and writable for the ring's
            // bytes; the caller keeps it until kevent_close (kevent.h says so, as the
            // 2006 kernel required of the ring it wrote into).
            Ok(Some(unsafe { View::new(ring, n) }))
        }
    }
}

/// The number of entries as a C `int` (a commit of more than `INT_MAX` entries is
/// reported as `INT_MAX`; rings hold at most 2^24).
fn count(n: u64) -> c_int {
    c_int::try_from(n).unwrap_or(c_int::MAX)
}

/// `kevent_init(ring, num, flags)`: see `kevent.h`.
///
/// # Safety
/// `ring` is NULL, or memory the caller keeps valid and unmoved until `kevent_close`
/// (what is not readable and writable now is refused with `EFAULT`).
#[no_mangle]
pub unsafe extern "C" fn kevent_init(ring: *mut KeventRing, num: c_uint, flags: c_uint) -> c_int {
    call(|| {
        if flags != 0 {
            return Err(err(libc::EINVAL));
        }
        let view = view_for(ring, num)?;
        let fd = kevent_syscalls::kevent_init(num, flags)?;
        let queue = kevent_syscalls::instance(fd)?;
        Ok(handles::insert(queue, view))
    })
}

/// `kevent_ctl(fd, cmd, num, arg)`: see `kevent.h`.
///
/// # Safety
/// `arg` points to `num` entries no other thread touches during the call (a pointer this
/// process cannot read and write is refused with `EFAULT`).
#[no_mangle]
pub unsafe extern "C" fn kevent_ctl(
    fd: c_int,
    cmd: c_uint,
    num: c_uint,
    arg: *mut Ukevent,
) -> c_int {
    call(|| {
        let handle = handles::get(fd)?;
        if num as usize > KEVENT_MAX_EVENTS {
            return Err(err(libc::EINVAL));
        }
        let events: &mut [Ukevent] = if num == 0 {
            &mut []
        } else {
            let bytes = num as usize * std::mem::size_of::<Ukevent>();
            usermem::check(arg.cast(), bytes, std::mem::align_of::<Ukevent>())?;
            // SAFETY: checked: aligned, readable and writable for `num` entries; any bit
            // pattern is a valid Ukevent (integers only); the caller lends them for the
            // call alone.
            unsafe { std::slice::from_raw_parts_mut(arg, num as usize) }
        };
        Ok(count(handle.queue.ctl(cmd, events)? as u64))
    })
}

/// `kevent_get_events(fd, min, max, timeout, buf, flags)`: see `kevent.h`.
///
/// # Safety
/// `buf` points to `max` entries no other thread touches during the call (a pointer this
/// process cannot write is refused with `EFAULT`).
#[no_mangle]
pub unsafe extern "C" fn kevent_get_events(
    fd: c_int,
    min: c_uint,
    max: c_uint,
    timeout: libc::timespec,
    buf: *mut Ukevent,
    flags: c_uint,
) -> c_int {
    call(|| {
        let handle = handles::get(fd)?;
        let timeout = from_timespec(timeout, flags)?;
        if max == 0 || min > max {
            return Err(err(libc::EINVAL));
        }
        let bytes = max as usize * std::mem::size_of::<Ukevent>();
        usermem::check(buf.cast(), bytes, std::mem::align_of::<Ukevent>())?;
        // SAFETY: checked: aligned and writable for `max` entries; integers only; lent
        // for the call alone.
        let buf = unsafe { std::slice::from_raw_parts_mut(buf, max as usize) };
        let n = handle.queue.get_events(min, max, timeout, buf, flags)?;
        Ok(count(n as u64))
    })
}

/// The errno of a wait that ended without entries for a reason other than its timeout
/// or a wake-up (what `Instance::wait` answers for the same outcomes).
fn wait_error(outcome: kevent_ring::WaitOutcome) -> Option<io::Error> {
    use kevent_ring::WaitOutcome;
    match outcome {
        WaitOutcome::Closed => Some(err(libc::EPIPE)),
        WaitOutcome::Broken => Some(err(libc::EIO)),
        WaitOutcome::Interrupted => Some(err(libc::EINTR)),
        _ => None,
    }
}

/// `kevent_wait(fd, num, old_uidx, timeout, flags)`: see `kevent.h`.
///
/// Claims in the shared ring for this process (`Instance::next_batch`, as the Rust calls
/// do) and copies what it claimed into the caller's ring (`View::fill`).
#[no_mangle]
pub extern "C" fn kevent_wait(
    fd: c_int,
    num: c_uint,
    old_uidx: c_uint,
    timeout: libc::timespec,
    flags: c_uint,
) -> c_int {
    call(|| {
        let handle = handles::get(fd)?;
        let view = handle.view.as_ref().ok_or_else(|| err(libc::EINVAL))?;
        let timeout = from_timespec(timeout, flags)?;
        if num == 0 {
            return Err(err(libc::EINVAL));
        }
        let room = view.reserve(old_uidx, num);
        if room == 0 {
            return Ok(0);
        }
        let queue: &Instance = &handle.queue;
        let spec = queue.wait_spec(None, deadline(timeout, flags & KEVENT_FLAGS_ABSTIME));
        let (claim, outcome) = match queue.next_batch(room, &spec) {
            Ok(got) => got,
            Err(e) => {
                view.unreserve(room);
                return Err(e);
            }
        };
        let copied = view.fill(queue, room, claim);
        if copied == 0 {
            if let Some(e) = wait_error(outcome) {
                return Err(e);
            }
        }
        Ok(count(u64::from(copied)))
    })
}

/// `kevent_commit(fd, new_uidx, over)`: see `kevent.h`.
#[no_mangle]
pub extern "C" fn kevent_commit(fd: c_int, new_uidx: c_uint, over: c_uint) -> c_int {
    call(|| {
        let handle = handles::get(fd)?;
        let view = handle.view.as_ref().ok_or_else(|| err(libc::EINVAL))?;
        Ok(count(view.commit(&handle.queue, new_uidx, over)?))
    })
}

/// `kevent_close(fd)` (ext): see `kevent.h`.
#[no_mangle]
pub extern "C" fn kevent_close(fd: c_int) -> c_int {
    call(|| {
        handles::remove(fd)?;
        kevent_syscalls::kevent_close(fd)?;
        Ok(0)
    })
}

/// The path a C string names, or `EFAULT` for NULL.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string valid for the call.
unsafe fn path_of<'a>(path: *const c_char) -> io::Result<&'a std::path::Path> {
    if path.is_null() {
        return Err(err(libc::EFAULT));
    }
    // SAFETY: non-NULL, and NUL-terminated and valid for the call (the caller's promise).
    let bytes = unsafe { CStr::from_ptr(path) }.to_bytes();
    Ok(std::path::Path::new(std::ffi::OsStr::from_bytes(bytes)))
}

/// `kevent_serve(fd, path)` (ext): see `kevent.h`.
///
/// # Safety
/// `path` is NULL (`EFAULT`) or a NUL-terminated string valid for the call.
#[no_mangle]
pub unsafe extern "C" fn kevent_serve(fd: c_int, path: *const c_char) -> c_int {
    call(|| {
        let handle = handles::get(fd)?;
        // SAFETY: the caller's promise, passed on.
        let path = unsafe { path_of(path) }?;
        handle.queue.listen(path)?;
        Ok(0)
    })
}

/// `kevent_connect(path, ring, num)` (ext): see `kevent.h`.
///
/// # Safety
/// `path` is NULL (`EFAULT`) or a NUL-terminated string valid for the call; `ring` as
/// for [`kevent_init`].
#[no_mangle]
pub unsafe extern "C" fn kevent_connect(
    path: *const c_char,
    ring: *mut KeventRing,
    num: c_uint,
) -> c_int {
    call(|| {
        // SAFETY: the caller's promise, passed on.
        let path = unsafe { path_of(path) }?;
        let view = view_for(ring, num)?;
        let queue = Instance::connect(path)?;
        let fd = kevent_syscalls::register(queue.clone());
        debug_assert_eq!(fd, queue.handle());
        Ok(handles::insert(queue, view))
    })
}

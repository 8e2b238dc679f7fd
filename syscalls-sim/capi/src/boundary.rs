//! The boundary between C and Rust: every call returns -1 with `errno` set on failure,
//! and nothing unwinds into the caller — a panic inside the library (a bug) is caught
//! here and becomes `EIO`, the default panic hook having printed its message to stderr.

use std::io;
use std::os::raw::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The errno a C caller sees for `e`: the kernel's (or the simulated kernel's) own
/// number when it has one, else the closest one for its kind. `InvalidData` — what the
/// library says of a corrupt shared ring — and anything unforeseen are `EIO`.
pub(crate) fn errno_of(e: &io::Error) -> c_int {
    if let Some(n) = e.raw_os_error() {
        return n;
    }
    match e.kind() {
        io::ErrorKind::TimedOut => libc::ETIMEDOUT,
        io::ErrorKind::BrokenPipe => libc::EPIPE,
        io::ErrorKind::ConnectionRefused => libc::ECONNREFUSED,
        io::ErrorKind::ConnectionReset => libc::ECONNRESET,
        io::ErrorKind::PermissionDenied => libc::EPERM,
        io::ErrorKind::Unsupported => libc::EOPNOTSUPP,
        io::ErrorKind::InvalidInput => libc::EINVAL,
        io::ErrorKind::NotFound => libc::ENOENT,
        io::ErrorKind::Interrupted => libc::EINTR,
        io::ErrorKind::AddrInUse => libc::EADDRINUSE,
        _ => libc::EIO,
    }
}

/// An `io::Error` carrying `errno`.
pub(crate) fn err(errno: c_int) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

fn set_errno(n: c_int) {
    // SAFETY: `__errno_location` returns this thread's errno, valid for the thread's life.
    unsafe { *libc::__errno_location() = n };
}

/// Runs one C call: its value, or -1 with `errno` for an error or a panic.
pub(crate) fn call(f: impl FnOnce() -> io::Result<c_int>) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => {
            set_errno(errno_of(&e));
            -1
        }
        Err(payload) => {
            // Dropping the payload runs its destructor, which could itself panic, outside
            // any catch: leak it instead (a bug's cost, bounded by the number of bugs hit).
            std::mem::forget(payload);
            set_errno(libc::EIO);
            -1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errno() -> c_int {
        // SAFETY: this thread's errno, as in `set_errno`.
        unsafe { *libc::__errno_location() }
    }

    #[test]
    fn a_panic_inside_a_call_is_minus_one_and_eio_not_an_unwind() {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {})); // keep the test's output quiet
        let r = call(|| panic!("a bug"));
        std::panic::set_hook(prev);
        assert_eq!((r, errno()), (-1, libc::EIO));
    }

    #[test]
    fn an_error_is_minus_one_and_its_errno() {
        assert_eq!(call(|| Err(err(libc::EOVERFLOW))), -1);
        assert_eq!(errno(), libc::EOVERFLOW);
        assert_eq!(call(|| Ok(7)), 7);
    }

    #[test]
    fn errors_without_an_errno_get_the_closest_one() {
        let timed_out = io::Error::new(io::ErrorKind::TimedOut, "gate");
        assert_eq!(errno_of(&timed_out), libc::ETIMEDOUT);
        let broken = io::Error::new(io::ErrorKind::InvalidData, "kevent ring is broken");
        assert_eq!(errno_of(&broken), libc::EIO);
        assert_eq!(errno_of(&io::Error::other("?")), libc::EIO);
    }
}

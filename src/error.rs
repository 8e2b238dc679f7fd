//! [`Error`]: what went wrong, in words, with the kernel's errno kept.
//!
//! `std::io::Error` can carry an errno *or* a message, not both: an error built with
//! [`io::Error::new`] answers `raw_os_error() == None`. A kevent error should say what was
//! wrong ("kevent add: fd 7 (pipe) is already registered (EEXIST)") and still let a
//! program match on the errno, so the API returns this small type. It converts into
//! `io::Error` with `?` (keeping the message and the [`io::ErrorKind`]), so code that
//! returns `io::Result` uses the API unchanged.

use std::fmt;
use std::io;

/// A kevent error: a message that says what was wrong, the errno the simulated kernel
/// answered (if it was one) and the [`io::ErrorKind`].
///
/// ```
/// # use kevent::{Queue, Source, Token};
/// let queue = Queue::builder().capacity(8).build()?;
/// let err = queue.remove(&Source::user(1)).unwrap_err();
/// assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
/// assert_eq!(err.to_string(), "kevent remove: user event 1 is not registered (ENOENT)");
/// # Ok::<(), kevent::Error>(())
/// ```
pub struct Error {
    message: String,
    errno: Option<i32>,
    kind: io::ErrorKind,
    cause: Option<io::Error>,
}

/// `Result<T, kevent::Error>`.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error for `errno` with a message that already says what was wrong; the errno's
    /// name is appended in parentheses.
    pub(crate) fn errno(errno: i32, message: impl Into<String>) -> Error {
        let mut message = message.into();
        message.push_str(&format!(" ({})", errno_name(errno)));
        Error {
            message,
            errno: Some(errno),
            kind: io::Error::from_raw_os_error(errno).kind(),
            cause: None,
        }
    }

    /// Wraps an error from a lower layer with `context` ("kevent wait").
    pub(crate) fn wrap(context: &str, e: io::Error) -> Error {
        let (errno, detail) = match e.raw_os_error() {
            Some(n) => (n, format!("{} ({})", plain_description(n), errno_name(n))),
            None => {
                let n = errno_of_kind(e.kind());
                (n, format!("{e} ({})", errno_name(n)))
            }
        };
        Error {
            message: format!("{context}: {detail}"),
            errno: Some(errno),
            kind: e.kind(),
            cause: Some(e),
        }
    }

    /// An error for a state that has an errno by analogy only (a closed queue: `EPIPE`;
    /// a corrupt ring: `EIO`), keeping the kind callers match on.
    pub(crate) fn state(kind: io::ErrorKind, message: impl Into<String>) -> Error {
        let errno = errno_of_kind(kind);
        Error {
            message: format!("{} ({})", message.into(), errno_name(errno)),
            errno: Some(errno),
            kind,
            cause: None,
        }
    }

    /// The errno the simulated kernel answered (`EEXIST`, `ENOENT`, `EBADF`, `EINVAL`,
    /// `ENOSYS`, `EPERM`, `EINTR`…). Errors that are states rather than a kernel's answer
    /// carry the errno closest to them: `EPIPE` for a closed queue, `EIO` for a corrupt
    /// ring or a malformed reply, `EAGAIN` for a full consumer table. Always `Some` for
    /// errors this library makes; `None` only for an [`Error`] made from an `io::Error`
    /// without one.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.errno
    }

    /// The error's kind, as `std::io::Error` would classify it.
    pub fn kind(&self) -> io::ErrorKind {
        self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("message", &self.message)
            .field("errno", &self.errno)
            .field("kind", &self.kind)
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<Error> for io::Error {
    /// Keeps the message and the kind. The errno is then only reachable through
    /// `get_ref()` and a downcast to [`Error`] (`io::Error` cannot hold both).
    fn from(e: Error) -> io::Error {
        io::Error::new(e.kind, e)
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error {
            message: e.to_string(),
            errno: Some(e.raw_os_error().unwrap_or_else(|| errno_of_kind(e.kind()))),
            kind: e.kind(),
            cause: Some(e),
        }
    }
}

/// The C name of an errno (`"EEXIST"`), or `"errno N"` for the ones kevent never answers.
/// The errno closest to an error of `kind` that came without one.
fn errno_of_kind(kind: io::ErrorKind) -> i32 {
    use io::ErrorKind as K;
    match kind {
        K::NotFound => libc::ENOENT,
        K::PermissionDenied => libc::EPERM,
        K::ConnectionRefused => libc::ECONNREFUSED,
        K::BrokenPipe => libc::EPIPE,
        K::AlreadyExists => libc::EEXIST,
        K::WouldBlock => libc::EAGAIN,
        K::InvalidInput => libc::EINVAL,
        K::TimedOut => libc::ETIMEDOUT,
        K::Interrupted => libc::EINTR,
        K::Unsupported => libc::EOPNOTSUPP,
        K::OutOfMemory => libc::ENOMEM,
        _ => libc::EIO,
    }
}

pub(crate) fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EEXIST => "EEXIST",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENOSYS => "ENOSYS",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EPIPE => "EPIPE",
        libc::EIO => "EIO",
        libc::EPROTO => "EPROTO",
        _ => return format!("errno {errno}"),
    };
    name.to_string()
}

/// The C library's description of an errno, without Rust's " (os error N)" suffix.
fn plain_description(errno: i32) -> String {
    let s = io::Error::from_raw_os_error(errno).to_string();
    match s.rfind(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_errno_error_keeps_the_errno_and_names_it_in_the_message() {
        let e = Error::errno(
            libc::EEXIST,
            "kevent add: fd 7 (pipe) is already registered",
        );
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(
            e.to_string(),
            "kevent add: fd 7 (pipe) is already registered (EEXIST)"
        );
    }

    #[test]
    fn converting_to_io_error_keeps_message_and_kind() {
        let e: io::Error = Error::errno(
            libc::ENOENT,
            "kevent remove: user event 3 is not registered",
        )
        .into();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e
            .to_string()
            .contains("user event 3 is not registered (ENOENT)"));
        let inner = e.get_ref().and_then(|i| i.downcast_ref::<Error>()).unwrap();
        assert_eq!(inner.raw_os_error(), Some(libc::ENOENT));
    }

    #[test]
    fn wrapping_an_os_error_names_the_errno_and_the_context() {
        let e = Error::wrap("kevent wait", io::Error::from_raw_os_error(libc::EINTR));
        assert_eq!(e.raw_os_error(), Some(libc::EINTR));
        assert!(e.to_string().starts_with("kevent wait: "), "{e}");
        assert!(e.to_string().ends_with("(EINTR)"), "{e}");
    }
}

//! Errors of the ring layer.

use std::fmt;
use std::io;

/// Why a memfd (or a buffer) is not a ring this library can use. Returned by
/// [`crate::Ring::attach`]; the message says exactly what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachError {
    /// The file is smaller than a ring header.
    TooSmall {
        /// The file's length.
        len: u64,
    },
    /// The first eight bytes are not `KEVTRING`.
    BadMagic {
        /// What was found instead.
        found: u64,
    },
    /// Another ABI version.
    Version {
        /// The version in the header.
        found: u32,
    },
    /// Header or slot size differs from this ABI's.
    Geometry {
        /// Which field.
        field: &'static str,
        /// The value found.
        found: u32,
        /// The value this ABI uses.
        expected: u32,
    },
    /// Capacity is not a power of two within bounds.
    Capacity {
        /// The capacity found.
        found: u32,
    },
    /// The file is shorter than header + capacity slots.
    Truncated {
        /// The file's length.
        len: u64,
        /// The length the header implies.
        needed: u64,
    },
    /// The memfd is not sealed against shrinking: another process could truncate it
    /// under us, and touching a truncated mapping kills the process with `SIGBUS`.
    NotSealed,
    /// The ring was marked broken by a participant that found it corrupt.
    Broken(crate::Broken),
    /// A system call failed.
    Io(io::ErrorKind, String),
}

impl fmt::Display for AttachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttachError::TooSmall { len } => write!(
                f,
                "not a kevent ring: {len} bytes is smaller than a ring header ({} bytes)",
                crate::layout::HEADER_SIZE
            ),
            AttachError::BadMagic { found } => write!(
                f,
                "not a kevent ring: bad magic {:?} (expected \"KEVTRING\")",
                String::from_utf8_lossy(&found.to_le_bytes())
            ),
            AttachError::Version { found } => write!(
                f,
                "ring ABI v{found}, this library speaks v{}",
                crate::layout::ABI_VERSION
            ),
            AttachError::Geometry {
                field,
                found,
                expected,
            } => write!(
                f,
                "corrupt kevent ring: {field} is {found}, this ABI uses {expected}"
            ),
            AttachError::Capacity { found } => write!(
                f,
                "corrupt kevent ring: capacity {found} is not a power of two in {}..={}",
                crate::layout::MIN_CAPACITY,
                crate::layout::MAX_CAPACITY
            ),
            AttachError::Truncated { len, needed } => write!(
                f,
                "truncated kevent ring: file is {len} bytes, its header needs {needed}"
            ),
            AttachError::NotSealed => write!(
                f,
                "refusing an unsealed memfd: without F_SEAL_SHRINK another process could \
                 truncate the ring under us"
            ),
            AttachError::Broken(why) => write!(f, "kevent ring is marked broken: {why}"),
            AttachError::Io(_, msg) => write!(f, "{msg}"),
        }
    }
}

impl std::error::Error for AttachError {}

impl From<AttachError> for io::Error {
    fn from(e: AttachError) -> io::Error {
        let kind = match &e {
            AttachError::Io(kind, _) => *kind,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e.to_string())
    }
}

/// Why a ring was marked broken (the non-zero codes of the header's `broken` word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Broken {
    /// The user position moved backwards or past the producer position.
    UserIndex = 1,
    /// The claim position is outside `uidx..=kidx`.
    ClaimIndex = 2,
    /// A slot the producer was about to fill was not free for its lap.
    SlotState = 3,
    /// The identity block changed after creation.
    Identity = 4,
    /// A slot in a run a consumer had just reserved was in a state no step of the
    /// protocol leaves there (an older lap, another consumer's claim, garbage).
    ClaimState = 5,
    /// A code this library does not know (written by someone else).
    Unknown = 255,
}

impl Broken {
    /// Decodes the header's `broken` word; `None` for 0 (healthy).
    #[inline]
    pub fn from_code(code: u32) -> Option<Broken> {
        match code {
            0 => None,
            1 => Some(Broken::UserIndex),
            2 => Some(Broken::ClaimIndex),
            3 => Some(Broken::SlotState),
            4 => Some(Broken::Identity),
            5 => Some(Broken::ClaimState),
            _ => Some(Broken::Unknown),
        }
    }
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Broken::UserIndex => "the user index (uidx) left the range the producer allows",
            Broken::ClaimIndex => "the claim index (cidx) left the range uidx..=kidx",
            Broken::SlotState => "a slot was not free when the producer came to fill it",
            Broken::Identity => "the header's identity block was overwritten",
            Broken::ClaimState => {
                "a slot a consumer had just reserved was in a state no protocol step leaves"
            }
            Broken::Unknown => "an unknown reason code was written into the header",
        })
    }
}

impl From<Broken> for io::Error {
    fn from(b: Broken) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("kevent ring is broken: {b}"),
        )
    }
}

//! # kevent-syscalls: the simulated kernel
//!
//! The five calls of Linux kevent (2006) — [`kevent_init`], [`kevent_ctl`],
//! [`kevent_get_events`], [`kevent_wait`], [`kevent_commit`] — over an epoll-driven
//! producer thread that publishes ready events into a shared-memory ring
//! ([`kevent_ring`]).
//!
//! ```
//! use kevent_syscalls::*;
//! use std::os::fd::AsRawFd;
//!
//! let q = kevent_init(64, 0)?;
//! let (r, w) = std::io::pipe()?;
//! let mut ev = [Ukevent {
//!     id: r.as_raw_fd() as u64,
//!     type_: KEVENT_PIPE,
//!     event: KEVENT_PIPE_READ,
//!     user: 42,
//!     ..Default::default()
//! }];
//! assert_eq!(kevent_ctl(q, KEVENT_CTL_ADD, &mut ev)?, 0); // registered, not ready yet
//!
//! use std::io::Write;
//! (&w).write_all(b"x")?;
//! let mut buf = [Ukevent::default(); 8];
//! let n = kevent_get_events(q, 1, 8, Some(1_000_000_000), &mut buf, 0)?;
//! assert_eq!((n, buf[0].user, buf[0].event), (1, 42, KEVENT_PIPE_READ));
//! kevent_close(q)?;
//! # Ok::<(), std::io::Error>(())
//! ```

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, missing_docs)]

pub mod abi;
mod calls;
mod epoll;
mod gate;
mod handles;
mod harvesters;
mod instance;
mod kernel;
mod outbox;
mod peer;
mod pid;
mod pidfd;
mod reaper;
mod registration;
mod source;
mod thread;

pub use abi::*;
pub use calls::{
    instance, kevent_close, kevent_commit, kevent_ctl, kevent_get_events, kevent_init, kevent_wait,
    register,
};
pub use handles::{HandleTable, PerProcess};
pub use instance::{Instance, DEFAULT_SPIN};
pub use kevent_ring::{Claim, Ring};
pub use peer::PeerLimits;
pub use pid::current as current_pid;
pub use reaper::{DEFAULT_LEASE, DEFAULT_REAP_INTERVAL, MIN_REAP_INTERVAL};

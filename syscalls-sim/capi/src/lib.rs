//! # libkevent: the 2006 kevent calls for C
//!
//! This crate is built into `libkevent.so` and `libkevent.a` (`bash
//! syscalls-sim/capi/build.sh`, which also installs `include/kevent.h` and `kevent.pc`):
//! `kevent_init`, `kevent_ctl`, `kevent_get_events`, `kevent_wait` and `kevent_commit`
//! under their original names and shapes, plus `kevent_close`, `kevent_serve` and
//! `kevent_connect`, over the simulated kernel of `kevent-syscalls`. The README's
//! "kevent from C" says how to use it and lists every difference from 2006.
//!
//! | file | holds |
//! |---|---|
//! | `calls.rs` | the `extern "C"` calls |
//! | `boundary.rs` | -1 and `errno`; a panic becomes `EIO`, never an unwind into C |
//! | `usermem.rs` | `EFAULT`: pointers checked before use |
//! | `view.rs` | `struct kevent_ring`, the caller's ring, and its map onto the shared ring |
//! | `handles.rs` | handle → queue and view, per process, across `fork` (a `kevent_syscalls::HandleTable`) |
//! | `timeout.rs` | `struct timespec` timeouts |
//! | `abi.rs` | `kevent_abi()`: the constants and layouts the header is checked against |
//!
//! It is not a dependency of the Rust crates: a Rust program uses `kevent` (or
//! `kevent-syscalls`) directly.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, missing_docs)]

pub mod abi;
mod boundary;
pub mod calls;
mod handles;
mod timeout;
mod usermem;
pub mod view;

//! # kevent-ring: the shared-memory ring of a user-space kevent
//!
//! A ring of 64-byte slots in a memfd, mapped `MAP_SHARED` by a producer (the simulated
//! kernel) and by consumers in any thread or process. It answers the reviewers of the
//! original kevent ring (see `KEVENT.md`):
//!
//! * **per-entry ownership** — every slot carries a state word `lap | owner | status`
//!   (EMPTY → READY → CLAIMED(owner) → DONE → EMPTY), changed only by CAS;
//! * **no user-space lock with many consumers** — claims reserve a run of positions with
//!   one CAS on `cidx`, then own each slot with a CAS;
//! * **no overwrite, explicit flow control** — the producer only fills a slot after
//!   `uidx` (moved over the contiguous prefix of DONE slots) has freed it;
//! * **no stale commit taken for a new wrap** — positions are free-running 64-bit
//!   counters; the kevent `(index, over)` pair is a view of them ([`Ring::kevent_view`]);
//! * **no lost wake-ups** — waiters and wakers meet in a SeqCst handshake over a shared
//!   futex, and no system call is made when nobody sleeps ([`wait`](crate::Ring::wait)).
//!
//! Every race here is model-checked with loom (`ring/tests/loom.rs`, `loom_sleep.rs`,
//! `loom_loop.rs` and `loom_lock.rs`, run with `RUSTFLAGS="--cfg loom"`): the models run
//! on a heap-backed ring through the one
//! internal `sync` shim, because loom's atomics cannot live in mmap'd memory.
//!
//! ```
//! use std::sync::Arc;
//! use kevent_ring::{Producer, Ring, Ukevent};
//!
//! let ring = Arc::new(Ring::create("example", 8)?);
//! let mut producer = Producer::new(ring.clone()).unwrap();
//! producer.push(&Ukevent { id: 7, ..Default::default() }, false).unwrap();
//! producer.flush();
//!
//! let me = ring.register_consumer().expect("a free consumer record");
//! let claim = ring.claim(me, 16);
//! assert_eq!(claim.owned, 1);
//! assert_eq!(ring.take(me, claim.start).unwrap().id, 7);
//! ring.complete_range(me, claim.start..claim.end);
//! assert_eq!(ring.uidx(), 1);
//! # Ok::<(), kevent_ring::AttachError>(())
//! ```

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, missing_docs)]

mod consumer;
mod consumers;
mod error;
pub mod layout;
#[cfg(not(loom))]
mod memfd;
mod producer;
mod ring;
mod state;
mod sync;
mod ukevent;
mod wake;

pub use consumer::{Claim, ConsumerId};
#[cfg(not(loom))]
pub use consumers::Liveness;
pub use consumers::RecordState;
pub use error::{AttachError, Broken};
pub use layout::check_capacity;
pub use producer::{Producer, PushError};
pub use ring::Ring;
pub use state::{SlotState, Status, RECLAIMED};
pub use ukevent::Ukevent;
pub use wake::notify::NotifyMe;
#[cfg(not(loom))]
pub use wake::owner::OwnerLock;
pub use wake::ticket::TicketLock;
pub use wake::time::Deadline;
#[cfg(not(loom))]
pub use wake::time::{deadline_passed, monotonic_now, realtime_now, timespec};
pub use wake::wait::{WaitOutcome, WaitSpec};
#[cfg(not(loom))]
pub use wake::wakefd::{Reset, WakeFd};

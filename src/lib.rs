//! # kevent: a shared-memory event ring, after Linux kevent (2006)
//!
//! A [`Queue`] watches event sources — sockets, pipes, any pollable fd, timers, signals,
//! directories, user events — and delivers their readiness as [`Event`]s through a ring
//! in shared memory, to consumers in any thread, usually without a system call.
//!
//! ```
//! use std::io::{Read, Write};
//! use std::time::Duration;
//! use kevent::{Interest, Queue, Source, Token, Trigger};
//!
//! let queue = Queue::builder().capacity(64).build()?;
//! let (mut reader, mut writer) = std::io::pipe()?;
//!
//! // Register the read end, level-triggered, with cookie 7. Every event comes through
//! // `wait`, one that is ready at once included.
//! queue.add(&Source::pipe(&reader, Interest::READABLE), Token(7), Trigger::Level)?;
//!
//! writer.write_all(b"hello")?;
//!
//! // Wait for up to 16 events; the batch owns them until it is committed.
//! let batch = queue.wait(16, Some(Duration::from_secs(5)))?;
//! assert_eq!(batch.len(), 1);
//! for event in &batch {
//!     assert_eq!(event.token(), Token(7));
//!     assert!(event.is_readable());
//!     let mut buf = [0u8; 16];
//!     let n = reader.read(&mut buf)?;
//!     assert_eq!(&buf[..n], b"hello");
//! }
//! batch.commit(); // dropping the batch would commit it too
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! ## The model
//!
//! **A producer and a ring.** Creating a queue (`kevent_init`) starts a producer thread —
//! the simulated kernel of [`kevent_syscalls`] — that watches the registered sources with
//! epoll and publishes each ready kevent as a 40-byte entry into a ring of slots in a
//! memfd ([`kevent_ring`]). Consumers take entries straight from that shared memory:
//! [`Queue::wait`] claims a run of entries with compare-and-swap (no lock, however many
//! threads wait) and sleeps on a shared futex only when there is nothing to take.
//!
//! **Claim, then commit.** Claimed entries belong to the consumer until it commits them
//! (`kevent_commit`). The [`Batch`] that `wait` returns is that claim: iterate over it,
//! then drop it or call [`Batch::commit`]. The commit is the acknowledgement: it frees
//! the slots and tells the producer the events were handled, which is when a
//! level-triggered source that is still ready gets reported again. Each kevent has at most
//! one entry outstanding — published and not yet committed; readiness or arrivals while it
//! is out make no new entry, they are counted into the next one, published once the first
//! is committed — so a busy source cannot flood the ring; when the ring is full, ready kevents wait in the producer's backlog. Nothing is
//! dropped: [`Stats::lost`] stays 0.
//!
//! **Control.** [`Queue::add`], [`modify`](Queue::modify), [`remove`](Queue::remove) and
//! [`ready`](Queue::ready) are the four `kevent_ctl` commands. A kevent is named by its
//! [`Source`] (kind and id — the fd number, the timer's time, the signal number), carries
//! a [`Token`] back in every event, and is reported according to its [`Trigger`] mode
//! (level, edge, oneshot) and [`Flags`]. [`Queue::add`] queues a source that is ready at
//! once like any other event; [`Queue::add_ready_now`] is the original's ADD, which
//! *returns* it instead ([`Added`] makes that impossible to overlook).
//!
//! **Errors** are [`Error`]: a message that says what was wrong and the errno the kernel
//! answered ([`Error::raw_os_error`]); `?` turns it into a `std::io::Error`.
//!
//! **Other processes.** The ring is shared memory, so consumers need not be threads of the
//! creating process: [`Queue::listen`] serves the queue on a Unix socket, and
//! [`Queue::connect`] in another process maps the same ring and becomes a consumer of its
//! own (control calls travel over the socket). A consumer that dies holding a batch does
//! not strand it: its events are delivered again, flagged [`Event::is_redelivered`].
//!
//! ## Other event loops
//!
//! [`Queue::notify_fd`] arms the queue's fd to become readable while events wait, so a
//! queue can sit inside epoll, mio or tokio: on readiness, take events with zero-timeout
//! [`Queue::wait`]s until one returns an empty batch. Two optional features (off by
//! default: without them the library depends on neither crate) do it for you:
//!
//! * `mio`: `impl mio::event::Source for Queue` — `registry.register(&mut queue, token,
//!   Interest::READABLE)`, and drain as above when the token is reported;
//! * `tokio`: `AsyncQueue`, whose `wait(max).await` returns a [`Batch`] as soon as
//!   events are ready, sleeps in tokio's reactor otherwise, and is cancel-safe.
//!
//! **An event loop.** [`Loop`] is QEMU's `AioContext` built on a queue: fd handlers,
//! [`EventNotifier`]s and bottom halves ([`Bh`]) that any thread may set or schedule
//! without a lock, nanosecond [`Timer`]s whose nearest deadline is the wait's timeout, and
//! a nestable [`Loop::poll`] that keeps external sources for after a nested poll, with
//! optional adaptive busy polling; [`IoThread`] runs one in a thread of its own.
//!
//! The `kevent` command-line tool (`kevent stat` shows a live ring, `kevent demo` shows
//! events flowing, `kevent bench` compares with epoll and io_uring) is the separate crate
//! `kevent-bench`, so that depending on this library brings no tool or rival with it.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, missing_docs)]
// docs.rs (`--cfg docsrs`, nightly) marks each adapter with the feature it needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(any(feature = "mio", feature = "tokio"))]
mod adapters;
mod batch;
mod builder;
mod ctl;
mod error;
mod event;
mod event_loop;
mod interest;
mod mode;
mod queue;
mod source;
mod stats;
mod token;

#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub use adapters::AsyncQueue;
pub use batch::{Batch, Iter};
pub use builder::Builder;
pub use ctl::Added;
pub use error::{Error, Result};
pub use event::{Event, Readiness};
pub use event_loop::{
    Bh, Clock, Drained, EventNotifier, FdHandler, IoThread, Loop, LoopStats, PollParams, Timer,
};
pub use interest::{InodeEvents, Interest, PollMask};
/// What the owner of a queue holds for each process attached to it ([`Builder::peer_limits`]).
pub use kevent_syscalls::PeerLimits;
pub use mode::{Flags, Mode, Trigger};
pub use queue::Queue;
pub use source::{Kind, Source};
pub use stats::Stats;
pub use token::Token;

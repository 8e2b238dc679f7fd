//! Adapters to other event loops, each behind an optional, off-by-default cargo feature:
//! `mio` (`impl mio::event::Source for Queue`) and `tokio` ([`AsyncQueue`]).
//!
//! Both stand on [`Queue::notify_fd`](crate::Queue::notify_fd), an eventfd that every
//! publish writes (so an edge-triggered registration sees an edge per publish) and that a
//! [`Queue::wait`](crate::Queue::wait) of this process resets when it finds the ring
//! empty — *before* it looks at the ring a last time. Hence the contract: on readiness,
//! take events with zero-timeout waits until one returns an empty batch; an entry
//! published after that empty wait began writes the eventfd again, so no edge is lost.

#[cfg(feature = "mio")]
mod mio;
#[cfg(feature = "tokio")]
mod tokio;

#[cfg(feature = "tokio")]
pub use self::tokio::AsyncQueue;

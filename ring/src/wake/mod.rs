//! The wake-up protocol: every place a participant sleeps, and how every waker reaches it
//! (ARCHITECTURE.md §3, W1–W5). One home, one file per sleeper or primitive:
//!
//! | file | what sleeps or wakes there |
//! |---|---|
//! | `futex.rs` | the futex itself: shared (the ring's words, any process), private (locks), and `futex_waitv` on two words |
//! | `wait.rs` | a consumer asleep on the ring (`Ring::wait`), and every waker's entry point (`Ring::wake`) |
//! | `poller.rs` | the two other sleepers: the poller blocked on the sources (its bell), the parked producer |
//! | `doorbell.rs` | the producer asking to hear of commits (`need_doorbell`) |
//! | `owner.rs` | the owner's liveness word: its death wakes every sleeper of another process |
//! | `notify.rs` | an event loop's own sleep (`NotifyMe`, QEMU's `notify_me` / `notified`) |
//! | `ticket.rs` | the kernel's lock, first come first served (its waiters sleep on a private futex) |
//! | `wakefd.rs` | the fds a waker rings (bell, doorbell, notify fds), never blocking |
//! | `time.rs` | deadlines and the kernel's `timespec`s |
//!
//! Every handshake here has a loom model (`ring/tests/loom.rs`, `loom_sleep.rs`,
//! `loom_loop.rs`, `loom_lock.rs`).

pub(crate) mod doorbell;
pub(crate) mod futex;
pub(crate) mod notify;
pub(crate) mod owner;
pub(crate) mod poller;
pub(crate) mod ticket;
pub(crate) mod time;
pub(crate) mod wait;
#[cfg(not(loom))]
pub(crate) mod wakefd;

//! The notify fd of a consumer in another process ([`Instance::notify_fd`]): what an event
//! loop of that process watches to learn that entries may wait — and that the owner died.
//!
//! The handle of such a queue is an epoll fd of its own holding:
//!
//! * the reading end of a notify channel the owner made (`OP_NOTIFY` through the gate):
//!   the owner rings it on every publish, without blocking, after releasing its lock
//!   (`outbox.rs`); re-armed with a new channel if the connection is remade;
//! * a pidfd of the owner (`pidfd.rs`): readable when the owner's process ends, however
//!   it ends — nobody would ring the channel then (and if a child the owner forked still
//!   holds the channel's ringing end, it never even hangs up);
//! * a private eventfd, the *kick*: the consumer rings it itself when it leaves entries
//!   behind after taking a notification off the channel (`Instance::next_batch`).
//!
//! An epoll fd is readable while any member is: so the loop wakes for either, calls
//! `wait` with a zero timeout, and gets entries or the owner's death (`EPIPE`).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Mutex, MutexGuard};

use crate::epoll;
use kevent_ring::WakeFd;

use super::Instance;

/// epoll tokens of the handle's members.
const INBOX: u64 = 1;
const KICK: u64 = 2;
const OWNER: u64 = 3;

/// What the handle of a queue in another process watches (module docs).
pub(super) struct PeerNotify {
    kick: WakeFd,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The notify channel's reading end, once armed.
    inbox: Option<WakeFd>,
    /// A pidfd of the owner, once armed.
    owner: Option<OwnedFd>,
}

impl PeerNotify {
    /// The handle (an epoll fd) and what it watches; only the kick until armed.
    pub(super) fn new() -> io::Result<(OwnedFd, PeerNotify)> {
        let handle = rustix::event::epoll::create(rustix::event::epoll::CreateFlags::CLOEXEC)?;
        let kick = WakeFd::private()?;
        add(handle.as_fd(), kick.as_fd(), KICK)?;
        Ok((
            handle,
            PeerNotify {
                kick,
                state: Mutex::new(State::default()),
            },
        ))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a channel is armed.
    pub(super) fn is_armed(&self) -> bool {
        self.state().inbox.is_some()
    }

    /// Arms the handle `epoll_fd` with a channel's reading end `inbox` (replacing an
    /// earlier one) and, the first time, a pidfd of the owner `owner_pid` — taken only
    /// while the ring says its owner is alive (`alive`), so that the pid was still the
    /// owner's when it was opened.
    pub(super) fn arm(
        &self,
        epoll_fd: BorrowedFd<'_>,
        inbox: OwnedFd,
        owner_pid: u32,
        alive: impl Fn() -> bool,
    ) -> io::Result<()> {
        let inbox = WakeFd::from_fd(inbox)?;
        let mut state = self.state();
        if let Some(old) = state.inbox.take() {
            let _ = epoll::delete(epoll_fd, old.as_raw_fd());
        }
        add(epoll_fd, inbox.as_fd(), INBOX)?;
        // Readable already if entries wait: the owner rang it when it armed it.
        state.inbox = Some(inbox);
        if state.owner.is_none() {
            if let Some(pidfd) = crate::pidfd::open(owner_pid).filter(|_| alive()) {
                add(epoll_fd, pidfd.as_fd(), OWNER)?;
                state.owner = Some(pidfd);
            }
        }
        Ok(())
    }

    /// Takes the notifications off the channel and the kick; returns whether there were
    /// any, and whether the owner's process ended. A channel whose ringing end is gone
    /// (the owner dropped it: the queue closed, or the connection ended) leaves the set,
    /// so that it does not keep the handle readable for ever. The owner's pidfd, once its
    /// process ended, stays readable, and so does the handle: when nothing rang, the
    /// drain looks at it (so a notification costs no extra system call), and the caller
    /// closes the ring for that reason (`Ring::note_owner_died`), which the next wait
    /// reports as `EPIPE` — rather than a loop waking for it again and again.
    pub(super) fn drain(&self, epoll_fd: BorrowedFd<'_>) -> (bool, bool) {
        let mut was_set = self.kick.reset().was_set;
        let mut state = self.state();
        if let Some(inbox) = &state.inbox {
            let r = inbox.reset();
            was_set |= r.was_set;
            if r.hung_up {
                let _ = epoll::delete(epoll_fd, inbox.as_raw_fd());
                state.inbox = None;
                // Wake whoever sleeps on the handle to look once more (it finds the
                // ring closed, or entries).
                was_set = true;
            }
        }
        let owner_gone = !was_set
            && state
                .owner
                .as_ref()
                .is_some_and(|pidfd| crate::pidfd::exited(pidfd.as_fd()));
        (was_set, owner_gone)
    }

    /// Makes the handle readable (entries wait that a drain took the notification of).
    pub(super) fn kick(&self) {
        let _ = self.kick.ring();
    }
}

fn add(epoll_fd: BorrowedFd<'_>, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
    epoll::add(epoll_fd, fd.as_raw_fd(), token, libc::EPOLLIN as u32).map_err(super::errno)
}

impl Instance {
    /// The pid of the queue's owner, as this process knows it: the gate's (checked with
    /// `SO_PEERCRED` when connecting), else the one the ring's header names.
    pub(super) fn owner_pid(&self) -> u32 {
        self.gate.as_ref().map_or_else(
            || {
                self.ring
                    .header()
                    .identity
                    .producer_pid
                    .load(std::sync::atomic::Ordering::Relaxed)
            },
            |g| g.pid(),
        )
    }
}

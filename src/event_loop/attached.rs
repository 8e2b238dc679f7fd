//! [`Loop::attach_queue`]: another queue's events dispatched by this loop — how several
//! **processes** drive one shared queue's handlers, each event dispatched once.
//!
//! A loop is the only consumer of its own queue, and an fd is an fd of one process: a
//! connection accepted by one worker cannot be handled by another. So the shape is the
//! pre-forked server's: each process runs a loop of its own (its own fds on its own
//! queue), and every process's loop also takes events from one queue they share — the
//! listening socket, a job queue of user events — whose entries the ring hands to exactly
//! one consumer (exactly once, unless a process dies in the middle of a batch: the
//! whole batch is then redelivered, flagged, to another — at-least-once across a crash).
//!
//! The attached queue nests as it would in any other event loop: its
//! [`notify_fd`](crate::Queue::notify_fd) is an fd handler of this loop, level-triggered.
//! The read callback takes one batch (at most [`Loop::max_events`]) with a zero timeout
//! and runs the callback for each event, then commits the batch. It takes one batch per
//! iteration, not all there is, so a busy shared queue cannot starve this loop's own
//! fds; the notify fd stays readable until a wait finds the shared ring empty (which
//! resets it), so the next iteration takes the next batch.
//!
//! The cost of the nesting: every publish on the shared queue writes every armed notify
//! fd, so every process's loop wakes for each new entry and one of them claims it — the
//! herd of level-triggered epoll without `EPOLLEXCLUSIVE`. A loop that finds the ring
//! empty has its notify fd reset by that look, and sleeps again at its next poll.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;

use super::context::Loop;
use super::handler::FdHandler;
use super::lock;
use crate::{Error, Event, Queue, Result};

/// The callback of an attached queue.
type QueueFn = dyn Fn(&Loop, &Event) + Send + Sync;

impl Loop {
    /// Dispatches the events of another `queue` in this loop: `callback` runs for each
    /// event this loop claims from it, in a poll of this loop, and the batch is committed
    /// after the callbacks ran (a level-triggered kevent is reported again only then).
    ///
    /// This is how several processes drive one shared queue's handlers: each process
    /// makes its own loop and attaches its own handle of the shared queue
    /// ([`Queue::for_this_process`](crate::Queue::for_this_process) in a forked child,
    /// [`Queue::connect`](crate::Queue::connect) in a process started otherwise). Every
    /// event is claimed — and `callback` run for it — by exactly one of them, unless a
    /// process dies in the middle of a batch: its whole batch is then delivered again
    /// to another (flagged [`Event::is_redelivered`]), the events whose callbacks already
    /// ran included — nothing is lost, and what ran may run twice (at most the
    /// [`max_events`](Loop::max_events) of one batch; `set_max_events(1)` narrows it to
    /// the event whose callback was running). Several threads polling this loop share it
    /// the same way, and so do two loops of one process that attach the same queue.
    /// Callbacks may poll the loop (nested) and (un)register anything, the attached
    /// queue's kevents included.
    ///
    /// Each process's loop is woken for every new entry of the shared queue (its notify
    /// fd is written on every publish) and one claims it: a herd, as with epoll without
    /// `EPOLLEXCLUSIVE`. A poll takes at most [`max_events`](Loop::max_events) events of
    /// an attached queue, so its own fds are not starved by a busy shared queue.
    ///
    /// If the attached queue is closed or found broken, it is detached and the error kept
    /// for [`take_error`](Loop::take_error).
    ///
    /// # Errors
    /// As [`Queue::notify_fd`](crate::Queue::notify_fd) (`EOPNOTSUPP`: a parent's `Queue`
    /// value in a forked child, or a queue attached without a socket) and
    /// [`set_fd_handler`](Loop::set_fd_handler). `EINVAL`: `queue` is this loop's own
    /// queue. `EEXIST`: `queue` is attached already, or the loop has an fd handler on its
    /// fd.
    pub fn attach_queue(
        &self,
        queue: Arc<Queue>,
        callback: impl Fn(&Loop, &Event) + Send + Sync + 'static,
    ) -> Result<()> {
        if queue.as_raw_fd() == self.queue.as_raw_fd() {
            return Err(Error::errno(
                libc::EINVAL,
                "kevent attach_queue: a loop's own queue is not attached to it",
            ));
        }
        let fd = queue.notify_fd()?.as_raw_fd();
        let mut attached = lock(&self.attached);
        if attached.contains(&fd) {
            return Err(Error::errno(
                libc::EEXIST,
                "kevent attach_queue: this queue is attached to the loop already",
            ));
        }
        if self.handlers.has_fd(fd) {
            return Err(Error::errno(
                libc::EEXIST,
                "kevent attach_queue: the loop has an fd handler on this queue's fd",
            ));
        }
        let callback: Arc<QueueFn> = Arc::new(callback);
        let handler = FdHandler::new().read(move |lp| lp.take_attached(&queue, &*callback));
        self.set_fd_handler(&borrow(fd), handler)?;
        attached.push(fd);
        Ok(())
    }

    /// Stops dispatching `queue`'s events (see [`attach_queue`](Loop::attach_queue));
    /// returns whether it was attached (an fd handler of yours on the queue's fd is left
    /// alone). Safe in any callback, the attached queue's own: the events of the batch
    /// being dispatched are still dispatched — they are claimed by this process, and
    /// nobody else can have them — and no batch is taken after it.
    ///
    /// # Errors
    /// As [`remove_fd_handler`](Loop::remove_fd_handler).
    pub fn detach_queue(&self, queue: &Queue) -> Result<bool> {
        // The notify fd of a queue is its handle fd (`Queue::notify_fd`).
        let fd = queue.as_fd().as_raw_fd();
        let mut attached = lock(&self.attached);
        let Some(i) = attached.iter().position(|&a| a == fd) else {
            return Ok(false);
        };
        attached.swap_remove(i);
        drop(attached);
        self.remove_fd_handler(&queue.as_fd())
    }

    /// One batch of an attached queue, dispatched.
    fn take_attached(&self, queue: &Queue, callback: &QueueFn) {
        match queue.wait(self.max_events(), Some(Duration::ZERO)) {
            Ok(batch) => {
                for ev in batch.iter() {
                    callback(self, &ev);
                }
                // Committed here, after every callback ran.
                drop(batch);
            }
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => {
                // Closed or broken: its notify fd would stay readable for ever.
                let _ = self.detach_queue(queue);
                self.shared.record(e);
            }
        }
    }
}

/// `fd` as a borrowed fd for the handler table, which keeps only its number.
fn borrow(fd: std::os::fd::RawFd) -> BorrowedFd<'static> {
    // SAFETY: the handler table only reads the number (as `set_fd_handler` does with any
    // `AsFd`) and registers it with the queue, which checks it is open; the fd itself
    // stays owned by the attached queue, which the handler keeps alive.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

//! [`Loop::poll`]: one iteration of the loop (QEMU's `aio_poll`), nestable.
//!
//! **One iteration.** Compute the timeout (zero if work is waiting; else the nearest timer
//! deadline, capped at 10 ms while an idle bottom half waits); busy-poll if adaptive
//! polling says so; announce the sleep (`notify_me`, see `wake.rs`) and wait on the
//! queue; accept the notification; then run, in this order: the bottom halves and
//! notifiers queued so far, the handlers of the claimed events, the kept events of
//! external sources (if they may run now), and the timers that are due.
//!
//! **Frames.** Each thread keeps, per loop it polls, a depth and a work list (a
//! thread-local, so a loop shared by several threads has one per thread). A poll copies
//! the events it claimed and the bottom halves it took into the list, and dispatches from
//! its front until it is empty. A callback's nested poll does the same with the same list:
//! it first dispatches what the outer poll took but has not dispatched yet — as QEMU's
//! nested `aio_bh_poll` runs the outer slices, and its level-triggered epoll reports the
//! outer ready fds again — then waits for more. A poll's batch is committed when the list
//! is empty, so every event of it has been dispatched by then, by this poll or a nested
//! one. Depth 2 blocks external sources (`external.rs`) until the thread is back at
//! depth 1.
//!
//! **A limit of claiming.** An fd whose event an outer poll claimed is not reported again
//! until that poll's batch is committed — after the nested poll returns — even if a
//! nested poll already ran its handler and the fd is still ready: the ring holds one
//! entry per kevent, and a [`Batch`](crate::Batch) commits as a whole. So a nested poll
//! that waits for more readiness of such an fd (its own handler's fd, typically) waits in
//! vain. Wait for another source — a bottom half, a notifier, another fd — as QEMU code
//! waits for a completion; or keep batches small ([`Loop::set_max_events`]).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::bh::BhInner;
use super::context::Loop;
use super::handler::Entry;
use super::lock;
use super::notifier::NotifierInner;
use super::stats::bump;
use crate::{Event, Result, Token};

/// While an idle bottom half waits, the loop wakes at least this often (QEMU's 10 ms).
const IDLE_TIMEOUT: Duration = Duration::from_millis(10);

/// Something for a poll to run.
pub(super) enum Work {
    /// A bottom half taken off the loop's list.
    Bh(Arc<BhInner>),
    /// A notifier taken off the loop's list.
    Notifier(Arc<NotifierInner>),
    /// An event claimed from the queue.
    Event(Event),
    /// A handler whose poll callback found work while busy-polling.
    PollReady(Arc<Entry>),
}

/// How many loops' states a thread keeps between polls before it drops the idle ones.
const KEPT_STATES: usize = 16;

/// One thread's state for one loop.
struct ThreadState {
    loop_id: u64,
    depth: Cell<u32>,
    pending: RefCell<VecDeque<Work>>,
}

thread_local! {
    /// The loops this thread is polling, innermost-first order irrelevant (few entries).
    static THREAD: RefCell<Vec<Rc<ThreadState>>> = const { RefCell::new(Vec::new()) };
}

/// A poll in progress on this thread.
struct Frame<'l> {
    lp: &'l Loop,
    state: Rc<ThreadState>,
}

impl<'l> Frame<'l> {
    fn enter(lp: &'l Loop) -> Frame<'l> {
        let state = THREAD.with(|t| {
            let mut t = t.borrow_mut();
            match t.iter().find(|s| s.loop_id == lp.id) {
                Some(s) => s.clone(),
                None => {
                    // States are kept between polls (a poll allocates nothing); the idle
                    // ones of loops this thread polled before go once there are many.
                    if t.len() >= KEPT_STATES {
                        t.retain(|s| s.depth.get() > 0);
                    }
                    let s = Rc::new(ThreadState {
                        loop_id: lp.id,
                        depth: Cell::new(0),
                        pending: RefCell::new(VecDeque::new()),
                    });
                    t.push(s.clone());
                    s
                }
            }
        });
        let depth = state.depth.get() + 1;
        state.depth.set(depth);
        if depth == 2 {
            lp.external.block();
        }
        Frame { lp, state }
    }

    fn push(&self, work: Work) {
        self.state.pending.borrow_mut().push_back(work);
    }

    fn pop(&self) -> Option<Work> {
        self.state.pending.borrow_mut().pop_front()
    }

    fn has_pending(&self) -> bool {
        !self.state.pending.borrow().is_empty()
    }
}

impl Drop for Frame<'_> {
    fn drop(&mut self) {
        let depth = self.state.depth.get() - 1;
        self.state.depth.set(depth);
        if depth == 1 && self.lp.external.unblock() {
            // This thread's outer poll dispatches the kept events when it ends; a loop
            // polled by other threads may have one asleep.
            self.lp.notify();
        }
        if depth == 0 {
            // Left over only if a callback panicked: those events are dropped with it.
            // The state itself stays for this thread's next poll of the loop.
            self.state.pending.borrow_mut().clear();
        }
    }
}

impl Loop {
    /// `aio_poll`: runs one iteration of the loop. Returns whether progress was made: a
    /// bottom half (not an idle one), handler, notifier or timer callback ran.
    ///
    /// `blocking`: wait for something to happen — an fd event, a bottom half or
    /// notifier, the nearest timer — if nothing is ready; else only look. A blocking poll
    /// may still return `false` (woken by [`notify`](Loop::notify), a wake-up whose work
    /// another thread ran, a signal), so wait for a condition in a loop:
    /// `while !done() { lp.poll(true); }`. A blocking poll with no handler, timer or
    /// waker can wait for ever.
    ///
    /// Nestable: a callback may poll again; handlers and notifiers marked external are
    /// not dispatched in a nested poll, and their events are dispatched after it (see
    /// [`drained_begin`](Loop::drained_begin)). Several threads may poll the same loop.
    ///
    /// An error of the queue is kept for [`take_error`](Loop::take_error) (and counted);
    /// [`try_poll`](Loop::try_poll) returns it instead.
    #[doc(alias = "aio_poll")]
    pub fn poll(&self, blocking: bool) -> bool {
        match self.try_poll(blocking) {
            Ok(progress) => progress,
            Err(e) => {
                self.shared.record(e);
                false
            }
        }
    }

    /// [`poll`](Loop::poll), returning an error of the queue.
    ///
    /// # Errors
    /// As [`Queue::wait`](crate::Queue::wait), except `EINTR` (a signal during the wait),
    /// which is a poll without events: [`BrokenPipe`](std::io::ErrorKind::BrokenPipe) if
    /// the queue was closed, [`InvalidData`](std::io::ErrorKind::InvalidData) if it broke.
    /// Nothing is dispatched then.
    pub fn try_poll(&self, blocking: bool) -> Result<bool> {
        let frame = Frame::enter(self);
        bump(&self.shared.counters.polls);
        let adaptive = blocking && self.adaptive.enabled();
        let start = adaptive.then(Instant::now);
        let mut timeout = if blocking {
            self.timeout_in(&frame)
        } else {
            Some(Duration::ZERO)
        };
        let mut polled = Vec::new();
        let poll_ns = Duration::from_nanos(self.adaptive.poll_ns());
        if adaptive && timeout != Some(Duration::ZERO) && !poll_ns.is_zero() {
            let limit = timeout.map_or(poll_ns, |t| t.min(poll_ns));
            let busy = self.busy_poll(limit, &mut polled);
            timeout = match busy.found {
                true => Some(Duration::ZERO),
                // Keep the wait's end where it was.
                false => timeout.map(|t| t.saturating_sub(busy.elapsed)),
            };
        }
        let announce = timeout != Some(Duration::ZERO);
        // Read before the announcement: a waker that sees it wakes us with an explicit
        // wake-up, which this wait must not miss (wake.rs).
        let kicks = self.queue.wake_count()?;
        if announce {
            if self.shared.waker.sleep_begin() {
                bump(&self.shared.counters.sleeps);
            } else {
                timeout = Some(Duration::ZERO);
            }
        }
        let waited = self.queue.wait_since(kicks, self.max_events(), timeout);
        if announce {
            self.shared.waker.sleep_end();
        }
        self.shared.waker.accept();
        if let Some(start) = start {
            self.adaptive.adjust(start.elapsed());
        }
        let batch = match waited {
            Ok(batch) => Some(batch),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => None,
            Err(e) => return Err(e),
        };

        self.take_queued(&frame);
        for work in polled {
            frame.push(work);
        }
        for ev in batch.iter().flatten() {
            frame.push(Work::Event(ev));
        }
        let mut progress = false;
        while let Some(work) = frame.pop() {
            progress |= self.run_work(work);
        }
        // Every event of the batch has been dispatched (here or in a nested poll): commit,
        // so that a level-triggered fd still ready is reported again.
        drop(batch);
        progress |= self.run_kept();
        progress |= self.run_timers();
        Ok(progress)
    }

    /// `aio_compute_timeout`: how long a blocking poll of this thread would wait for
    /// what is known now — zero if work is waiting (a bottom half or notifier, events a
    /// nested poll has yet to dispatch, kept events that may run), else the time to the
    /// nearest timer deadline (at most 10 ms while an idle bottom half waits), or
    /// `None`: until an event or a wake-up.
    ///
    /// (A poll also waits zero after any notification since the previous poll — a timer
    /// armed, say — to look again; this does not.)
    #[doc(alias = "aio_compute_timeout")]
    pub fn compute_timeout(&self) -> Option<Duration> {
        let pending = THREAD.with(|t| {
            t.borrow()
                .iter()
                .any(|s| s.loop_id == self.id && !s.pending.borrow().is_empty())
        });
        let queued = self.shared.queued.load(Ordering::Relaxed);
        let idle = self.shared.idle_bhs.load(Ordering::Relaxed);
        if pending || queued > idle {
            return Some(Duration::ZERO);
        }
        self.loop_timeout()
    }

    fn timeout_in(&self, frame: &Frame<'_>) -> Option<Duration> {
        if frame.has_pending() || self.shared.waker.is_notified() {
            return Some(Duration::ZERO);
        }
        self.loop_timeout()
    }

    fn loop_timeout(&self) -> Option<Duration> {
        if self.external.has_runnable() {
            return Some(Duration::ZERO);
        }
        let timers = self.timer_timeout();
        if self.shared.idle_bhs.load(Ordering::Relaxed) > 0 {
            return Some(timers.map_or(IDLE_TIMEOUT, |t| t.min(IDLE_TIMEOUT)));
        }
        timers
    }

    /// Moves the bottom halves and notifiers queued so far onto this thread's work list
    /// (QEMU's `QSLIST_MOVE_ATOMIC` of `aio_bh_poll`).
    fn take_queued(&self, frame: &Frame<'_>) {
        let rx = lock(&self.bh_rx);
        while let Ok(work) = rx.try_recv() {
            self.shared.queued.fetch_sub(1, Ordering::Relaxed);
            frame.push(work);
        }
    }

    fn run_work(&self, work: Work) -> bool {
        match work {
            Work::Bh(bh) => bh.run(self),
            Work::Notifier(n) => {
                n.take();
                self.run_notifier(&n)
            }
            Work::Event(ev) => self.dispatch_event(&ev),
            Work::PollReady(entry) => {
                if entry.handler.external && self.external.is_blocked() {
                    return false; // its kevent reports it, to be kept, if it stays ready
                }
                self.dispatch_fd(entry.token, true, false)
            }
        }
    }

    /// Runs a notifier's handler, or keeps it if it is external and blocked.
    pub(super) fn run_notifier(&self, n: &Arc<NotifierInner>) -> bool {
        if n.is_external() && self.external.is_blocked() {
            self.keep_notifier(n);
            return false;
        }
        n.run(self)
    }

    fn dispatch_event(&self, ev: &Event) -> bool {
        let Some(entry) = self.handlers.get(ev.token()) else {
            return false; // removed since: dropped
        };
        if entry.handler.external && self.external.is_blocked() {
            self.keep_fd(ev);
            return false;
        }
        drop(entry);
        self.dispatch_fd(ev.token(), ev.is_readable(), ev.is_writable())
    }

    /// `aio_dispatch_handler`: runs the read callback, then the write callback, of the
    /// handler `token` names *at that moment* — a handler removed by the read callback
    /// (itself included) gets no write callback; a replaced one gets the new callbacks.
    pub(super) fn dispatch_fd(&self, token: Token, readable: bool, writable: bool) -> bool {
        let mut progress = false;
        if readable {
            let read = self
                .handlers
                .get(token)
                .and_then(|e| e.handler.read.clone());
            if let Some(read) = read {
                read(self);
                bump(&self.shared.counters.fd_callbacks);
                progress = true;
            }
        }
        if writable {
            let write = self
                .handlers
                .get(token)
                .and_then(|e| e.handler.write.clone());
            if let Some(write) = write {
                write(self);
                bump(&self.shared.counters.fd_callbacks);
                progress = true;
            }
        }
        progress
    }
}

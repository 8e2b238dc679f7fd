//! [`Loop`]: QEMU's event loop (`AioContext`, `aio_poll`) answered on a kevent queue.
//!
//! ARCHITECTURE.md §9. A loop owns (or is given) a [`Queue`](crate::Queue) and is its only
//! consumer. It adds no thread and no system call per event of its own: fd handlers are
//! kevents on the queue, and everything else — bottom halves, event notifiers, timers —
//! lives in user space and only touches the queue to wake a loop that sleeps in
//! [`Queue::wait`](crate::Queue::wait). So the wake-up contract W1–W5 of the queue holds
//! for the loop too.
//!
//! ```text
//!  Loop (Send + Sync: one thread per loop, or several threads polling one loop)
//!    ├─ fd handlers    handler.rs   read/write/poll callbacks → a KEVENT_POLL kevent per fd
//!    ├─ notifiers      notifier.rs  set / test_and_clear; queued like a bottom half
//!    ├─ bottom halves  bh.rs        lock-free scheduling from any thread
//!    ├─ timers         timer.rs     ns deadlines, two heaps (monotonic, realtime)
//!    ├─ wake-up        wake.rs      notify_me / notified, the queue's explicit wake-up
//!    ├─ poll           poll.rs      one iteration; nestable; per-thread frames
//!    ├─ external       external.rs  drained sections; kept events of external sources
//!    ├─ adaptive       adaptive.rs  poll-max-ns busy polling, grow/shrink
//!    ├─ attached       attached.rs  another (shared) queue's events, one batch per poll
//!    └─ IoThread       iothread.rs  a thread running one loop
//! ```
//!
//! ## The wake-up handshake (wake.rs)
//!
//! As in QEMU's `aio_poll`/`aio_notify`: a loop that is about to block increments
//! `notify_me`, issues a SeqCst fence, and re-checks `notified`; whoever gives the loop
//! work (schedules a bottom half, sets a notifier, arms an earlier timer, ends a drained
//! section) first publishes the work, then sets `notified` and — only if that flipped it
//! from false — fences and reads `notify_me`. The two fences make sure that either the
//! loop sees `notified` and does not sleep, or the waker sees the sleeper and wakes it.
//! The wake itself is the queue's explicit wake-up (`kevent_syscalls::Instance::wake_one`):
//! a counter moved and one sleeper woken — no kernel lock, and no entry to publish, claim
//! and commit (it was a user kevent made ready, which cost all three). It wakes one
//! sleeper, the right number for a loop polled by several threads: any of them can run
//! the work. It is not remembered for a wait that begins later, so a poll reads the
//! wake-up count before it announces its sleep and waits for a change of it: a waker
//! that saw the announcement moves the count after that read. A loop that is awake costs
//! a waker one atomic swap and a fence: no system call.
//!
//! The handshake is [`kevent_ring::NotifyMe`], model-checked with loom beside the ring's
//! own handshakes (`ring/tests/loom_loop.rs`, section k: a loop about to sleep never
//! misses work; two wakers cost one wake-up; an awake loop costs none; section l: the
//! wake-up count read before the announcement — the model deadlocks if it is read after).
//!
//! ## Bottom halves (bh.rs)
//!
//! Each bottom half carries QEMU's flag word (`PENDING`, `SCHEDULED`, `DELETED`,
//! `ONESHOT`, `IDLE`). Scheduling is one `fetch_or`; the scheduler that sets `PENDING`
//! pushes the bottom half onto a lock-free multi-producer list — std's unbounded
//! `mpsc` channel, which is crossbeam's segmented list channel (a CAS on the tail, a
//! block allocation every 31 items, no lock on the send path when nobody blocks in
//! `recv`, which the loop never does). Scheduling twice before it runs therefore queues
//! it once and runs it once. The loop takes what is queued into a per-thread work list
//! and clears `PENDING|SCHEDULED|IDLE` with one `fetch_and` just before running each,
//! so a bottom half that schedules itself runs again at the next iteration, and a
//! cancelled or deleted one is skipped.
//!
//! ## Timers (timer.rs)
//!
//! One binary heap per clock, ordered by (deadline, arming sequence), with lazy
//! cancellation: re-arming or cancelling bumps the timer's generation, and heap entries of
//! an older generation are dropped when they reach the top (the heap is rebuilt when
//! stale entries outnumber live ones). The per-iteration cost is a peek per clock, plus
//! `O(log n)` per expired timer. The nearest deadline is the wait's timeout, in
//! nanoseconds ([`Loop::compute_timeout`]); there is no timerfd per timer. A timer never
//! fires early; how late it fires is the wake-up latency plus the polling thread's timer
//! slack, which Linux sets to 50 µs by default: [`IoThread`] sets 1 ns, as QEMU does, and
//! a thread of yours can too (`prctl(PR_SET_TIMERSLACK, 1)`). `kevent loop-bench`
//! measures it.
//!
//! ## Nested polls and external sources (poll.rs, external.rs)
//!
//! A callback may call [`Loop::poll`] again. Each thread keeps, per loop, a frame depth
//! and a work list: the outer poll copies its claimed events (and the bottom halves it
//! took) into that list and dispatches from it, so a nested poll dispatches what the
//! outer one has claimed but not yet dispatched — it would otherwise wait for events
//! whose entries the outer batch still holds. The outer batch is committed once the list
//! is empty, so a level-triggered fd is reported again only after its handler ran.
//!
//! While any thread of the loop is in a nested poll, or a drained section is open
//! ([`Loop::drained_begin`]), handlers and notifiers marked *external* are not
//! dispatched. Their events are **kept**: remembered in the loop (one per source, merged)
//! and the fd's kevent removed from the queue meanwhile, because a level-triggered fd
//! would otherwise be reported again after every commit and keep a blocking poll busy.
//! When the last nested poll or drained section ends, the kept events are dispatched and
//! the fds registered again (a registration of a still-ready fd is queued at once, so
//! nothing is lost either way).
//!
//! ## Threads
//!
//! A [`Loop`] is `Send + Sync`. The usual shape is one loop per thread ([`IoThread`]);
//! other threads schedule bottom halves, set notifiers and arm timers. Several threads
//! may also call [`Loop::poll`] on one loop: each queue event is claimed by exactly one of
//! them (the ring's claims), and a kevent has one entry outstanding until the batch that
//! holds it is committed, after its handler ran — so a handler is never run for the same
//! kevent by two threads at once. The handler table is behind a read-write lock that is
//! never held while a callback runs.
//!
//! ## Processes (attached.rs)
//!
//! A loop's handlers are closures of one process and its fds are that process's, so a
//! loop is not shared across `fork`: each process makes its own. What processes share is
//! a queue: [`Loop::attach_queue`] dispatches another queue's events in this loop (its
//! notify fd is an fd handler here), so pre-forked workers, each with a loop of its own,
//! drive one shared queue's handlers — a listening socket, user events — and each event
//! is claimed and dispatched by exactly one of them.

mod adaptive;
mod attached;
mod bh;
mod context;
mod external;
mod handler;
mod iothread;
mod notifier;
mod poll;
mod stats;
mod timer;
mod wake;

pub use adaptive::PollParams;
pub use bh::Bh;
pub use context::Loop;
pub use external::Drained;
pub use handler::FdHandler;
pub use iothread::IoThread;
pub use notifier::EventNotifier;
pub use stats::LoopStats;
pub use timer::{Clock, Timer};

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, going on with the data if a callback panicked while another thread held it
/// (every critical section here leaves the data consistent before it can panic).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

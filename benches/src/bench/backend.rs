//! The plug-in point: what a notification backend is, and the list of backends compared.
//!
//! # Writing a backend
//!
//! A backend is a way for consumers to learn which streams are readable. The harness owns
//! everything else — the streams, the writer, the consumers (threads or forked processes),
//! the reads, the counting and the clock — so that every backend is measured identically.
//! A backend implements three small traits, one per lifetime:
//!
//! | trait | lifetime | typical content |
//! |---|---|---|
//! | [`Backend`] | the whole program | name, description, which cells it supports |
//! | [`BackendRun`] | one run (fresh streams) | a shared epoll fd, a shared-memory ring, a producer thread |
//! | [`ConsumerLoop`] | one consumer in one run | a per-consumer epoll fd or io_uring, an event buffer |
//!
//! The order of calls in one run is:
//!
//! 1. the harness creates fresh streams (`spec.read_fds`, all nonblocking);
//! 2. [`Backend::setup`] (in the harness thread, single-threaded): create per-run state;
//!    **do not start threads here** — in process mode the harness forks next;
//! 3. per consumer, in the consumer thread or forked child: [`BackendRun::consumer`]
//!    creates that consumer's state (it runs in the child in process mode, so state made
//!    here is private to the consumer, while state made in `setup` is inherited: fds and
//!    `MAP_SHARED` memory are shared with the parent, heap memory is copied);
//! 4. when every consumer is ready: [`BackendRun::start`] in the harness — start helper
//!    threads here (e.g. kevent's producer thread that runs `epoll_wait` and fills the ring);
//! 5. the writer starts and the measurement window opens; each consumer runs
//!    [`ConsumerLoop::run`], which waits for notifications and calls
//!    [`ConsumerCtx::read_event`] once per notified stream, until
//!    [`ConsumerCtx::should_stop`]; no single wait may block longer than
//!    [`ConsumerCtx::wait_timeout`];
//! 6. the window closes: [`BackendRun::stopping`] (wake your waiters if you can), the
//!    writer and the consumers are joined or reaped;
//! 7. [`BackendRun::teardown`]: stop and join helper threads, report their CPU usage in a
//!    [`HelperReport`] (it is added to the consumers' CPU and context switches: work moved
//!    into a helper thread is still work). It is called even when the run failed before
//!    `start`, so it must cope with helpers that never started.
//!
//! The streams stay open until `teardown` has returned. A helper thread is spawned with
//! `std::thread::spawn`, so it must own what it uses: typically an `Arc` of the epoll fd that
//! `setup` created and registered the streams in (it never needs the stream fds: the
//! consumers do the reads through the context), plus the shared ring.
//!
//! Fairness: use `spec.batch` as the most notifications taken per wait; no CPU pinning;
//! all the streams of the cell; the read is always the harness's.
//!
//! # Adding the kevent backends
//!
//! Create `benches/src/bench/kevent_queue.rs` with a `pub fn backends() -> Vec<Box<dyn Backend>>`
//! returning e.g. "kevent-lt" / "kevent-et" (one type with a trigger field, as
//! [`super::epoll::EpollBackend`] does), then add `mod kevent_queue;` to `bench/mod.rs` and
//! `list.extend(kevent_queue::backends());` in [`super::backends`], the registry at the
//! harness's root (this module names no backend: they depend on it, not it on them). Run
//! `kevent bench --list` to see it, `--backends kevent-et,epoll-et` to compare. Threads and
//! processes come for free if `consumer` only uses inherited fds and `MAP_SHARED` memory:
//! in process cells the producer thread runs in the harness process and the forked
//! consumers read the shared ring (so their futex waits must be shared, not
//! `FUTEX_PRIVATE_FLAG`). Refuse a cell in [`Backend::check`] if a set-up cannot run it.

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use super::consumer::{ConsumerCtx, ConsumerMode};
use super::metrics::Usage;
use super::streams::StreamKind;
use super::workload::Cell;

/// What a backend gets for one run.
#[derive(Clone, Copy)]
pub struct RunSpec<'a> {
    /// Kind of the streams.
    pub kind: StreamKind,
    /// Read ends of the streams, nonblocking; the stream index is the position here.
    pub read_fds: &'a [OwnedFd],
    /// Number of consumers that will call [`BackendRun::consumer`].
    pub consumers: usize,
    /// Whether consumers are threads or forked processes.
    pub mode: ConsumerMode,
    /// Most notifications to take per wait (`maxevents`, CQEs per batch, ...).
    pub batch: usize,
    /// Longest single blocking wait.
    pub wait_timeout: Duration,
}

/// Resource usage of a backend's own helper threads (not consumers) during a run.
#[derive(Debug, Default, Clone, Copy)]
pub struct HelperReport {
    /// CPU time and context switches of the helper threads over the run, e.g. measured with
    /// `Usage::now(UsageOf::Thread)` at the start and end of each helper thread.
    pub usage: Usage,
}

/// A notification mechanism under test. Implementations are stateless descriptions; the
/// state of a run lives in the [`BackendRun`] returned by [`Backend::setup`].
pub trait Backend: Send + Sync {
    /// Short stable name, used by `--backends` and in reports (e.g. `epoll-et`).
    fn name(&self) -> &str;

    /// One line saying exactly what is measured (flags, sharing, set-up parameters).
    fn describe(&self) -> String;

    /// `Err(reason)` if this backend cannot or should not run in `cell` (the harness prints
    /// the reason and skips it; nothing is reported for it).
    fn check(&self, cell: &Cell) -> Result<(), String> {
        let _ = cell;
        Ok(())
    }

    /// Per-run set-up, after the streams exist and before any consumer starts.
    fn setup<'a>(&'a self, spec: &RunSpec<'a>) -> io::Result<Box<dyn BackendRun + 'a>>;
}

/// The state of one backend for one run. Shared by reference between consumer threads (or
/// inherited by forked consumers), hence `Sync`.
pub trait BackendRun: Sync {
    /// Creates consumer `index`'s state, in that consumer's thread or process.
    fn consumer(&self, index: usize) -> io::Result<Box<dyn ConsumerLoop + '_>>;

    /// Called once every consumer is ready, before the writer starts: start helper threads.
    fn start(&self) -> io::Result<()> {
        Ok(())
    }

    /// Called right after the stop signal is raised, before consumers are joined.
    fn stopping(&self) {}

    /// Called after every consumer has finished: stop helper threads and report their usage.
    fn teardown(self: Box<Self>) -> io::Result<HelperReport> {
        Ok(HelperReport::default())
    }
}

/// One consumer's loop.
pub trait ConsumerLoop {
    /// Waits for notifications and calls `ctx.read_event(stream)` once per notified stream
    /// until `ctx.should_stop()`; calls `ctx.count_wait()` once per wait.
    fn run(&mut self, ctx: &mut ConsumerCtx<'_>) -> io::Result<()>;
}

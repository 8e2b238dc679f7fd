//! `kevent-httpd`: the HTTP server of the server benchmark (issue 12, items 4 and 5) —
//! one server, several notification back-ends.
//!
//! The kevent author's proof in 2006 was a web server (lighttpd patched for kevent,
//! `ab -n80000 -c8000`). This is that benchmark with today's rivals: a small HTTP/1.1
//! server answering every GET with the same 699-byte page ([`page`]), keep-alive and
//! close ([`parse`]), written once ([`conn`]) and driven by interchangeable back-ends:
//!
//! | back-end | notification | who serves a connection |
//! |---|---|---|
//! | [`kevent-threads`](kevent_threads) | one queue shared by N threads: listener and every connection | any worker |
//! | [`kevent-procs`](kevent_procs) | the listener in one queue shared by N processes, connections in each process's own | the process that accepted it |
//! | [`epoll-reuseport`](epoll_reuseport) | a listening socket and an epoll fd per worker (`SO_REUSEPORT`) | the worker the kernel's hash picked |
//! | [`epoll-exclusive`](epoll_exclusive) | one listener in every worker's epoll fd, `EPOLLEXCLUSIVE` | the worker that accepted it |
//! | [`tokio`](tokio_rt) | tokio's multi-thread runtime, a task per connection | any worker (work stealing) |
//!
//! `benches/http/run.sh` drives it with `wrk` and `ab` next to nginx; see the README's
//! "HTTP server" section. Run `kevent-httpd --help` for the options.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc};

use kevent::Trigger;

pub mod conn;
pub mod epoll_exclusive;
pub mod epoll_reuseport;
pub mod epoll_worker;
pub mod kevent_procs;
pub mod kevent_threads;
pub mod kevent_worker;
pub mod listener;
pub mod page;
pub mod parse;
pub mod stall;
pub mod table;
pub mod tokio_rt;

pub use stall::Stall;

/// A notification back-end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// [`kevent_threads`].
    KeventThreads,
    /// [`kevent_procs`].
    KeventProcs,
    /// [`epoll_reuseport`].
    EpollReuseport,
    /// [`epoll_exclusive`].
    EpollExclusive,
    /// [`tokio_rt`].
    Tokio,
}

impl Backend {
    /// Every back-end.
    pub const ALL: [Backend; 5] = [
        Backend::KeventThreads,
        Backend::KeventProcs,
        Backend::EpollReuseport,
        Backend::EpollExclusive,
        Backend::Tokio,
    ];

    /// The name `--backend` takes.
    pub fn name(self) -> &'static str {
        match self {
            Backend::KeventThreads => "kevent-threads",
            Backend::KeventProcs => "kevent-procs",
            Backend::EpollReuseport => "epoll-reuseport",
            Backend::EpollExclusive => "epoll-exclusive",
            Backend::Tokio => "tokio",
        }
    }

    /// The back-end called `name`.
    pub fn from_name(name: &str) -> Option<Backend> {
        Backend::ALL.into_iter().find(|b| b.name() == name)
    }
}

/// How to run the server.
#[derive(Debug, Clone)]
pub struct Config {
    /// The notification back-end.
    pub backend: Backend,
    /// Worker threads (or processes, for `kevent-procs`).
    pub workers: usize,
    /// Where to listen (port 0: any free port; the server prints which).
    pub addr: SocketAddr,
    /// The kevent back-ends' trigger mode for connections (the binary's default: edge,
    /// see [`kevent_worker::run`]).
    pub trigger: Trigger,
    /// The kevent back-ends' events per wait.
    pub batch: usize,
    /// The kevent back-ends' ring entries (0: the default of
    /// [`kevent_worker::ring_capacity`]).
    pub ring: usize,
    /// The kevent back-ends' lease and reap interval (see [`kevent::Builder::lease`]);
    /// `None`: the library's defaults.
    pub lease: Option<std::time::Duration>,
    /// Worker 0 stops for a while every period (the tail-latency run).
    pub stall: Option<Stall>,
}

/// Runs the server until it fails. `args` are the command-line arguments, which
/// `kevent-procs` passes on to its worker processes.
pub fn run(cfg: &Config, args: &[String]) -> io::Result<()> {
    match cfg.backend {
        Backend::KeventThreads => kevent_threads::run(cfg),
        Backend::KeventProcs => kevent_procs::run(cfg, args),
        Backend::EpollReuseport => epoll_reuseport::run(cfg),
        Backend::EpollExclusive => epoll_exclusive::run(cfg),
        Backend::Tokio => tokio_rt::run(cfg),
    }
}

/// Starts `n` worker threads running `work(i)`; returns the first one's failure (workers
/// serve for ever, so one that returns has failed; the others are left to the process's
/// exit).
fn spawn_workers<F>(n: usize, work: F) -> io::Result<()>
where
    F: Fn(usize) -> io::Result<Infallible> + Send + Sync + 'static,
{
    let work = Arc::new(work);
    let (tx, rx) = mpsc::channel();
    for i in 0..n {
        let (work, tx) = (Arc::clone(&work), tx.clone());
        std::thread::Builder::new()
            .name(format!("httpd-worker-{i}"))
            .spawn(move || {
                let Err(e) = work(i);
                let _ = tx.send(io::Error::new(e.kind(), format!("worker {i}: {e}")));
            })?;
    }
    drop(tx);
    Err(rx
        .recv()
        .unwrap_or_else(|_| io::Error::other("every worker thread ended")))
}

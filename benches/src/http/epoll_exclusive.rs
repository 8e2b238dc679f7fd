//! `epoll-exclusive`: one listening socket in every worker's epoll fd with
//! `EPOLLEXCLUSIVE` (Linux 4.5; nginx's `accept_mutex off` with exclusive wake-ups), so
//! a new connection wakes one waiting worker instead of all. A connection stays in the
//! epoll fd of the worker that accepted it.

use std::io;
use std::sync::Arc;

use super::epoll_worker::EpollWorker;
use super::stall::StallClock;
use super::{listener, spawn_workers, Config};

/// Runs the server (for ever, or until a worker fails).
pub fn run(cfg: &Config) -> io::Result<()> {
    let listener = Arc::new(listener::bind(cfg.addr, false)?);
    listener::announce(&listener)?;
    let stall = cfg.stall;
    spawn_workers(cfg.workers, move |i| {
        let clock = StallClock::new(stall.filter(|_| i == 0));
        EpollWorker::new(&listener, true, clock)?.run()
    })
}

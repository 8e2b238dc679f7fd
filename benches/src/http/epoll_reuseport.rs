//! `epoll-reuseport`: nginx's `listen ... reuseport` layout, the set-up nginx and
//! libevent recommend for many cores — each worker its own listening socket on the same
//! port (`SO_REUSEPORT`, the kernel spreads connections by hash) and its own epoll fd.
//! No shared state at all; the price is that a connection belongs to the worker whose
//! socket the hash picked, busy or stalled.

use std::io;
use std::sync::Arc;

use super::epoll_worker::EpollWorker;
use super::stall::StallClock;
use super::{listener, spawn_workers, Config};

/// Runs the server (for ever, or until a worker fails).
pub fn run(cfg: &Config) -> io::Result<()> {
    let first = listener::bind(cfg.addr, true)?;
    let addr = first.local_addr()?;
    let mut listeners = vec![Arc::new(first)];
    for _ in 1..cfg.workers {
        listeners.push(Arc::new(listener::bind(addr, true)?));
    }
    listener::announce(&listeners[0])?;
    let stall = cfg.stall;
    spawn_workers(cfg.workers, move |i| {
        let clock = StallClock::new(stall.filter(|_| i == 0));
        EpollWorker::new(&listeners[i], false, clock)?.run()
    })
}

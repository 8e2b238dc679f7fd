//! `kevent-threads`: N worker threads share one queue, and everything is in it — the
//! listening socket (`ACCEPT`, level-triggered, so a worker that stops accepting after
//! a batch leaves the rest reported again) and every connection. A wait wakes one
//! worker and hands it a batch of whatever is ready: any worker serves any connection,
//! so no connection is stuck behind a busy (or stopped) worker, and there is no
//! thundering herd on the listener.

use std::io;
use std::sync::Arc;

use kevent::{Interest, Source, Trigger};

use super::kevent_worker::{self, LISTENER};
use super::stall::StallClock;
use super::table::ConnTable;
use super::{listener, spawn_workers, Config};

/// Runs the server (for ever, or until a worker fails).
pub fn run(cfg: &Config) -> io::Result<()> {
    let listener = listener::bind(cfg.addr, false)?;
    let queue = kevent_worker::builder(cfg.ring, cfg.lease).build()?;
    queue.add(
        &Source::socket(&listener, Interest::ACCEPT),
        LISTENER,
        Trigger::Level,
    )?;
    listener::announce(&listener)?;
    let shared = Arc::new((queue, ConnTable::new(), listener));
    let (stall, trigger, batch) = (cfg.stall, cfg.trigger, cfg.batch);
    spawn_workers(cfg.workers, move |i| {
        let (queue, table, listener) = &*shared;
        let clock = StallClock::new(stall.filter(|_| i == 0));
        kevent_worker::run(queue, table, Some(listener), trigger, batch, clock)
    })
}

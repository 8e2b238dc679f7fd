//! The epoll worker both epoll back-ends run, written as nginx's event module does it
//! (`ngx_epoll_module.c`): one epoll fd per worker; the listening socket level-triggered
//! (`EPOLLIN`, plus `EPOLLEXCLUSIVE` when every worker watches the same one);
//! each connection added once, `EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET`, and never
//! modified; closed without `EPOLL_CTL_DEL` (closing the last fd removes it from the
//! set, and nginx skips the call too). Up to 512 events per `epoll_wait`, nginx's default.
//! The connections are the worker's alone: a plain vector indexed by fd, no locks.

use std::convert::Infallible;
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};

use rustix::buffer::spare_capacity;
use rustix::event::epoll::{self, CreateFlags, Event, EventData, EventFlags};
use rustix::io::Errno;

use super::conn::{Conn, Step};
use super::listener::{self, ACCEPT_BATCH};
use super::stall::StallClock;

/// The listener's epoll data (no fd has this number).
const LISTENER: u64 = u64::MAX;

/// Events per `epoll_wait` (nginx's `worker_connections`-independent default, 512).
const EVENTS: usize = 512;

/// One worker: its epoll fd, its listener, its connections.
pub struct EpollWorker<'l> {
    ep: OwnedFd,
    listener: &'l TcpListener,
    conns: Vec<Option<Conn>>,
    events: Vec<Event>,
    stall: StallClock,
}

impl<'l> EpollWorker<'l> {
    /// A worker accepting from `listener`; `exclusive` adds it with `EPOLLEXCLUSIVE`
    /// (every worker's epoll holds the same listener, and a connection wakes one).
    pub fn new(listener: &'l TcpListener, exclusive: bool, stall: StallClock) -> io::Result<Self> {
        let ep = epoll::create(CreateFlags::CLOEXEC)?;
        let mut flags = EventFlags::IN;
        if exclusive {
            flags |= EventFlags::EXCLUSIVE;
        }
        epoll::add(&ep, listener, EventData::new_u64(LISTENER), flags)?;
        Ok(EpollWorker {
            ep,
            listener,
            conns: Vec::new(),
            events: Vec::with_capacity(EVENTS),
            stall,
        })
    }

    /// Serves for ever: returns only on an error.
    pub fn run(&mut self) -> io::Result<Infallible> {
        loop {
            self.events.clear();
            match epoll::wait(&self.ep, spare_capacity(&mut self.events), None) {
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
            self.stall.check();
            for i in 0..self.events.len() {
                let ev = self.events[i];
                match ev.data.u64() {
                    LISTENER => self.accept()?,
                    fd => self.serve(fd as usize, ev.flags),
                }
            }
        }
    }

    fn accept(&mut self) -> io::Result<()> {
        for _ in 0..ACCEPT_BATCH {
            let stream = match listener::accept(self.listener) {
                Ok(s) => s,
                // Another worker took it (EPOLLEXCLUSIVE may wake more than one).
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if listener::is_transient(&e) => continue,
                Err(e) => return Err(e),
            };
            let fd = stream.as_raw_fd() as usize;
            let flags = EventFlags::IN | EventFlags::OUT | EventFlags::RDHUP | EventFlags::ET;
            if let Err(e) = epoll::add(&self.ep, &stream, EventData::new_u64(fd as u64), flags) {
                eprintln!("kevent-httpd: epoll add fd {fd}: {e}; closing the connection");
                continue;
            }
            if self.conns.len() <= fd {
                self.conns.resize_with(fd + 1, || None);
            }
            self.conns[fd] = Some(Conn::new(stream));
        }
        Ok(())
    }

    fn serve(&mut self, fd: usize, flags: EventFlags) {
        let Some(conn) = self.conns.get_mut(fd).and_then(Option::as_mut) else {
            return;
        };
        let step = if flags
            .intersects(EventFlags::IN | EventFlags::RDHUP | EventFlags::HUP | EventFlags::ERR)
        {
            conn.on_readable()
        } else if conn.has_output() {
            conn.on_writable()
        } else {
            return; // EPOLLOUT with nothing to write (the edge after connecting)
        };
        if step == Step::Close {
            self.conns[fd] = None;
        }
    }
}

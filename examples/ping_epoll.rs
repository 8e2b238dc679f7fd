//! A pre-forked Redis `PING` server on plain epoll, written the way such servers usually
//! are — the baseline for `ping_kevent.rs` (both are measured by
//! `examples/bench_ping.sh`).
//!
//! ```text
//! cargo run --release --example ping_epoll -- --port 6391 --workers 2
//! redis-benchmark -h 127.0.0.1 -p 6391 -t ping -n 200000 -c 50 -q
//! ```
//!
//! # Design
//!
//! * **The parent** binds `127.0.0.1:PORT`, forks the workers and supervises them:
//!   `SIGINT`/`SIGTERM` stop the workers and the server; a worker that dies is reported
//!   and not replaced, the others keep serving.
//! * **Each worker** creates its own epoll fd after the fork and adds the inherited
//!   listener with `EPOLLIN | EPOLLEXCLUSIVE` (Linux 4.5+): a connection wakes one (or a
//!   few) of the workers asleep on the listener instead of all of them. Level-triggered:
//!   the worker accepts until `EAGAIN`, at most [`ACCEPT_BATCH`] per wake-up (the same
//!   limit as the kevent server), and what is left is reported again.
//! * Its connections go into the same epoll fd (`EPOLLIN`, level-triggered, data = fd);
//!   a reply that does not fit the socket buffer switches the connection to `EPOLLOUT`
//!   until it is written. On EOF or error the fd is closed (which removes it from the
//!   epoll set: nothing else holds it).
//! * One blocking `epoll_wait` loop per worker, so an idle worker sleeps and wakes for
//!   either a connection or a request. The wait has a 1 s timeout only to notice
//!   `SIGTERM` if it arrives just before the call.
//!
//! # Protocol
//!
//! Enough RESP for `redis-benchmark -t ping`: `PING` inline (`PING\r\n`) or as a RESP
//! array (`*1\r\n$4\r\nPING\r\n`) gets `+PONG\r\n`; any other command gets
//! `-ERR unknown command`; a malformed request gets `-ERR Protocol error` and the
//! connection is closed. Pipelined requests (several in one read) and requests split
//! across reads are handled. The protocol and process code is shared with
//! `ping_kevent.rs` (`examples/ping_common/`), so that only the event loops differ.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use rustix::event::epoll;
use rustix::io::Errno;

const NAME: &str = "ping_epoll";
const DEFAULT_PORT: u16 = 6391;
/// The listener's token in each worker's epoll set.
const LISTENER_TOKEN: u64 = u64::MAX;
/// Connections accepted per wake-up at most (as in `ping_kevent.rs`).
const ACCEPT_BATCH: usize = 16;
/// Events taken per `epoll_wait`.
const BATCH: usize = 256;
/// `epoll_wait`'s timeout: only for noticing `SIGTERM` (see the module docs).
const WAIT: Duration = Duration::from_secs(1);

struct Config {
    port: u16,
    workers: usize,
}

const USAGE: &str = "\
usage: ping_epoll [--port N] [--workers N]

A pre-forked Redis PING server on epoll: each worker has its own epoll fd with
the shared listener (EPOLLEXCLUSIVE) and its connections.

  --port N        TCP port on 127.0.0.1 (default 6391)
  --workers N     worker processes, 1..=64 (default 2)
  -h, --help      this text

SIGINT/SIGTERM stop the workers and the server.";

fn parse_args() -> Result<Config, String> {
    let mut cfg = Config {
        port: DEFAULT_PORT,
        workers: 2,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        if name == "-h" || name == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name.as_str() {
            "--port" => {
                let v = value()?;
                cfg.port = v
                    .parse()
                    .map_err(|_| format!("--port: {v:?} is not a port number"))?;
            }
            "--workers" => {
                let v = value()?;
                cfg.workers = v
                    .parse()
                    .ok()
                    .filter(|w| (1..=64).contains(w))
                    .ok_or_else(|| format!("--workers: {v:?} is not a number in 1..=64"))?;
            }
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    Ok(cfg)
}

fn main() {
    let cfg = match parse_args() {
        Ok(cfg) => cfg,
        Err(msg) => {
            eprintln!("{NAME}: {msg}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    match run(&cfg) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("{NAME}: {e}");
            std::process::exit(1);
        }
    }
}

/// Adds what was being done to an error.
fn context<E: Into<io::Error>>(what: impl std::fmt::Display) -> impl FnOnce(E) -> io::Error {
    move |e| {
        let e: io::Error = e.into();
        io::Error::new(e.kind(), format!("{what}: {e}"))
    }
}

/// The parent: listener, workers, supervision. Returns the exit status.
fn run(cfg: &Config) -> io::Result<i32> {
    let listener = TcpListener::bind(("127.0.0.1", cfg.port))
        .map_err(context(format!("binding 127.0.0.1:{}", cfg.port)))?;
    listener
        .set_nonblocking(true)
        .map_err(context("making the listener non-blocking"))?;

    let signals = process::block_signals()?;
    let mut pids = Vec::with_capacity(cfg.workers);
    for index in 0..cfg.workers {
        let listener = &listener;
        match process::fork_worker(|| worker_main(index, listener)) {
            Ok(pid) => pids.push(pid),
            Err(e) => {
                process::stop_workers(&mut pids);
                return Err(context("fork")(e));
            }
        }
    }
    println!(
        "{NAME}: serving PING on 127.0.0.1:{} with {} workers (pids {pids:?}), one epoll fd per worker",
        cfg.port, cfg.workers
    );
    Ok(process::supervise(NAME, &signals, &mut pids))
}

/// A worker process's body: its exit status.
fn worker_main(index: usize, listener: &TcpListener) -> i32 {
    let mut stats = Stats::default();
    let result = Worker::new(listener).and_then(|mut w| w.run(&mut stats));
    let me = format!("{NAME}: worker {index} (pid {})", std::process::id());
    let (code, line) = match result {
        Ok(()) => (
            0,
            format!(
                "{me}: accepted {} connections, answered {} PINGs\n",
                stats.accepted, stats.pings
            ),
        ),
        Err(e) => (1, format!("{me}: {e}\n")),
    };
    // One write, so that the workers' lines do not interleave.
    let _ = io::Write::write_all(&mut io::stderr(), line.as_bytes());
    code
}

#[derive(Default)]
struct Stats {
    accepted: u64,
    pings: u64,
}

/// One worker: its epoll fd, holding the listener and its connections.
struct Worker<'a> {
    listener: &'a TcpListener,
    epoll: OwnedFd,
    /// Connections by fd number.
    conns: Vec<Option<resp::Conn>>,
    events: Vec<epoll::Event>,
    scratch: Vec<u8>,
    last_accept_warning: Option<Instant>,
}

impl<'a> Worker<'a> {
    fn new(listener: &'a TcpListener) -> io::Result<Self> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(context("epoll_create"))?;
        epoll::add(
            &epoll,
            listener,
            epoll::EventData::new_u64(LISTENER_TOKEN),
            epoll::EventFlags::IN | epoll::EventFlags::EXCLUSIVE,
        )
        .map_err(context("adding the listener (EPOLLEXCLUSIVE)"))?;
        Ok(Worker {
            listener,
            epoll,
            conns: Vec::new(),
            events: Vec::with_capacity(BATCH),
            scratch: vec![0; resp::READ_SIZE],
            last_accept_warning: None,
        })
    }

    fn run(&mut self, stats: &mut Stats) -> io::Result<()> {
        let timeout = rustix::time::Timespec {
            tv_sec: WAIT.as_secs() as i64,
            tv_nsec: 0,
        };
        while !process::stopping() {
            self.events.clear();
            match epoll::wait(
                &self.epoll,
                rustix::buffer::spare_capacity(&mut self.events),
                Some(&timeout),
            ) {
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(e) => return Err(context("epoll_wait")(e)),
            }
            for i in 0..self.events.len() {
                let (token, flags) = (self.events[i].data.u64(), self.events[i].flags);
                if token == LISTENER_TOKEN {
                    self.accept_some(stats)?;
                } else {
                    self.serve(token as RawFd, flags, stats)?;
                }
            }
        }
        Ok(())
    }

    /// Accepts until `EAGAIN`, at most [`ACCEPT_BATCH`] connections.
    fn accept_some(&mut self, stats: &mut Stats) -> io::Result<()> {
        let listener = self.listener;
        let mut warned = self.last_accept_warning.take();
        let result = accept::accept_some(listener, ACCEPT_BATCH, NAME, &mut warned, |fd| {
            self.add_conn(fd)
        });
        self.last_accept_warning = warned;
        stats.accepted += result? as u64;
        Ok(())
    }

    fn add_conn(&mut self, fd: OwnedFd) -> io::Result<()> {
        // Replies are single small writes: don't let Nagle hold them (as Redis does).
        let _ = rustix::net::sockopt::set_tcp_nodelay(&fd, true);
        let raw = fd.as_raw_fd();
        if let Err(e) = epoll::add(
            &self.epoll,
            &fd,
            epoll::EventData::new_u64(raw as u64),
            epoll::EventFlags::IN,
        ) {
            // This connection only: drop it (closing it), keep serving the others.
            eprintln!("{NAME}: adding connection fd {raw} to epoll: {e}");
            return Ok(());
        }
        let slot = raw as usize;
        if self.conns.len() <= slot {
            self.conns.resize_with(slot + 1, || None);
        }
        self.conns[slot] = Some(resp::Conn::new(fd));
        Ok(())
    }

    /// One event of connection `fd`.
    fn serve(&mut self, fd: RawFd, flags: epoll::EventFlags, stats: &mut Stats) -> io::Result<()> {
        use epoll::EventFlags as F;
        let Some(Some(conn)) = self.conns.get_mut(fd as usize) else {
            return Ok(()); // closed earlier in this batch
        };
        let step = if conn.want_write() {
            if !flags.intersects(F::OUT | F::ERR | F::HUP) {
                return Ok(());
            }
            conn.on_writable()
        } else {
            if !flags.intersects(F::IN | F::ERR | F::HUP | F::RDHUP) {
                return Ok(());
            }
            conn.on_readable(&mut self.scratch, &mut stats.pings)
        };
        let interest = match step {
            resp::Step::Keep => return Ok(()),
            resp::Step::WantWrite => F::OUT,
            resp::Step::WantRead => F::IN,
            resp::Step::Close => {
                // Closing the only fd of the socket removes it from the epoll set.
                self.conns[fd as usize] = None;
                return Ok(());
            }
        };
        let conn = self.conns[fd as usize].as_ref().expect("still open");
        if let Err(e) = epoll::modify(
            &self.epoll,
            &conn.fd,
            epoll::EventData::new_u64(fd as u64),
            interest,
        ) {
            eprintln!("{NAME}: changing the interest of connection fd {fd}: {e}; closing it");
            self.conns[fd as usize] = None;
        }
        Ok(())
    }
}

/// Just enough RESP for `PING`. (shared with the other PING example)
#[path = "ping_common/resp.rs"]
mod resp;

/// Forking workers, signals, supervision. (shared with the other PING example)
#[path = "ping_common/process.rs"]
mod process;

/// Accepting a batch of connections (shared with the other PING example).
#[path = "ping_common/accept.rs"]
mod accept;

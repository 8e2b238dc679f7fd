//! A pre-forked Redis `PING` server on kevent queues (compare `ping_epoll.rs`; both are
//! measured by `examples/bench_ping.sh`).
//!
//! ```text
//! cargo run --release --example ping_kevent -- --port 6390 --workers 2
//! redis-benchmark -h 127.0.0.1 -p 6390 -t ping -n 200000 -c 50 -q
//! ```
//!
//! # Design
//!
//! * **The parent** binds `127.0.0.1:PORT`, creates ONE kevent queue *paused*
//!   (`Instance::create_paused`: no thread may exist at `fork`), adds the listening socket to
//!   it (`KEVENT_SOCKET` + `KEVENT_SOCKET_ACCEPT`, level-triggered, default wake-one),
//!   registers it to get a handle, forks the workers, and only then starts the queue's
//!   producer thread. Afterwards it just supervises: `SIGINT`/`SIGTERM` stop the workers
//!   and the server; a worker that dies is reported and *not* replaced (the parent has
//!   threads now, so it must not fork again) — the others keep serving.
//! * **Accepting** (the shared queue). A worker takes the listener's entry with
//!   `kevent_wait` (its first call through the inherited handle attaches the process as
//!   a consumer of its own), accepts up to [`ACCEPT_BATCH`] connections (non-blocking,
//!   until `EAGAIN`), and only then `kevent_commit`s. A level-triggered kevent has at most
//!   one entry outstanding and is re-checked at the commit, so no other worker is woken
//!   for connections this one is already accepting, and exactly one sleeper is woken for
//!   a connection that arrives later: no thundering herd (a busy worker peeking at the
//!   ring may still take the entry first; the woken one then goes back to sleep). A
//!   worker killed while holding the entry delays accepting by at most the reap interval
//!   (100 ms): the entry is delivered again, flagged `KEVENT_RET_REDELIVERED`.
//! * **Connections** (one queue per worker). fds are per process, so connections cannot
//!   live in the shared queue: each worker `kevent_init`s its OWN queue after the fork.
//!   Its consumer is in the owning process, so it harvests the queue's epoll itself (no
//!   hop through the producer thread). Each connection is `KEVENT_SOCKET` + `RECV`
//!   (level-triggered, `KEVENT_REQ_ALWAYS_QUEUE` so that data already there at ADD is
//!   queued rather than returned by ADD, cookie = fd); a reply that does not fit the
//!   socket buffer switches it to `SEND` (`KEVENT_CTL_MODIFY`) until it is written. On
//!   EOF or error the kevent is removed (`KEVENT_CTL_REMOVE`: the queue holds a duplicate
//!   of the fd, so closing ours alone would not close the socket) and the fd closed.
//!   The own queue is drained with `kevent_get_events`, which commits before we read;
//!   the level re-check of a committed entry runs at the queue's next harvest, normally
//!   our next call, after the read, so reads that find nothing are rare (11 in 27,000
//!   under `strace`). `--own-call wait` (`kevent_wait`, commit after reading) was slower
//!   here: that wait sleeps on the ring and the producer thread has to wake it, where
//!   `kevent_get_events` blocks in the queue's `epoll_wait` itself.
//! * **No spinning** by default (`--spin-us 0`, `Queue::set_spin`): the library's 20 µs
//!   spin before sleeping took CPU from `redis-benchmark` on a 2-CPU machine and cost
//!   ~15% of the throughput there.
//!
//! # The price of two queues
//!
//! The shared queue has no fd another event loop could poll from a child process, so a
//! worker cannot sleep on both queues at once. It alternates:
//!
//! * with no connections, it blocks on the shared queue (`kevent_wait`, 50 ms timeout, to
//!   notice `SIGTERM`): an idle worker sleeps and is woken at once for a connection;
//! * with connections, it looks at the shared queue without blocking, then waits on its
//!   own queue for at most [`OWN_WAIT`] (2 ms). The look is a load from the shared ring
//!   (`Ring::has_claimable`), and `kevent_wait` is called only when there is an entry: a
//!   zero-timeout `kevent_wait` on an empty ring still counts itself a sleeper and makes
//!   a `futex` call, which was ~40% of a busy worker's CPU samples (`perf`).
//!
//! Cost: a worker whose connections are all idle wakes up 500 times a second; and when
//! every worker has connections (nobody asleep on the shared queue), a new connection
//! waits up to 2 ms to be accepted. epoll has neither problem: a worker sleeps on one
//! epoll fd holding the listener (`EPOLLEXCLUSIVE`) and its connections.
//!
//! # Protocol
//!
//! Enough RESP for `redis-benchmark -t ping`: `PING` inline (`PING\r\n`) or as a RESP
//! array (`*1\r\n$4\r\nPING\r\n`) gets `+PONG\r\n`; any other command gets
//! `-ERR unknown command`; a malformed request gets `-ERR Protocol error` and the
//! connection is closed. Pipelined requests (several in one read) and requests split
//! across reads are handled. The protocol and process code is shared with
//! `ping_epoll.rs` (`examples/ping_common/`), so that only the event loops differ.

use std::io::{self, ErrorKind};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kevent_syscalls::*;

const NAME: &str = "ping_kevent";
const DEFAULT_PORT: u16 = 6390;
/// The listener's cookie in the shared queue.
const LISTENER_COOKIE: u64 = 0x4c15_7e4e;
/// Connections accepted per wake-up at most, so that a burst is spread over workers.
const ACCEPT_BATCH: usize = 16;
/// How long a worker with connections waits on its own queue before it looks at the
/// shared queue again.
const OWN_WAIT: Duration = Duration::from_millis(2);
/// How long a worker without connections sleeps on the shared queue before it checks
/// whether it has been told to stop.
const IDLE_WAIT: Duration = Duration::from_millis(50);
/// Events taken from the own queue per call.
const BATCH: usize = 256;
/// Entries of each worker's own ring (a level-triggered kevent has at most one; more
/// connections than this wait in the queue's backlog, nothing is lost).
const OWN_RING: u32 = 1024;

/// How a worker takes events from its own queue.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum OwnCall {
    /// `kevent_get_events`: copies and commits at once; a consumer of the owning process
    /// blocks in the queue's `epoll_wait` itself.
    GetEvents,
    /// `kevent_wait` + `kevent_commit` after the sockets are read: no re-delivery, but
    /// the wait sleeps on the ring and the producer thread wakes it.
    Wait,
}

struct Config {
    port: u16,
    workers: usize,
    own_call: OwnCall,
    spin: Duration,
}

const USAGE: &str = "\
usage: ping_kevent [--port N] [--workers N] [--own-call get-events|wait] [--spin-us N]

A pre-forked Redis PING server on kevent queues: one shared queue holds the
listening socket (wake-one), each worker has its own queue for its connections.

  --port N        TCP port on 127.0.0.1 (default 6390)
  --workers N     worker processes, 1..=64 (default 2)
  --own-call C    how a worker drains its own queue: get-events (default) or wait
  --spin-us N     how long a worker harvests its own queue without blocking before
                  it sleeps, in microseconds (default 0; the library's default is 20)
  -h, --help      this text

SIGINT/SIGTERM stop the workers and the server.";

fn parse_args() -> Result<Config, String> {
    let mut cfg = Config {
        port: DEFAULT_PORT,
        workers: 2,
        own_call: OwnCall::GetEvents,
        spin: Duration::ZERO,
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
            "--own-call" => {
                let v = value()?;
                cfg.own_call = match v.as_str() {
                    "get-events" => OwnCall::GetEvents,
                    "wait" => OwnCall::Wait,
                    _ => return Err(format!("--own-call: {v:?} is not get-events or wait")),
                };
            }
            "--spin-us" => {
                let v = value()?;
                let us: u64 = v
                    .parse()
                    .map_err(|_| format!("--spin-us: {v:?} is not a number"))?;
                cfg.spin = Duration::from_micros(us);
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

/// The parent: listener, shared queue, workers, supervision. Returns the exit status.
fn run(cfg: &Config) -> io::Result<i32> {
    let listener = TcpListener::bind(("127.0.0.1", cfg.port))
        .map_err(context(format!("binding 127.0.0.1:{}", cfg.port)))?;
    listener
        .set_nonblocking(true)
        .map_err(context("making the listener non-blocking"))?;

    let q = Instance::create_paused(0, 0, DEFAULT_REAP_INTERVAL)
        .map_err(context("creating the shared kevent queue"))?;
    let shared = register(q.clone());
    let mut ev = [Ukevent {
        id: listener.as_raw_fd() as u64,
        type_: KEVENT_SOCKET,
        event: KEVENT_SOCKET_ACCEPT,
        req_flags: KEVENT_REQ_ALWAYS_QUEUE,
        user: LISTENER_COOKIE,
        ..Default::default()
    }];
    let reported = kevent_ctl(shared, KEVENT_CTL_ADD, &mut ev)
        .map_err(context("adding the listener to the shared queue"))?;
    if reported > 0 && ev[0].ret_flags & KEVENT_RET_BROKEN != 0 {
        return Err(context("adding the listener to the shared queue")(
            io::Error::from_raw_os_error(ev[0].ret_data[1] as i32),
        ));
    }

    let signals = process::block_signals()?;
    let mut pids = Vec::with_capacity(cfg.workers);
    for index in 0..cfg.workers {
        let (own_call, spin, listener) = (cfg.own_call, cfg.spin, &listener);
        match process::fork_worker(|| worker_main(index, listener, shared, own_call, spin)) {
            Ok(pid) => pids.push(pid),
            Err(e) => {
                process::stop_workers(&mut pids);
                return Err(context("fork")(e));
            }
        }
    }
    // Threads only now: the children are forked.
    if let Err(e) = q.start() {
        process::stop_workers(&mut pids);
        return Err(context("starting the shared queue's producer")(e));
    }
    println!(
        "{NAME}: serving PING on 127.0.0.1:{} with {} workers (pids {pids:?}), one shared kevent queue for accepting",
        cfg.port, cfg.workers
    );
    let code = process::supervise(NAME, &signals, &mut pids);
    let _ = kevent_close(shared);
    Ok(code)
}

/// A worker process's body: its exit status.
fn worker_main(
    index: usize,
    listener: &TcpListener,
    shared: RawFd,
    own_call: OwnCall,
    spin: Duration,
) -> i32 {
    let mut stats = Stats::default();
    let result = Worker::new(listener, shared, own_call, spin).and_then(|mut w| {
        let r = w.run(&mut stats);
        w.close();
        r
    });
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

/// One worker: the shared queue (accepting) and its own queue (connections).
struct Worker<'a> {
    listener: &'a TcpListener,
    shared: RawFd,
    shared_q: Arc<Instance>,
    own: RawFd,
    own_q: Arc<Instance>,
    own_call: OwnCall,
    /// Connections by fd number.
    conns: Vec<Option<resp::Conn>>,
    live: usize,
    events: Vec<Ukevent>,
    scratch: Vec<u8>,
    last_accept_warning: Option<Instant>,
}

impl<'a> Worker<'a> {
    fn new(
        listener: &'a TcpListener,
        shared: RawFd,
        own_call: OwnCall,
        spin: Duration,
    ) -> io::Result<Self> {
        // The first call through the inherited handle attaches this process as a consumer
        // (it asks the parent's gate, which runs once the parent has started the queue).
        let end = Instant::now() + Duration::from_secs(5);
        let shared_q = loop {
            match instance(shared) {
                Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < end => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                r => break r.map_err(context("attaching to the shared queue"))?,
            }
        };
        let own = kevent_init(OWN_RING, 0).map_err(context("kevent_init (own queue)"))?;
        let own_q = instance(own)?;
        own_q.set_spin(spin);
        Ok(Worker {
            listener,
            shared,
            shared_q,
            own,
            own_q,
            own_call,
            conns: Vec::new(),
            live: 0,
            events: vec![Ukevent::default(); BATCH],
            scratch: vec![0; resp::READ_SIZE],
            last_accept_warning: None,
        })
    }

    fn run(&mut self, stats: &mut Stats) -> io::Result<()> {
        while !process::stopping() {
            if self.live == 0 {
                // Nothing else to do: sleep on the shared queue (woken for a connection).
                self.accept_round(IDLE_WAIT, stats)?;
            } else {
                self.accept_round(Duration::ZERO, stats)?;
                self.own_round(stats)?;
            }
        }
        Ok(())
    }

    /// Takes the listener's entry from the shared queue (waiting up to `timeout`),
    /// accepts, then commits: the level re-check at the commit wakes one other worker if
    /// connections are still waiting.
    fn accept_round(&mut self, timeout: Duration, stats: &mut Stats) -> io::Result<()> {
        if timeout.is_zero() && !self.shared_q.ring().has_claimable() {
            return Ok(());
        }
        let old = self.shared_q.ring().uidx();
        let claim = match kevent_wait(self.shared, 1, old, Some(timeout.as_nanos() as u64), 0) {
            Ok(c) => c,
            Err(e) if e.kind() == ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(context("kevent_wait (shared queue)")(e)),
        };
        if claim.is_empty() {
            return Ok(()); // timeout, or a stale view of uidx: look again next round
        }
        let mut listener_ready = false;
        for pos in claim.start..claim.end {
            // Entries come from memory every worker can write: trust only the cookie.
            if let Some(ev) = self.shared_q.entry(pos) {
                listener_ready |= ev.user == LISTENER_COOKIE;
            }
        }
        if listener_ready {
            self.accept_some(stats)?;
        }
        let (idx, over) = self.shared_q.ring().kevent_view(claim.end);
        kevent_commit(self.shared, idx, over).map_err(context("kevent_commit (shared queue)"))?;
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
        let mut ev = [self.kevent(raw, KEVENT_SOCKET_RECV)];
        let reported =
            kevent_ctl(self.own, KEVENT_CTL_ADD, &mut ev).map_err(context("kevent_ctl ADD"))?;
        if reported > 0 && ev[0].ret_flags & KEVENT_RET_BROKEN != 0 {
            // This connection only: drop it (closing it), keep serving the others.
            let err = io::Error::from_raw_os_error(ev[0].ret_data[1] as i32);
            eprintln!("{NAME}: adding connection fd {raw} to the own queue: {err}");
            return Ok(());
        }
        let slot = raw as usize;
        if self.conns.len() <= slot {
            self.conns.resize_with(slot + 1, || None);
        }
        self.conns[slot] = Some(resp::Conn::new(fd));
        self.live += 1;
        Ok(())
    }

    /// The own-queue kevent of connection `fd` with interest `event`.
    fn kevent(&self, fd: RawFd, event: u32) -> Ukevent {
        Ukevent {
            id: fd as u64,
            type_: KEVENT_SOCKET,
            event,
            // Level-triggered; data that is there at ADD is queued, not returned by ADD.
            req_flags: KEVENT_REQ_ALWAYS_QUEUE,
            user: fd as u64,
            ..Default::default()
        }
    }

    /// Waits up to [`OWN_WAIT`] for connection events and serves them.
    fn own_round(&mut self, stats: &mut Stats) -> io::Result<()> {
        let timeout = Some(OWN_WAIT.as_nanos() as u64);
        match self.own_call {
            OwnCall::GetEvents => {
                let n = match kevent_get_events(
                    self.own,
                    1,
                    BATCH as u32,
                    timeout,
                    &mut self.events,
                    0,
                ) {
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => return Ok(()),
                    Err(e) => return Err(context("kevent_get_events (own queue)")(e)),
                };
                for i in 0..n {
                    let ev = self.events[i];
                    self.serve(ev, stats)?;
                }
            }
            OwnCall::Wait => {
                let old = self.own_q.ring().uidx();
                let claim = match kevent_wait(self.own, BATCH as u32, old, timeout, 0) {
                    Ok(c) => c,
                    Err(e) if e.kind() == ErrorKind::Interrupted => return Ok(()),
                    Err(e) => return Err(context("kevent_wait (own queue)")(e)),
                };
                if claim.is_empty() {
                    return Ok(());
                }
                for pos in claim.start..claim.end {
                    if let Some(ev) = self.own_q.entry(pos) {
                        self.serve(ev, stats)?;
                    }
                }
                // Committed after reading: the level re-check finds the sockets drained.
                let (idx, over) = self.own_q.ring().kevent_view(claim.end);
                kevent_commit(self.own, idx, over).map_err(context("kevent_commit (own queue)"))?;
            }
        }
        Ok(())
    }

    /// One event of connection `ev.user`.
    fn serve(&mut self, ev: Ukevent, stats: &mut Stats) -> io::Result<()> {
        let fd = ev.user as usize;
        let Some(Some(conn)) = self.conns.get_mut(fd) else {
            return Ok(()); // closed meanwhile (an entry taken before the REMOVE)
        };
        let step = if conn.want_write() {
            if ev.event & KEVENT_SOCKET_SEND == 0 {
                return Ok(()); // an entry from before the MODIFY
            }
            conn.on_writable()
        } else {
            if ev.event & KEVENT_SOCKET_RECV == 0 {
                return Ok(());
            }
            conn.on_readable(&mut self.scratch, &mut stats.pings)
        };
        match step {
            resp::Step::Keep => Ok(()),
            resp::Step::WantWrite => self.interest(fd as RawFd, KEVENT_SOCKET_SEND),
            resp::Step::WantRead => self.interest(fd as RawFd, KEVENT_SOCKET_RECV),
            resp::Step::Close => self.close_conn(fd as RawFd),
        }
    }

    /// Switches connection `fd` to readable or writable.
    fn interest(&mut self, fd: RawFd, event: u32) -> io::Result<()> {
        let mut ev = [self.kevent(fd, event)];
        let failed = kevent_ctl(self.own, KEVENT_CTL_MODIFY, &mut ev)
            .map_err(context("kevent_ctl MODIFY"))?;
        if failed > 0 {
            let err = io::Error::from_raw_os_error(ev[0].ret_data[1] as i32);
            eprintln!("{NAME}: changing the interest of connection fd {fd}: {err}; closing it");
            return self.close_conn(fd);
        }
        Ok(())
    }

    fn close_conn(&mut self, fd: RawFd) -> io::Result<()> {
        // The queue holds a duplicate of the fd: remove the kevent, or the socket stays
        // open (and the fd number could not be added again).
        let mut ev = [self.kevent(fd, KEVENT_SOCKET_RECV)];
        kevent_ctl(self.own, KEVENT_CTL_REMOVE, &mut ev).map_err(context("kevent_ctl REMOVE"))?;
        if let Some(slot) = self.conns.get_mut(fd as usize) {
            if slot.take().is_some() {
                self.live -= 1;
            }
        }
        Ok(())
    }

    /// Leaves both queues and closes every connection.
    fn close(&mut self) {
        let _ = kevent_close(self.own); // closes the duplicates too
        self.conns.clear();
        let _ = kevent_close(self.shared); // this process's consumer leaves
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

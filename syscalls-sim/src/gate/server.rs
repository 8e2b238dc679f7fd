//! The gate's server side, in the owning process: one thread serving every listener and
//! connection with poll(2), validating and executing requests.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kevent_ring::{Ukevent, WakeFd};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{self, sockopt, RecvFlags, SendFlags, SocketAddrUnix, SocketFlags};

use super::*;
use crate::kernel::{Caller, KernelLock};
use crate::peer::PeerId;

/// What a gate serves.
#[derive(Clone)]
pub(crate) struct GateCtx {
    pub(crate) kernel: Arc<KernelLock>,
    /// To keep the producer thread from parking once a remote event loop relies on it.
    pub(crate) harvesters: Arc<crate::harvesters::Harvesters>,
    pub(crate) memfd: Arc<OwnedFd>,
    /// The doorbell's ringing end, which every attached process receives.
    pub(crate) doorbell: Arc<WakeFd>,
}

/// What the gate thread shares with the queue.
struct Shared {
    ctx: GateCtx,
    listeners: Mutex<Vec<Arc<OwnedFd>>>,
    /// Written to wake the gate thread (a new listener, or the close).
    wake: WakeFd,
    stop: AtomicBool,
}

/// A queue's gate in the owning process: its listeners and the one thread serving them.
pub(crate) struct Gate {
    shared: Arc<Shared>,
    addr: GateAddr,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Socket files to remove when the gate closes.
    paths: Mutex<Vec<PathBuf>>,
}

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Gate {
    /// A gate listening on a fresh abstract name the kernel picks; served once
    /// [`Gate::start`] runs (connections wait in the backlog until then).
    pub(crate) fn new(ctx: GateCtx) -> io::Result<Gate> {
        let listener = bind(&SocketAddrUnix::new_unnamed())?;
        let addr = SocketAddrUnix::try_from(net::getsockname(&listener)?)
            .map_err(|_| io::Error::other("kevent gate: autobind gave no Unix address"))?;
        if addr.abstract_name().is_none() {
            return Err(io::Error::other(
                "kevent gate: autobind gave no abstract name",
            ));
        }
        Ok(Gate {
            shared: Arc::new(Shared {
                ctx,
                listeners: Mutex::new(vec![Arc::new(listener)]),
                wake: WakeFd::private()?,
                stop: AtomicBool::new(false),
            }),
            addr: GateAddr {
                addr,
                pid: crate::pid::current(),
            },
            thread: Mutex::new(None),
            paths: Mutex::new(Vec::new()),
        })
    }

    /// The queue's own (abstract) gate and its owner.
    pub(crate) fn addr(&self) -> &GateAddr {
        &self.addr
    }

    /// Serves the gate at `path` too; the file is removed when the gate closes.
    pub(crate) fn listen(&self, path: &Path) -> io::Result<()> {
        let listener = bind(&SocketAddrUnix::new(path)?)?;
        guard(&self.paths).push(path.to_owned());
        guard(&self.shared.listeners).push(Arc::new(listener));
        self.wake();
        Ok(())
    }

    /// Starts the gate thread (a no-op if it runs, or ran, already).
    pub(crate) fn start(&self) -> io::Result<()> {
        let mut thread = guard(&self.thread);
        if thread.is_some() || self.shared.stop.load(Ordering::Acquire) {
            return Ok(());
        }
        let shared = self.shared.clone();
        *thread = Some(
            std::thread::Builder::new()
                .name("kevent-gate".into())
                .spawn(move || run(&shared))?,
        );
        Ok(())
    }

    fn wake(&self) {
        let _ = self.shared.wake.ring();
    }

    /// Ends the gate thread (its connections close: clients see `BrokenPipe`), shuts the
    /// listeners down — copies a forked child inherited can no longer accept, and
    /// connecting to the name is refused — and removes the socket files. Idempotent.
    pub(crate) fn close(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.wake();
        if let Some(t) = guard(&self.thread).take() {
            let _ = t.join();
        }
        for listener in guard(&self.shared.listeners).drain(..) {
            let _ = net::shutdown(&*listener, net::Shutdown::Both);
        }
        for path in guard(&self.paths).drain(..) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// In a `fork`ed child's copy: the gate thread exists only in the parent; its handle
    /// must be neither joined nor detached here.
    pub(crate) fn forget_thread(&self) {
        if let Some(t) = guard(&self.thread).take() {
            std::mem::forget(t);
        }
    }
}

/// One connection: the socket, whose registrations it carries (`peer.rs`), and the
/// process that connected (its pid, and a pidfd that becomes readable when it dies).
struct Conn {
    sock: OwnedFd,
    peer: PeerId,
    pid: u32,
    pidfd: Option<OwnedFd>,
}

/// Refusals (connections of another uid dropped, connections beyond a bound refused)
/// the gate makes per window before it stops accepting for the rest of the window: a
/// flood of connections it must refuse costs its thread a bounded share of a core.
const REFUSALS_PER_WINDOW: u32 = 256;
const REFUSAL_WINDOW: Duration = Duration::from_millis(100);

/// The gate thread: polls the wake fd, the listeners (unless accepting is paused after
/// an error or a flood of refusals), every connection and the pidfd of each connected
/// process; serves one request per ready connection per round, and drops a connection
/// whose process died (its kevents go with it, see `peer.rs`).
fn run(shared: &Shared) {
    let me = rustix::process::geteuid();
    let mut conns: Vec<Conn> = Vec::new();
    let mut buf = vec![0u8; HEADER + MAX_FRAME_ENTRIES * EV];
    let mut backoff = Duration::ZERO;
    let mut paused_until: Option<Instant> = None;
    let mut refusals = Refusals::new();
    let mut next_peer = 1u64;
    while !shared.stop.load(Ordering::Acquire) {
        let listeners = guard(&shared.listeners).clone();
        let now = Instant::now();
        let pause_left = paused_until.and_then(|t| t.checked_duration_since(now));
        let accepting = pause_left.is_none();
        let timeout = pause_left.and_then(|d| Timespec::try_from(d).ok());
        // Per connection: its socket's and its pidfd's index in the poll set.
        let mut slots = Vec::with_capacity(conns.len());
        let ready: Vec<bool> = {
            let mut pfds = Vec::with_capacity(1 + listeners.len() + 2 * conns.len());
            pfds.push(PollFd::new(&shared.wake, PollFlags::IN));
            if accepting {
                pfds.extend(listeners.iter().map(|l| PollFd::new(&**l, PollFlags::IN)));
            }
            for c in &conns {
                let sock = pfds.len();
                pfds.push(PollFd::new(&c.sock, PollFlags::IN));
                let pidfd = c.pidfd.as_ref().map(|p| {
                    pfds.push(PollFd::new(p, PollFlags::IN));
                    pfds.len() - 1
                });
                slots.push((sock, pidfd));
            }
            match poll(&mut pfds, timeout.as_ref()) {
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(_) => {
                    // ENOMEM: try again shortly.
                    std::thread::sleep(BACKOFF_MIN);
                    continue;
                }
            }
            pfds.iter().map(|p| !p.revents().is_empty()).collect()
        };
        if ready[0] {
            shared.wake.reset();
        }
        if shared.stop.load(Ordering::Acquire) {
            break;
        }
        // Highest index first: `swap_remove` moves an element already served.
        for i in (0..conns.len()).rev() {
            let (sock, pidfd) = slots[i];
            let died = pidfd.is_some_and(|p| ready[p]);
            let done = died
                || (ready[sock]
                    && !serve_one(conns[i].sock.as_fd(), &mut buf, &shared.ctx, conns[i].peer));
            if done {
                let gone = conns.swap_remove(i);
                // Its kevents, the fds held for it and its notify fd go now (`peer.rs`).
                if let Some(k) = shared.ctx.kernel.lock().as_mut() {
                    k.drop_peer(gone.peer);
                }
            }
        }
        if !accepting {
            continue;
        }
        paused_until = None;
        for (i, listener) in listeners.iter().enumerate() {
            if !ready[1 + i] {
                continue;
            }
            match accept_some(
                listener.as_fd(),
                me,
                &mut conns,
                &mut next_peer,
                &mut refusals,
            ) {
                Ok(()) => backoff = Duration::ZERO,
                Err(_) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM…: the connection stays in the
                    // backlog; stop polling the listeners for a while (they stay ready)
                    // and try again.
                    backoff = (backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
                    paused_until = Some(Instant::now() + backoff);
                    break;
                }
            }
        }
        if let Some(until) = refusals.exhausted() {
            // A flood of connections to refuse: the rest of them wait in the backlog
            // (and beyond it, are refused by the kernel for free) until the window ends.
            paused_until = Some(paused_until.map_or(until, |p| p.max(until)));
        }
    }
}

/// The refusal budget of the current window (see [`REFUSALS_PER_WINDOW`]).
struct Refusals {
    window: Instant,
    count: u32,
}

impl Refusals {
    fn new() -> Refusals {
        Refusals {
            window: Instant::now(),
            count: 0,
        }
    }

    fn note(&mut self) {
        if self.window.elapsed() >= REFUSAL_WINDOW {
            self.window = Instant::now();
            self.count = 0;
        }
        self.count += 1;
    }

    /// When the window ends, if its budget is spent.
    fn exhausted(&self) -> Option<Instant> {
        (self.count >= REFUSALS_PER_WINDOW && self.window.elapsed() < REFUSAL_WINDOW)
            .then(|| self.window + REFUSAL_WINDOW)
    }
}

/// Refuses `conn` with `status` (unasked, without blocking), then closes it.
fn refuse(conn: OwnedFd, status: i64) {
    let _ = send(
        conn.as_fd(),
        &status.to_le_bytes(),
        &[],
        SendFlags::DONTWAIT,
    );
}

/// Accepts what `listener` has waiting (up to a few per round, for fairness).
fn accept_some(
    listener: BorrowedFd<'_>,
    me: rustix::process::Uid,
    conns: &mut Vec<Conn>,
    next_peer: &mut u64,
    refusals: &mut Refusals,
) -> io::Result<()> {
    for _ in 0..16 {
        if refusals.exhausted().is_some() {
            return Ok(());
        }
        let conn = match net::accept_with(listener, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK) {
            Ok(c) => c,
            Err(Errno::AGAIN) => return Ok(()),
            Err(Errno::INTR) | Err(Errno::CONNABORTED) | Err(Errno::PROTO) => continue,
            Err(e) => return Err(e.into()),
        };
        let cred = match sockopt::socket_peercred(&conn) {
            Ok(cred) if cred.uid == me || cred.uid.is_root() => cred,
            _ => {
                refusals.note();
                continue; // another user: dropped, unanswered
            }
        };
        let pid = cred.pid.as_raw_nonzero().get() as u32;
        if conns.len() >= MAX_CONNECTIONS {
            refusals.note();
            refuse(conn, REFUSED_FULL);
            continue;
        }
        if conns.iter().filter(|c| c.pid == pid).count() >= MAX_CONNECTIONS_PER_PROCESS {
            refusals.note();
            refuse(conn, REFUSED_PROCESS);
            continue;
        }
        let pidfd = crate::pidfd::of_peer(conn.as_fd(), pid);
        conns.push(Conn {
            sock: conn,
            peer: PeerId(*next_peer),
            pid,
            pidfd,
        });
        *next_peer += 1;
    }
    Ok(())
}

/// Serves one request of `conn`; `false` when the connection is done (closed by the
/// peer, broken, or not reading its replies).
fn serve_one(conn: BorrowedFd<'_>, buf: &mut [u8], ctx: &GateCtx, peer: PeerId) -> bool {
    let result = match recv(conn, buf, RecvFlags::DONTWAIT) {
        Ok((0, _)) => return false,
        Ok((n, fds)) => handle(&buf[..n], fds, ctx, peer),
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return true,
        Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => Err(e),
        Err(_) => return false,
    };
    let (status, events, reply_fds): (i64, Vec<Ukevent>, Vec<OwnedFd>) = match result {
        Ok(reply) => (reply.count as i64, reply.events, reply.fds),
        Err(e) => (
            -i64::from(e.raw_os_error().unwrap_or(libc::EIO)),
            vec![],
            vec![],
        ),
    };
    let mut out = Vec::with_capacity(8 + events.len() * EV);
    out.extend_from_slice(&status.to_le_bytes());
    for ev in &events {
        encode(ev, &mut out);
    }
    let fds: Vec<BorrowedFd<'_>> = reply_fds.iter().map(AsFd::as_fd).collect();
    // Never blocks: a peer whose receive queue is full (it does not read its replies)
    // loses its connection instead of stalling every other peer.
    send(conn, &out, &fds, SendFlags::DONTWAIT).is_ok()
}

/// What a request is answered with.
struct Reply {
    count: usize,
    events: Vec<Ukevent>,
    /// Fds sent along (closed here once sent).
    fds: Vec<OwnedFd>,
}

/// Validates and executes one request of `peer`.
fn handle(msg: &[u8], fds: Vec<OwnedFd>, ctx: &GateCtx, peer: PeerId) -> io::Result<Reply> {
    let einval = || io::Error::from_raw_os_error(libc::EINVAL);
    if msg.len() < HEADER {
        return Err(einval());
    }
    let word = |i: usize| u32::from_le_bytes(msg[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
    let (op, cmd, n, nfds) = (word(0), word(1), word(2) as usize, word(3) as usize);
    if n > MAX_FRAME_ENTRIES || msg.len() != HEADER + n * EV || nfds != fds.len() {
        return Err(einval());
    }
    let reply = |count, events, fds| Reply { count, events, fds };
    match op {
        OP_ATTACH => {
            if !fds.is_empty() {
                return Err(einval());
            }
            let sent = vec![ctx.memfd.try_clone()?, ctx.doorbell.try_clone()?.into()];
            Ok(reply(0, vec![], sent))
        }
        OP_NOTIFY => {
            if n != 0 || !fds.is_empty() {
                return Err(einval());
            }
            // A channel of our making: we keep the ringing end (only this process and
            // children it forks hold it), the peer gets the reading end (`wakefd.rs`).
            let (reader, writer) = WakeFd::pair()?;
            // Before the fd is listed: a publish from now on finds the producer awake.
            ctx.harvesters.never_park.store(true, Ordering::Release);
            let mut guard = ctx.kernel.lock();
            let kernel = guard
                .as_mut()
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))?;
            kernel.add_notify(peer, writer);
            kernel.ring().unpark_producer();
            Ok(reply(0, vec![], vec![reader.into()]))
        }
        OP_CTL => {
            let mut events: Vec<Ukevent> = msg[HEADER..].chunks_exact(EV).map(decode).collect();
            // For ADD, fd-carrying entries use the fds that came along, in order; the
            // registration keeps the sender's id (its fd number) as its key, in the
            // sender's own namespace (`peer.rs`).
            let mut fd_for = vec![None; events.len()];
            if cmd == KEVENT_CTL_ADD {
                let mut it = fds.iter();
                for (i, ev) in events.iter().enumerate() {
                    if carries_fd(ev.type_) {
                        fd_for[i] = Some(it.next().ok_or_else(einval)?.as_raw_fd());
                    }
                }
                if it.next().is_some() {
                    return Err(einval());
                }
            } else if !fds.is_empty() {
                return Err(einval());
            }
            let mut guard = ctx.kernel.lock();
            let kernel = guard
                .as_mut()
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))?;
            let count = kernel.ctl(cmd, &mut events, &fd_for, Caller::Gate(peer))?;
            drop(guard);
            // The kernel dup'ed what it registered; the received fds close here.
            drop(fds);
            Ok(reply(count, events, vec![]))
        }
        _ => Err(einval()),
    }
}

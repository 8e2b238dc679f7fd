//! The queue's control gate: a Unix socket through which other processes attach (receive
//! the ring's memfd and the doorbell with `SCM_RIGHTS`) and control the queue (ADD with
//! the fds travelling along, MODIFY, REMOVE, READY) with the same results and errors as
//! in the owner (DESIGN.md §5).
//!
//! Every queue serves an abstract socket whose name the kernel picks (autobind: `bind`
//! with only the address family gives a fresh `@xxxxx` no other socket holds; no file to
//! clean up, gone when the queue closes). Its `fork`ed children know that name and the
//! owner's pid from their copy of the queue. A queue can serve a filesystem path as well
//! ([`crate::Queue::listen`]).
//!
//! # What is guaranteed (DESIGN.md §5, "Trust boundaries")
//!
//! * **No name another user can take first.** There are no fixed or guessable names: the
//!   queue's own name is autobound (the kernel never hands out a name that is bound), and
//!   a queue attached without a control channel ([`crate::Queue::attach`]) has no gate
//!   address at all — its forked children get `EOPNOTSUPP` from `kevent_ctl` and connect
//!   to nothing.
//! * **Both ends check the other with `SO_PEERCRED`.** The server drops every connection
//!   whose peer uid is neither its own effective uid nor root. The client checks the
//!   server *before it sends anything*: the server's uid must equal the client's
//!   effective uid — root is not exempt: a root process attaches only to root's queues,
//!   so it never hands its descriptors to another user's process — and a forked child
//!   re-attaching to its parent's gate requires the pid recorded when the queue was made
//!   (the process that created the queue, or that served the path the parent connected
//!   to). A name freed when the owner closed its queue and taken since by anybody else,
//!   of another uid or of the same, is refused with `PermissionDenied` (EPERM) and a
//!   message naming who serves it.
//! * **Bounded.** One thread per queue serves all its listeners and connections with
//!   poll(2). At most [`MAX_CONNECTIONS`] connections are open at a time: one beyond is
//!   accepted, sent a refusal and closed at once (the client reports
//!   `ConnectionRefused`, ECONNREFUSED, "serves its maximum of … connections"). A request
//!   carries at most [`MAX_FRAME_ENTRIES`] entries and 253 fds (the client splits larger
//!   calls); a longer message is answered `EMSGSIZE`. Replies are sent without blocking:
//!   a client that does not read its replies is disconnected instead of stalling the
//!   gate.
//! * **Survives errors.** An `accept` that fails (`EMFILE`, `ENFILE`, `ENOMEM`, …) pauses
//!   accepting — 10 ms, doubling up to 1 s — and retries; the connection waits in the
//!   listen backlog meanwhile. Only closing the queue ends the gate thread.
//! * **Never hangs a client.** A client's socket has `SO_SNDTIMEO` and `SO_RCVTIMEO` of
//!   [`TIMEOUT`] (5 s): a connect to a full backlog, or a request nobody answers (the
//!   owner is stuck, or its queue was made with `create_paused` and not started yet),
//!   fails with `TimedOut` (ETIMEDOUT). An owner that closed the queue or died answers
//!   `BrokenPipe` (EPIPE).
//!
//! Wire format, one `SOCK_SEQPACKET` message each way:
//!
//! ```text
//! request: op u32 | cmd u32 | n u32 | nfds u32 | n × ukevent (40 bytes, little-endian)
//!          + SCM_RIGHTS: for ADD, one fd per fd-carrying entry, in order
//! reply:   status i64 (count, or -errno) | n × ukevent
//!          + SCM_RIGHTS: for ATTACH, the memfd and the doorbell
//! refusal: status i64 = -EUSERS, sent unasked to a connection beyond the bound, which
//!          is then closed
//! ```

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kevent_ring::Ukevent;
use rustix::event::{poll, EventfdFlags, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{
    self, sockopt, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};

use crate::abi::*;
use crate::kernel::Kernel;
use crate::thread::lock;

const OP_ATTACH: u32 = 1;
const OP_CTL: u32 = 2;
/// Entries per message: `SCM_RIGHTS` carries at most 253 fds; larger calls are split.
pub(crate) const MAX_FRAME_ENTRIES: usize = 250;
/// Fds per message (the kernel's `SCM_MAX_FD`).
const MAX_FDS: usize = 253;
/// Connections a gate serves at a time; one beyond is refused (see the module docs).
pub(crate) const MAX_CONNECTIONS: usize = 128;
/// How long a client waits to connect, to send a request, or for its reply.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);
/// The listen backlog of a gate socket.
const BACKLOG: i32 = 64;
/// The status of the refusal a connection beyond [`MAX_CONNECTIONS`] receives.
const REFUSED_FULL: i64 = -(libc::EUSERS as i64);
/// Pause of accepting after an `accept` error: from this, doubling, up to the maximum.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
const HEADER: usize = 16;
const EV: usize = 40;

/// Whether entries of this type carry an fd in `id.raw[0]` (for `KEVENT_INODE`, the
/// watched directory): in an ADD through the gate, that fd travels with `SCM_RIGHTS` and
/// the owner registers the copy it received — never the number, which means nothing in
/// the owner's fd table.
pub(crate) fn carries_fd(type_: u32) -> bool {
    matches!(
        type_,
        KEVENT_SOCKET | KEVENT_PIPE | KEVENT_POLL | KEVENT_INODE
    )
}

fn encode(ev: &Ukevent, out: &mut Vec<u8>) {
    out.extend_from_slice(&ev.id.to_le_bytes());
    for w in [
        ev.type_,
        ev.event,
        ev.req_flags,
        ev.ret_flags,
        ev.ret_data[0],
        ev.ret_data[1],
    ] {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out.extend_from_slice(&ev.user.to_le_bytes());
}

fn decode(b: &[u8]) -> Ukevent {
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
    Ukevent {
        id: u64::from_le_bytes(b[0..8].try_into().expect("8 bytes")),
        type_: u32_at(8),
        event: u32_at(12),
        req_flags: u32_at(16),
        ret_flags: u32_at(20),
        ret_data: [u32_at(24), u32_at(28)],
        user: u64::from_le_bytes(b[32..40].try_into().expect("8 bytes")),
    }
}

fn send(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
    flags: SendFlags,
) -> io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::from_raw_os_error(libc::E2BIG));
    }
    net::sendmsg(
        sock,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL | flags,
    )?;
    Ok(())
}

/// One message and the fds that came with it. A message longer than `buf` (or with more
/// fds than one message may carry) is consumed and answered `EMSGSIZE`; its fds are
/// closed.
fn recv(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    flags: RecvFlags,
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = loop {
        match net::recvmsg(
            sock,
            &mut [IoSliceMut::new(buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC | flags,
        ) {
            Err(Errno::INTR) => continue,
            r => break r?,
        }
    };
    let mut fds = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = m {
            fds.extend(received);
        }
    }
    if msg
        .flags
        .intersects(net::ReturnFlags::TRUNC | net::ReturnFlags::CTRUNC)
    {
        return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
    }
    Ok((msg.bytes, fds))
}

fn seqpacket(flags: SocketFlags) -> io::Result<OwnedFd> {
    Ok(net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | flags,
        None,
    )?)
}

/// A non-blocking listening gate socket bound to `addr` (an unnamed `addr` autobinds).
fn bind(addr: &SocketAddrUnix) -> io::Result<OwnedFd> {
    let fd = seqpacket(SocketFlags::NONBLOCK)?;
    net::bind(&fd, addr)?;
    net::listen(&fd, BACKLOG)?;
    Ok(fd)
}

/// An address for messages: the path, or `@name` for an abstract name.
fn describe(addr: &SocketAddrUnix) -> String {
    if let Some(name) = addr.abstract_name() {
        format!("@{}", name.escape_ascii())
    } else if let Some(path) = addr.path_bytes() {
        path.escape_ascii().to_string()
    } else {
        "(unnamed)".into()
    }
}

/// Where a queue's gate is, and which process must be serving it.
#[derive(Clone, Debug)]
pub(crate) struct GateAddr {
    addr: SocketAddrUnix,
    /// The pid the server's `SO_PEERCRED` must show: the queue's owner (the process that
    /// created it and listens on it).
    pid: u32,
}

impl GateAddr {
    /// The gate at `addr`, served by process `pid`.
    pub(crate) fn new(addr: SocketAddrUnix, pid: u32) -> GateAddr {
        GateAddr { addr, pid }
    }

    /// Connects to the gate, checking that the owner serves it (see [`GateClient`]).
    pub(crate) fn connect(&self) -> io::Result<GateClient> {
        Ok(GateClient::connect(&self.addr, Some(self.pid))?.0)
    }
}

/// What a gate serves.
#[derive(Clone)]
pub(crate) struct GateCtx {
    pub(crate) kernel: Arc<Mutex<Option<Kernel>>>,
    pub(crate) memfd: Arc<OwnedFd>,
    pub(crate) doorbell: Arc<OwnedFd>,
}

/// What the gate thread shares with the queue.
struct Shared {
    ctx: GateCtx,
    listeners: Mutex<Vec<Arc<OwnedFd>>>,
    /// Written to wake the gate thread (a new listener, or the close).
    wake: OwnedFd,
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
                wake: rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?,
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
        let _ = rustix::io::write(&self.shared.wake, &1u64.to_ne_bytes());
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

/// The gate thread: polls the wake fd, the listeners (unless accepting is paused after
/// an error) and every connection; serves one request per ready connection per round.
fn run(shared: &Shared) {
    let me = rustix::process::geteuid();
    let mut conns: Vec<OwnedFd> = Vec::new();
    let mut buf = vec![0u8; HEADER + MAX_FRAME_ENTRIES * EV];
    let mut backoff = Duration::ZERO;
    let mut paused_until: Option<Instant> = None;
    while !shared.stop.load(Ordering::Acquire) {
        let listeners = guard(&shared.listeners).clone();
        let now = Instant::now();
        let pause_left = paused_until.and_then(|t| t.checked_duration_since(now));
        let accepting = pause_left.is_none();
        let timeout = pause_left.and_then(|d| Timespec::try_from(d).ok());
        let ready: Vec<bool> = {
            let mut pfds = Vec::with_capacity(1 + listeners.len() + conns.len());
            pfds.push(PollFd::new(&shared.wake, PollFlags::IN));
            if accepting {
                pfds.extend(listeners.iter().map(|l| PollFd::new(&**l, PollFlags::IN)));
            }
            pfds.extend(conns.iter().map(|c| PollFd::new(c, PollFlags::IN)));
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
            let mut b = [0u8; 8];
            let _ = rustix::io::read(&shared.wake, &mut b);
        }
        if shared.stop.load(Ordering::Acquire) {
            break;
        }
        let first_conn = 1 + if accepting { listeners.len() } else { 0 };
        // Highest index first: `swap_remove` moves an element already served.
        for i in (0..conns.len()).rev() {
            if ready[first_conn + i] && !serve_one(conns[i].as_fd(), &mut buf, &shared.ctx) {
                conns.swap_remove(i);
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
            match accept_some(listener.as_fd(), me, &mut conns) {
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
    }
}

/// Accepts what `listener` has waiting (up to a few per round, for fairness).
fn accept_some(
    listener: BorrowedFd<'_>,
    me: rustix::process::Uid,
    conns: &mut Vec<OwnedFd>,
) -> io::Result<()> {
    for _ in 0..16 {
        let conn = match net::accept_with(listener, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK) {
            Ok(c) => c,
            Err(Errno::AGAIN) => return Ok(()),
            Err(Errno::INTR) | Err(Errno::CONNABORTED) | Err(Errno::PROTO) => continue,
            Err(e) => return Err(e.into()),
        };
        match sockopt::socket_peercred(&conn) {
            Ok(cred) if cred.uid == me || cred.uid.is_root() => {}
            _ => continue, // another user: dropped, unanswered
        }
        if conns.len() >= MAX_CONNECTIONS {
            let _ = send(
                conn.as_fd(),
                &REFUSED_FULL.to_le_bytes(),
                &[],
                SendFlags::DONTWAIT,
            );
            continue; // closed
        }
        conns.push(conn);
    }
    Ok(())
}

/// Serves one request of `conn`; `false` when the connection is done (closed by the
/// peer, broken, or not reading its replies).
fn serve_one(conn: BorrowedFd<'_>, buf: &mut [u8], ctx: &GateCtx) -> bool {
    let result = match recv(conn, buf, RecvFlags::DONTWAIT) {
        Ok((0, _)) => return false,
        Ok((n, fds)) => handle(&buf[..n], fds, ctx),
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return true,
        Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => Err(e),
        Err(_) => return false,
    };
    let (status, events, reply_fds): (i64, Vec<Ukevent>, Vec<BorrowedFd<'_>>) = match result {
        Ok((count, events, attach)) => (
            count as i64,
            events,
            if attach {
                vec![ctx.memfd.as_fd(), ctx.doorbell.as_fd()]
            } else {
                vec![]
            },
        ),
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
    // Never blocks: a peer whose receive queue is full (it does not read its replies)
    // loses its connection instead of stalling every other peer.
    send(conn, &out, &reply_fds, SendFlags::DONTWAIT).is_ok()
}

/// Validates and executes one request.
fn handle(msg: &[u8], fds: Vec<OwnedFd>, ctx: &GateCtx) -> io::Result<(usize, Vec<Ukevent>, bool)> {
    let einval = || io::Error::from_raw_os_error(libc::EINVAL);
    if msg.len() < HEADER {
        return Err(einval());
    }
    let word = |i: usize| u32::from_le_bytes(msg[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
    let (op, cmd, n, nfds) = (word(0), word(1), word(2) as usize, word(3) as usize);
    if n > MAX_FRAME_ENTRIES || msg.len() != HEADER + n * EV || nfds != fds.len() {
        return Err(einval());
    }
    match op {
        OP_ATTACH => Ok((0, vec![], true)),
        OP_CTL => {
            let mut events: Vec<Ukevent> = msg[HEADER..].chunks_exact(EV).map(decode).collect();
            // For ADD, fd-carrying entries use the fds that came along, in order; the
            // registration keeps the sender's id (its fd number) as its key.
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
            let mut guard = lock(&ctx.kernel);
            let kernel = guard
                .as_mut()
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))?;
            let count = kernel.ctl(cmd, &mut events, &fd_for, crate::kernel::Caller::Gate)?;
            // The kernel dup'ed what it registered; the received fds close here.
            drop(fds);
            Ok((count, events, false))
        }
        _ => Err(einval()),
    }
}

/// A connection to a queue's gate, made only after the server proved to be the right
/// process (see the module docs).
#[derive(Debug)]
pub(crate) struct GateClient {
    conn: OwnedFd,
    /// The gate's address, for messages.
    name: String,
    /// A call failed on the way (timeout, closed, malformed): a late reply could still
    /// arrive and be taken for the next one's, so the connection must not be used again.
    broken: AtomicBool,
}

fn refused(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, msg)
}

impl GateClient {
    /// Connects to the gate at `addr` and checks its server with `SO_PEERCRED` before
    /// anything is sent: its uid must be this process's effective uid, and its pid
    /// `owner` when given. Returns the client and the server's pid.
    ///
    /// # Errors
    /// `PermissionDenied` (EPERM): another user, or not the owner, serves `addr`.
    /// `TimedOut` (ETIMEDOUT): the backlog stayed full for [`TIMEOUT`]. The errors of
    /// `connect(2)` as they are (`ENOENT`, `ECONNREFUSED`…).
    pub(crate) fn connect(
        addr: &SocketAddrUnix,
        owner: Option<u32>,
    ) -> io::Result<(GateClient, u32)> {
        let name = describe(addr);
        let fd = seqpacket(SocketFlags::empty())?;
        sockopt::set_socket_timeout(&fd, sockopt::Timeout::Send, Some(TIMEOUT))?;
        sockopt::set_socket_timeout(&fd, sockopt::Timeout::Recv, Some(TIMEOUT))?;
        match net::connect(&fd, addr) {
            Ok(()) => {}
            Err(Errno::AGAIN) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "kevent gate {name}: not accepted within {TIMEOUT:?} (its backlog is \
                         full: the queue's owner is stuck or not started)"
                    ),
                ))
            }
            Err(e) => return Err(e.into()),
        }
        let cred = sockopt::socket_peercred(&fd)?;
        let (uid, pid) = (cred.uid.as_raw(), cred.pid.as_raw_nonzero().get() as u32);
        let me = rustix::process::geteuid().as_raw();
        if uid != me {
            return Err(refused(format!(
                "kevent gate {name}: served by uid {uid} (pid {pid}), not by this process's \
                 uid {me}: refused, nothing was sent"
            )));
        }
        if let Some(owner) = owner {
            if pid != owner {
                return Err(refused(format!(
                    "kevent gate {name}: served by pid {pid}, not by the queue's owner (pid \
                     {owner}; it closed the queue or is gone, and another process took the \
                     name): refused, nothing was sent"
                )));
            }
        }
        Ok((
            GateClient {
                conn: fd,
                name,
                broken: AtomicBool::new(false),
            },
            pid,
        ))
    }

    /// The gate closed the connection: why, if it said (a refusal), else `BrokenPipe`.
    fn closed(&self) -> io::Error {
        let mut buf = [0u8; 16];
        if let Ok((8, _)) = recv(self.conn.as_fd(), &mut buf, RecvFlags::DONTWAIT) {
            if i64::from_le_bytes(buf[..8].try_into().expect("8 bytes")) == REFUSED_FULL {
                return self.full();
            }
        }
        io::Error::new(
            io::ErrorKind::BrokenPipe,
            format!(
                "kevent gate {}: the queue's owner closed the connection (the queue was \
                 closed, or its owner is gone)",
                self.name
            ),
        )
    }

    fn full(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!(
                "kevent gate {}: refused: the queue serves its maximum of {MAX_CONNECTIONS} \
                 connections",
                self.name
            ),
        )
    }

    fn timed_out(&self, what: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "kevent gate {}: {what} within {TIMEOUT:?} (the queue's owner is stuck, or \
                 its queue is not started)",
                self.name
            ),
        )
    }

    /// Whether a call failed on the way: the caller must connect again.
    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    /// One request and its reply. Every error is the transport's (a status is `Ok`), and
    /// leaves the client broken.
    fn call(
        &self,
        op: u32,
        cmd: u32,
        events: &[Ukevent],
        fds: &[BorrowedFd<'_>],
    ) -> io::Result<(i64, Vec<Ukevent>, Vec<OwnedFd>)> {
        if self.is_broken() {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!(
                    "kevent gate {}: connection unusable after an error",
                    self.name
                ),
            ));
        }
        let r = self.exchange(op, cmd, events, fds);
        if r.is_err() {
            self.broken.store(true, Ordering::Relaxed);
        }
        r
    }

    fn exchange(
        &self,
        op: u32,
        cmd: u32,
        events: &[Ukevent],
        fds: &[BorrowedFd<'_>],
    ) -> io::Result<(i64, Vec<Ukevent>, Vec<OwnedFd>)> {
        let mut out = Vec::with_capacity(HEADER + events.len() * EV);
        for w in [op, cmd, events.len() as u32, fds.len() as u32] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        for ev in events {
            encode(ev, &mut out);
        }
        if let Err(e) = send(self.conn.as_fd(), &out, fds, SendFlags::empty()) {
            return Err(match e.raw_os_error() {
                Some(libc::EAGAIN) => self.timed_out("request not taken"),
                Some(libc::EPIPE) | Some(libc::ECONNRESET) => self.closed(),
                _ => e,
            });
        }
        let mut buf = vec![0u8; 8 + MAX_FRAME_ENTRIES * EV];
        let (n, rfds) = match recv(self.conn.as_fd(), &mut buf, RecvFlags::empty()) {
            Ok(r) => r,
            Err(e) => {
                return Err(match e.raw_os_error() {
                    Some(libc::EAGAIN) => self.timed_out("no reply"),
                    Some(libc::ECONNRESET) => self.closed(),
                    _ => e,
                })
            }
        };
        if n == 0 {
            return Err(self.closed());
        }
        if n < 8 || (n - 8) % EV != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("kevent gate {}: malformed reply", self.name),
            ));
        }
        let status = i64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
        if status == REFUSED_FULL {
            return Err(self.full());
        }
        Ok((
            status,
            buf[8..n].chunks_exact(EV).map(decode).collect(),
            rfds,
        ))
    }

    /// Asks for the ring's memfd and the doorbell.
    pub(crate) fn attach(&self) -> io::Result<(OwnedFd, OwnedFd)> {
        let (status, _, fds) = self.call(OP_ATTACH, 0, &[], &[])?;
        if status < 0 {
            return Err(io::Error::from_raw_os_error(-status as i32));
        }
        let mut fds = fds.into_iter();
        match (fds.next(), fds.next()) {
            (Some(memfd), Some(doorbell)) => Ok((memfd, doorbell)),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "kevent gate: attach reply carried no memfd",
            )),
        }
    }

    /// `kevent_ctl` through the gate, split into frames; same results as in the owner.
    /// Entries whose type [`carries_fd`] send that fd (ADD only).
    pub(crate) fn ctl(&self, cmd: u32, events: &mut [Ukevent]) -> io::Result<usize> {
        if events.is_empty() {
            let (status, _, _) = self.call(OP_CTL, cmd, &[], &[])?;
            return status_to_result(status);
        }
        let mut total = 0usize;
        for chunk in events.chunks_mut(MAX_FRAME_ENTRIES) {
            // An ADD of an fd this process does not have fails in that entry with EBADF,
            // as in the owner; it is not sent.
            let mut send_idx = Vec::with_capacity(chunk.len());
            let mut fds = Vec::new();
            for (i, ev) in chunk.iter_mut().enumerate() {
                if cmd == KEVENT_CTL_ADD && carries_fd(ev.type_) {
                    let raw = ev.id_raw()[0] as i32;
                    if raw < 0
                        || rustix::io::fcntl_getfd(
                            // SAFETY: F_GETFD on any number only reads its flags; the borrow
                            // ends with the call.
                            unsafe { BorrowedFd::borrow_raw(raw) },
                        )
                        .is_err()
                    {
                        ev.ret_flags = KEVENT_RET_BROKEN | KEVENT_RET_DONE;
                        ev.ret_data = [0, libc::EBADF as u32];
                        continue;
                    }
                    // SAFETY: `raw` is open (checked above) and stays open while the caller
                    // lends us `events` for this call.
                    fds.push(unsafe { BorrowedFd::borrow_raw(raw) });
                }
                send_idx.push(i);
            }
            let to_send: Vec<Ukevent> = send_idx.iter().map(|&i| chunk[i]).collect();
            let (status, back, _) = self.call(OP_CTL, cmd, &to_send, &fds)?;
            let count = status_to_result(status)?;
            if back.len() != to_send.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "kevent gate: reply has the wrong number of entries",
                ));
            }
            for (&i, ev) in send_idx.iter().zip(back) {
                chunk[i] = ev;
            }
            total += if cmd == KEVENT_CTL_ADD { 0 } else { count };
        }
        if cmd == KEVENT_CTL_ADD {
            total = crate::kernel::compact_reported(events);
        }
        Ok(total)
    }
}

fn status_to_result(status: i64) -> io::Result<usize> {
    if status < 0 {
        Err(io::Error::from_raw_os_error((-status).min(4095) as i32))
    } else {
        Ok(status as usize)
    }
}

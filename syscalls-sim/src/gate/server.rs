//! The gate's server side, in the owning process: one thread serving every listener and
//! connection with poll(2), validating and executing requests.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kevent_ring::Ukevent;
use rustix::event::{poll, EventfdFlags, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{self, sockopt, RecvFlags, SendFlags, SocketAddrUnix};

use super::*;
use crate::kernel::Kernel;
use crate::thread::lock;

/// What a gate serves.
#[derive(Clone)]
pub(crate) struct GateCtx {
    pub(crate) kernel: Arc<Mutex<Option<Kernel>>>,
    /// To keep the producer thread from parking once a remote event loop relies on it.
    pub(crate) harvesters: Arc<crate::thread::Harvesters>,
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
                let gone = conns.swap_remove(i);
                // Its notify fd, if any, goes before the number can be reused.
                if let Some(k) = lock(&shared.ctx.kernel).as_mut() {
                    k.drop_remote_notify(gone.as_raw_fd());
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
        Ok((n, fds)) => handle(&buf[..n], fds, ctx, conn.as_raw_fd()),
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
fn handle(
    msg: &[u8],
    fds: Vec<OwnedFd>,
    ctx: &GateCtx,
    conn: i32,
) -> io::Result<(usize, Vec<Ukevent>, bool)> {
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
        OP_NOTIFY => {
            let [fd] = <[OwnedFd; 1]>::try_from(fds).map_err(|_| einval())?;
            if n != 0 || !is_nonblocking_eventfd(&fd) {
                // Anything else could block the producer's write, or do harm: refused.
                return Err(einval());
            }
            // Before the fd is listed: a publish from now on finds the producer awake.
            ctx.harvesters.never_park.store(true, Ordering::Release);
            let mut guard = lock(&ctx.kernel);
            let kernel = guard
                .as_mut()
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))?;
            kernel.add_remote_notify(conn, fd);
            kernel.ring().unpark_producer();
            Ok((0, vec![], false))
        }
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

/// Whether `fd` is an eventfd in non-blocking mode: the only kind the owner writes to on
/// a peer's behalf (a write to it never blocks, whatever the peer does).
fn is_nonblocking_eventfd(fd: &OwnedFd) -> bool {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let nonblocking =
        rustix::fs::fcntl_getfl(fd).is_ok_and(|flags| flags.contains(rustix::fs::OFlags::NONBLOCK));
    nonblocking && link.is_ok_and(|l| l.as_os_str() == "anon_inode:[eventfd]")
}

#[cfg(test)]
mod tests {
    use super::is_nonblocking_eventfd;
    use rustix::event::{eventfd, EventfdFlags};

    #[test]
    fn only_a_nonblocking_eventfd_is_taken_as_a_peers_notify_fd() {
        let good = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).unwrap();
        assert!(is_nonblocking_eventfd(&good));
        // A blocking one could block the producer's write once its counter is full.
        let blocking = eventfd(0, EventfdFlags::CLOEXEC).unwrap();
        assert!(!is_nonblocking_eventfd(&blocking));
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::NONBLOCK).unwrap();
        assert!(!is_nonblocking_eventfd(&r) && !is_nonblocking_eventfd(&w));
    }
}

//! The gate's client side: a connection to a queue's gate from another process (or a
//! forked child), checked before anything is sent.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use kevent_ring::Ukevent;
use rustix::net::{self, sockopt, RecvFlags, SendFlags, SocketAddrUnix, SocketFlags};

use super::*;

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
            let status = i64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
            if let Some(e) = self.refusal(status) {
                return e;
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

    /// The error a refusal `status` stands for, if it is one.
    fn refusal(&self, status: i64) -> Option<io::Error> {
        let why = match status {
            REFUSED_FULL => {
                format!("the queue serves its maximum of {MAX_CONNECTIONS} connections")
            }
            REFUSED_PROCESS => format!(
                "this process holds its maximum of {MAX_CONNECTIONS_PER_PROCESS} connections to \
                 the queue"
            ),
            _ => return None,
        };
        Some(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("kevent gate {}: refused: {why}", self.name),
        ))
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
        if let Some(e) = self.refusal(status) {
            return Err(e);
        }
        Ok((
            status,
            buf[8..n].chunks_exact(EV).map(decode).collect(),
            rfds,
        ))
    }

    /// Asks for the ring's memfd and the doorbell's ringing end.
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

    /// Asks for a notify channel: the owner rings it on every publish, as it rings its
    /// own notify fd (see `Instance::notify_fd`); returns its reading end.
    pub(crate) fn arm_notify(&self) -> io::Result<OwnedFd> {
        let (status, _, fds) = self.call(OP_NOTIFY, 0, &[], &[])?;
        status_to_result(status)?;
        fds.into_iter().next().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "kevent gate: notify reply carried no fd",
            )
        })
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

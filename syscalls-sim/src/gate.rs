//! The queue's control gate: a Unix socket through which other processes attach (receive
//! the ring's memfd and the doorbell with `SCM_RIGHTS`) and control the queue (ADD with
//! the fds travelling along, MODIFY, REMOVE, READY) with the same results and errors as
//! in the owner (DESIGN.md §5).
//!
//! Every queue serves an abstract socket (`@kevent.<pid>.<n>`: no file to clean up,
//! gone when the queue closes), inherited knowledge for `fork`ed children; a queue can
//! serve a filesystem path as well ([`crate::Queue::listen`]). Only peers of the same uid
//! (or root) are served: `SO_PEERCRED` is checked on accept.
//!
//! Wire format, one `SOCK_SEQPACKET` message each way:
//!
//! ```text
//! request: op u32 | cmd u32 | n u32 | nfds u32 | n × ukevent (40 bytes, little-endian)
//!          + SCM_RIGHTS: for ADD, one fd per fd-carrying entry, in order
//! reply:   status i64 (count, or -errno) | n × ukevent
//!          + SCM_RIGHTS: for ATTACH, the memfd and the doorbell
//! ```

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use kevent_ring::Ukevent;
use rustix::net::{
    self, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};

use crate::abi::*;
use crate::kernel::Kernel;
use crate::thread::lock;

const OP_ATTACH: u32 = 1;
const OP_CTL: u32 = 2;
/// Entries per message: `SCM_RIGHTS` carries at most 253 fds; larger calls are split.
pub(crate) const MAX_FRAME_ENTRIES: usize = 250;
const HEADER: usize = 16;
const EV: usize = 40;

/// Whether entries of this type carry an fd in `id.raw[0]`.
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

fn send(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(253))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::from_raw_os_error(libc::E2BIG));
    }
    net::sendmsg(
        sock,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    Ok(())
}

fn recv(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(253))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = loop {
        match net::recvmsg(
            sock,
            &mut [IoSliceMut::new(buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            r => break r?,
        }
    };
    let mut fds = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = m {
            fds.extend(received);
        }
    }
    if msg.flags.contains(net::ReturnFlags::TRUNC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "kevent gate: message too long",
        ));
    }
    Ok((msg.bytes, fds))
}

fn seqpacket() -> io::Result<OwnedFd> {
    Ok(net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// A fresh abstract address for a queue's gate: `@kevent.<pid>.<n>`, with `n` counted
/// per process. (Not the handle's fd number: fds are reused as soon as a queue closes,
/// while its gate thread may still hold the old socket for a moment.)
pub(crate) fn abstract_addr(pid: u32) -> io::Result<SocketAddrUnix> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Ok(SocketAddrUnix::new_abstract_name(
        format!("kevent.{pid}.{n}").as_bytes(),
    )?)
}

/// A listening gate socket bound to `addr`.
pub(crate) fn bind(addr: &SocketAddrUnix) -> io::Result<OwnedFd> {
    let fd = seqpacket()?;
    net::bind(&fd, addr)?;
    net::listen(&fd, 64)?;
    Ok(fd)
}

/// What a gate serves.
#[derive(Clone)]
pub(crate) struct GateCtx {
    pub(crate) kernel: Arc<Mutex<Option<Kernel>>>,
    pub(crate) memfd: Arc<OwnedFd>,
    pub(crate) doorbell: Arc<OwnedFd>,
    pub(crate) stop: Arc<AtomicBool>,
}

/// Accepts connections until `ctx.stop` (the listener is shut down to wake `accept`).
pub(crate) fn serve(listener: Arc<OwnedFd>, ctx: GateCtx) {
    loop {
        let conn = match net::accept_with(listener.as_fd(), SocketFlags::CLOEXEC) {
            Ok(c) => c,
            Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::CONNABORTED) => continue,
            Err(_) => return,
        };
        if ctx.stop.load(Ordering::Acquire) {
            return;
        }
        let me = rustix::process::geteuid();
        match net::sockopt::socket_peercred(&conn) {
            Ok(cred) if cred.uid == me || cred.uid.is_root() => {}
            _ => continue, // another user: refuse by closing
        }
        let ctx = ctx.clone();
        let _ = std::thread::Builder::new()
            .name("kevent-gate".into())
            .spawn(move || serve_conn(conn, ctx));
    }
}

fn serve_conn(conn: OwnedFd, ctx: GateCtx) {
    let mut buf = vec![0u8; HEADER + MAX_FRAME_ENTRIES * EV];
    loop {
        let (n, fds) = match recv(conn.as_fd(), &mut buf) {
            Ok((0, _)) | Err(_) => return,
            Ok(r) => r,
        };
        let (status, events, reply_fds): (i64, Vec<Ukevent>, Vec<BorrowedFd<'_>>) =
            match handle(&buf[..n], fds, &ctx) {
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
        if send(conn.as_fd(), &out, &reply_fds).is_err() {
            return;
        }
    }
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

/// A connection to a queue's gate.
#[derive(Debug)]
pub(crate) struct GateClient {
    conn: Mutex<OwnedFd>,
}

impl GateClient {
    /// Connects to a gate.
    pub(crate) fn connect(addr: &SocketAddrUnix) -> io::Result<GateClient> {
        let fd = seqpacket()?;
        net::connect(&fd, addr)?;
        Ok(GateClient {
            conn: Mutex::new(fd),
        })
    }

    fn call(
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
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        send(conn.as_fd(), &out, fds)?;
        let mut buf = vec![0u8; 8 + MAX_FRAME_ENTRIES * EV];
        let (n, rfds) = recv(conn.as_fd(), &mut buf)?;
        if n < 8 || (n - 8) % EV != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "kevent gate: malformed reply (is the queue's owner gone?)",
            ));
        }
        let status = i64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
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

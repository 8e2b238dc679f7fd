//! The queue's control gate: a Unix socket through which other processes attach (receive
//! the ring's memfd and the doorbell with `SCM_RIGHTS`) and control the queue (ADD with
//! the fds travelling along, MODIFY, REMOVE, READY) with the same results and errors as
//! in the owner (ARCHITECTURE.md §5).
//!
//! Every queue serves an abstract socket whose name the kernel picks (autobind: `bind`
//! with only the address family gives a fresh `@xxxxx` no other socket holds; no file to
//! clean up, gone when the queue closes). Its `fork`ed children know that name and the
//! owner's pid from their copy of the queue. A queue can serve a filesystem path as well
//! ([`crate::Instance::listen`]).
//!
//! # What is guaranteed (ARCHITECTURE.md §5, "Trust boundaries")
//!
//! * **No name another user can take first.** There are no fixed or guessable names: the
//!   queue's own name is autobound (the kernel never hands out a name that is bound), and
//!   a queue attached without a control channel ([`crate::Instance::attach`]) has no gate
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
//!   `ConnectionRefused`, ECONNREFUSED, "serves its maximum of … connections"); so is a
//!   connection beyond [`MAX_CONNECTIONS_PER_PROCESS`] of one process. Refusals —
//!   these, and connections of another uid, dropped unanswered — are budgeted: after
//!   256 in 100 ms the gate stops accepting until the window ends (the rest wait in the
//!   listen backlog, or are refused by the kernel), so a flood of them costs the gate's
//!   thread a bounded share of a core. A request
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
//!          + SCM_RIGHTS: for ATTACH, the memfd and the doorbell's ringing end; for
//!            NOTIFY (n = 0), the reading end of a notify channel the owner rings
//! refusal: status i64 = -EUSERS (the gate is full) or -ETOOMANYREFS (the process holds
//!          its maximum of connections), sent unasked, then the connection is closed
//! ```

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Duration;

use kevent_ring::Ukevent;
use rustix::io::Errno;
use rustix::net::{
    self, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};

use crate::abi::*;

mod client;
mod server;

pub(crate) use client::GateClient;
pub(crate) use server::{Gate, GateCtx};

const OP_ATTACH: u32 = 1;
const OP_CTL: u32 = 2;
/// Arm a notify channel: the reply carries its reading end (`wakefd.rs` in kevent-ring);
/// the owner keeps the ringing end and rings it on every publish.
const OP_NOTIFY: u32 = 3;
/// Entries per message: `SCM_RIGHTS` carries at most 253 fds; larger calls are split.
pub(crate) const MAX_FRAME_ENTRIES: usize = 250;
/// Fds per message (the kernel's `SCM_MAX_FD`).
const MAX_FDS: usize = 253;
/// Connections a gate serves at a time; one beyond is refused (see the module docs).
pub(crate) const MAX_CONNECTIONS: usize = 128;
/// Connections one process may hold at a time; one beyond is refused.
pub(crate) const MAX_CONNECTIONS_PER_PROCESS: usize = 8;
/// How long a client waits to connect, to send a request, or for its reply.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);
/// The listen backlog of a gate socket.
const BACKLOG: i32 = 64;
/// The status of the refusal a connection beyond [`MAX_CONNECTIONS`] receives.
const REFUSED_FULL: i64 = -(libc::EUSERS as i64);
/// The status of the refusal a connection beyond [`MAX_CONNECTIONS_PER_PROCESS`] of its
/// process receives.
const REFUSED_PROCESS: i64 = -(libc::ETOOMANYREFS as i64);
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

    /// The owner's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Connects to the gate, checking that the owner serves it (see [`GateClient`]).
    pub(crate) fn connect(&self) -> io::Result<GateClient> {
        Ok(GateClient::connect(&self.addr, Some(self.pid))?.0)
    }
}

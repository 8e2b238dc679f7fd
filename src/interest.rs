//! What to watch for: [`Interest`] for sockets and pipes, [`PollMask`] for a generic
//! `poll(2)` mask, [`InodeEvents`] for directories.
//!
//! All three keep unknown bits (`from_bits_retain`): a mask from a newer peer is passed to
//! the kernel, which answers `EINVAL` for what it does not know, rather than being
//! silently trimmed.

use kevent_syscalls as sys;

bitflags::bitflags! {
    /// Readiness of a socket or a pipe (`KEVENT_SOCKET_*`, `KEVENT_PIPE_*`).
    ///
    /// Also what an [`Event`](crate::Event) of such a source reports: hang-ups and errors
    /// make a reader readable and a writer writable, so that the next `read`/`write`
    /// reports them.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Interest: u32 {
        /// `KEVENT_SOCKET_RECV` / `KEVENT_PIPE_READ`: data to read (or EOF).
        const READABLE = sys::KEVENT_SOCKET_RECV;
        /// `KEVENT_SOCKET_ACCEPT`: a listening socket has a connection to accept.
        const ACCEPT = sys::KEVENT_SOCKET_ACCEPT;
        /// `KEVENT_SOCKET_SEND` / `KEVENT_PIPE_WRITE`: room to write.
        const WRITABLE = sys::KEVENT_SOCKET_SEND;
        // Keep unknown bits (see the module docs).
        const _ = !0;
    }
}

bitflags::bitflags! {
    /// A `poll(2)` mask for [`Source::poll`](crate::Source::poll) (`KEVENT_POLL_*`).
    /// `ERR` and `HUP` are always reported, as with `poll(2)`; asking for them alone is
    /// `EINVAL`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct PollMask: u32 {
        /// `KEVENT_POLL_POLLIN`.
        const IN = sys::KEVENT_POLL_POLLIN;
        /// `KEVENT_POLL_POLLPRI`.
        const PRI = sys::KEVENT_POLL_POLLPRI;
        /// `KEVENT_POLL_POLLOUT`.
        const OUT = sys::KEVENT_POLL_POLLOUT;
        /// `KEVENT_POLL_POLLERR` (reported, never needs asking).
        const ERR = sys::KEVENT_POLL_POLLERR;
        /// `KEVENT_POLL_POLLHUP` (reported, never needs asking).
        const HUP = sys::KEVENT_POLL_POLLHUP;
        /// `KEVENT_POLL_POLLRDHUP`: the peer closed its writing half.
        const RDHUP = sys::KEVENT_POLL_POLLRDHUP;
        // Keep unknown bits (see the module docs).
        const _ = !0;
    }
}

bitflags::bitflags! {
    /// Directory events for [`Source::inode`](crate::Source::inode) (`KEVENT_INODE_*`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct InodeEvents: u32 {
        /// `KEVENT_INODE_CREATE`: an entry was created in the directory.
        const CREATE = sys::KEVENT_INODE_CREATE;
        /// `KEVENT_INODE_REMOVE`: an entry was removed from the directory.
        const REMOVE = sys::KEVENT_INODE_REMOVE;
        // Keep unknown bits (see the module docs).
        const _ = !0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_bits_are_kept_not_trimmed() {
        let i = Interest::from_bits_retain(0x8000 | sys::KEVENT_SOCKET_RECV);
        assert_eq!(i.bits(), 0x8001);
        assert!(i.contains(Interest::READABLE));
    }

    #[test]
    fn the_bits_are_the_c_abi_values() {
        assert_eq!(Interest::READABLE.bits(), 0x1);
        assert_eq!(Interest::ACCEPT.bits(), 0x2);
        assert_eq!(Interest::WRITABLE.bits(), 0x4);
        assert_eq!(PollMask::RDHUP.bits(), 0x2000);
    }
}

//! Inode events: entries created in or removed from a watched directory, through the
//! queue's inotify instance (created on first use, in the producer's epoll set).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::inotify;

use crate::abi::*;
use crate::epoll;

/// The queue's inotify instance.
#[derive(Debug, Default)]
pub(crate) struct Inodes {
    fd: Option<OwnedFd>,
}

impl Inodes {
    /// Watches the directory open at `dir_fd` for the events in `event`; returns the watch
    /// descriptor (shared by every kevent on the same directory).
    pub(crate) fn add(
        &mut self,
        epoll_fd: BorrowedFd<'_>,
        dir_fd: i32,
        event: u32,
        token: u64,
    ) -> Result<i32, i32> {
        if event == 0 || event & !(KEVENT_INODE_CREATE | KEVENT_INODE_REMOVE) != 0 {
            return Err(libc::EINVAL);
        }
        if dir_fd < 0 {
            return Err(libc::EBADF);
        }
        // SAFETY: borrowed only for the fstat; a closed fd gives EBADF.
        let dir = unsafe { BorrowedFd::borrow_raw(dir_fd) };
        rustix::fs::fstat(dir).map_err(|e| e.raw_os_error())?;
        if self.fd.is_none() {
            let fd = inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC)
                .map_err(|e| e.raw_os_error())?;
            epoll::add(epoll_fd, fd.as_raw_fd(), token, libc::EPOLLIN as u32)?;
            self.fd = Some(fd);
        }
        let ino = self.fd.as_ref().expect("created above");
        let mask = inotify::WatchFlags::CREATE
            | inotify::WatchFlags::DELETE
            | inotify::WatchFlags::MOVED_TO
            | inotify::WatchFlags::MOVED_FROM
            | inotify::WatchFlags::ONLYDIR
            | inotify::WatchFlags::MASK_ADD;
        let path = format!("/proc/self/fd/{}", dir.as_raw_fd());
        inotify::add_watch(ino, path, mask).map_err(|e| e.raw_os_error())
    }

    /// Drops a watch no kevent uses any more.
    pub(crate) fn remove(&mut self, wd: i32) {
        if let Some(fd) = &self.fd {
            let _ = inotify::remove_watch(fd, wd);
        }
    }

    /// Reads pending inotify events as `(wd, kevent event bit)`.
    pub(crate) fn read(&self) -> Vec<(i32, u32)> {
        let mut out = Vec::new();
        let Some(fd) = &self.fd else { return out };
        let mut buf = [0u8; 4096];
        while let Ok(n) = rustix::io::read(fd.as_fd(), &mut buf) {
            if n == 0 {
                break;
            }
            let mut off = 0;
            // struct inotify_event { int wd; u32 mask; u32 cookie; u32 len; char name[len]; }
            while off + 16 <= n {
                let word = |i: usize| {
                    u32::from_ne_bytes(buf[off + i..off + i + 4].try_into().expect("4 bytes"))
                };
                let (wd, mask, len) = (word(0) as i32, word(4), word(12) as usize);
                let bit = if mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0 {
                    KEVENT_INODE_CREATE
                } else if mask & (libc::IN_DELETE | libc::IN_MOVED_FROM) != 0 {
                    KEVENT_INODE_REMOVE
                } else {
                    0
                };
                if bit != 0 {
                    out.push((wd, bit));
                }
                off += 16 + len;
            }
        }
        out
    }
}

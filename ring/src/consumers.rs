//! The consumer table and each consumer's liveness token.
//!
//! Every attached consumer owns one record of the header's table; its [`ConsumerId`] is
//! the record's index plus one and is what a slot's owner field names. Liveness is not
//! the pid (pids are reused) but an open-file-description lock (`F_OFD_SETLK`) on the
//! consumer's own byte of the memfd, taken through its *own* open file description (a
//! re-open of `/proc/self/fd/N`: an fd inherited across `fork` or received with
//! `SCM_RIGHTS` shares the description, and so would share the lock). The kernel drops
//! the lock when the last fd of that description closes, i.e. when the process dies,
//! however it dies. The reaper asks with `F_OFD_GETLK` whether anyone still holds it.
//!
//! Taking a record: lock the byte first, then CAS the record FREE → ACTIVE. A record is
//! therefore never ACTIVE without a live lock unless its owner died, which is exactly
//! what the reaper looks for.

use crate::layout::ConsumerRecord;
use crate::sync::Ordering;
use crate::{ConsumerId, Ring};

/// The lifecycle of a consumer record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum RecordState {
    /// Nobody uses the record.
    Free = 0,
    /// A live consumer holds it.
    Active = 1,
    /// Its consumer detached or died; the reaper will reclaim its entries, then free it.
    Departed = 2,
}

impl RecordState {
    /// Decodes a record's state word (anything unknown is treated as departed: the reaper
    /// will clean it up rather than trust it).
    pub fn from_word(w: u32) -> RecordState {
        match w {
            0 => RecordState::Free,
            1 => RecordState::Active,
            _ => RecordState::Departed,
        }
    }
}

impl Ring {
    /// The record of consumer `id`, if `id` names one.
    pub fn record(&self, id: ConsumerId) -> Option<&ConsumerRecord> {
        let index = usize::from(id.0).checked_sub(1)?;
        self.header().consumers.get(index)
    }

    /// Takes record `index` if it is free. The caller holds the record's liveness lock
    /// already (see the module docs).
    pub fn take_record(&self, index: usize) -> Option<ConsumerId> {
        let rec = self.header().consumers.get(index)?;
        rec.state
            .compare_exchange(
                RecordState::Free as u32,
                RecordState::Active as u32,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .ok()?;
        rec.generation.fetch_add(1, Ordering::Relaxed);
        rec.pid.store(std::process::id(), Ordering::Relaxed);
        rec.claimed.store(0, Ordering::Relaxed);
        rec.completed.store(0, Ordering::Relaxed);
        Some(ConsumerId(index as u16 + 1))
    }

    /// Takes the first free record (heap rings and tests: no liveness lock).
    pub fn register_consumer(&self) -> Option<ConsumerId> {
        (0..self.header().consumers.len()).find_map(|i| self.take_record(i))
    }

    /// `id` leaves. If it completed everything it claimed, its record is free at once
    /// (a consumer that attaches and detaches quickly does not fill the table);
    /// otherwise it is marked departed and the reaper re-delivers what it still holds,
    /// then frees it.
    pub fn depart(&self, id: ConsumerId) {
        if let Some(rec) = self.record(id) {
            let claimed = rec.claimed.load(Ordering::Acquire);
            let completed = rec.completed.load(Ordering::Acquire);
            if claimed == completed {
                self.free_record(id);
            } else {
                rec.state
                    .store(RecordState::Departed as u32, Ordering::Release);
            }
        }
    }

    /// Frees the record of `id` (the reaper, once nothing in the ring names it). Sleeps
    /// it was still counted in (it died asleep) are taken out of the ring's `waiters`.
    pub fn free_record(&self, id: ConsumerId) {
        if let Some(rec) = self.record(id) {
            let asleep = rec.sleeping.swap(0, Ordering::Relaxed);
            if asleep > 0 {
                let waiters = &self.header().wake.waiters;
                let _ = waiters.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                    Some(w.saturating_sub(asleep))
                });
            }
            rec.pid.store(0, Ordering::Relaxed);
            rec.state.store(RecordState::Free as u32, Ordering::Release);
        }
    }

    /// The state of every record, as `(id, state, pid)`.
    pub fn consumers(&self) -> impl Iterator<Item = (ConsumerId, RecordState, u32)> + '_ {
        self.header().consumers.iter().enumerate().map(|(i, rec)| {
            (
                ConsumerId(i as u16 + 1),
                RecordState::from_word(rec.state.load(Ordering::Acquire)),
                rec.pid.load(Ordering::Relaxed),
            )
        })
    }
}

#[cfg(not(loom))]
pub use liveness::Liveness;

#[cfg(not(loom))]
mod liveness {
    use std::io;
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

    use crate::layout::{LOCK_BASE, MAX_CONSUMERS};
    use crate::{ConsumerId, Ring};

    fn ofd_lock(
        fd: BorrowedFd<'_>,
        cmd: libc::c_int,
        kind: libc::c_short,
        byte: u64,
    ) -> io::Result<libc::flock> {
        // SAFETY: flock is a plain C struct; all-zero is a valid value.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = kind;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        fl.l_start = byte as libc::off_t;
        fl.l_len = 1;
        fl.l_pid = 0; // required to be 0 for OFD locks
                      // SAFETY: F_OFD_SETLK / F_OFD_GETLK take a pointer to a flock, which lives on our
                      // stack for the duration of the call.
        let r = unsafe { libc::fcntl(fd.as_raw_fd(), cmd, &mut fl as *mut libc::flock) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(fl)
        }
    }

    /// A consumer's liveness token: its own open file description of the ring's memfd,
    /// holding a write lock on the consumer's byte. Dropping it releases the lock.
    #[derive(Debug)]
    pub struct Liveness {
        /// Held, not read: closing this description releases the lock.
        _ofd: OwnedFd,
        id: ConsumerId,
    }

    impl Liveness {
        /// Registers a consumer in `ring`'s table with a liveness lock: re-opens the memfd
        /// (a description of our own), locks the first free record's byte, takes the
        /// record. `Err` with `EBUSY`-like `WouldBlock` if the table is full.
        pub fn register(ring: &Ring) -> io::Result<Liveness> {
            let memfd = ring.memfd().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    "a heap ring has no memfd to lock",
                )
            })?;
            let path = format!("/proc/self/fd/{}", memfd.as_raw_fd());
            let ofd: OwnedFd = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| match e.raw_os_error() {
                    // The errno as it is (EMFILE, ENFILE...): callers match on it.
                    Some(_) => e,
                    None => io::Error::new(
                        e.kind(),
                        format!("re-opening the ring memfd via {path}: {e}"),
                    ),
                })?
                .into();
            for index in 0..MAX_CONSUMERS {
                let byte = LOCK_BASE + index as u64;
                match ofd_lock(ofd.as_fd(), libc::F_OFD_SETLK, libc::F_WRLCK as _, byte) {
                    Ok(_) => {}
                    Err(e)
                        if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) =>
                    {
                        continue
                    }
                    Err(e) => return Err(e),
                }
                if let Some(id) = ring.take_record(index) {
                    return Ok(Liveness { _ofd: ofd, id });
                }
                // The record is still held by a departed consumer the reaper has not
                // freed yet: let go of the lock and look further.
                ofd_lock(ofd.as_fd(), libc::F_OFD_SETLK, libc::F_UNLCK as _, byte)?;
            }
            Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("the ring's consumer table is full ({MAX_CONSUMERS} consumers)"),
            ))
        }

        /// This consumer's id.
        pub fn id(&self) -> ConsumerId {
            self.id
        }

        /// Whether the consumer `id` of the ring behind `memfd` still holds its lock. Ask
        /// through a description that is not the consumer's own (the producer's memfd):
        /// a description never conflicts with its own locks.
        pub fn is_alive(memfd: BorrowedFd<'_>, id: ConsumerId) -> io::Result<bool> {
            let Some(index) = usize::from(id.0).checked_sub(1) else {
                return Ok(false);
            };
            let fl = ofd_lock(
                memfd,
                libc::F_OFD_GETLK,
                libc::F_WRLCK as _,
                LOCK_BASE + index as u64,
            )?;
            Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
        }
    }
}

//! [`ConnTable`]: the connections of a server whose workers share them — any worker may
//! take any connection's event from a shared queue, so each connection sits behind a
//! lock of its own (uncontended but for the rare event that two workers hold at once).
//!
//! Indexed by fd number: the kernel hands out the lowest free number, so the table is
//! dense and needs no free list. A connection's [`Token`] is its fd number and a
//! generation, bumped when the slot is reused, so an event of a closed connection that
//! a worker still held can never reach the next connection with the same number.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::{Mutex, MutexGuard};

use kevent::Token;

use super::conn::Conn;

/// One slot: the connection with that fd number, if open.
#[derive(Debug, Default)]
pub struct Slot {
    generation: u32,
    conn: Option<Conn>,
    /// Whether the connection's kevent asks for `WRITABLE` (else `READABLE`).
    pub writing: bool,
}

impl Slot {
    /// The open connection.
    pub fn conn(&mut self) -> &mut Conn {
        self.conn
            .as_mut()
            .expect("ConnTable::lock gives only open slots")
    }

    /// Drops the connection, closing its socket (remove it from its queue first).
    pub fn close(&mut self) {
        self.conn = None;
        self.writing = false;
    }
}

/// The connections by fd number.
#[derive(Debug)]
pub struct ConnTable {
    slots: Box<[Mutex<Slot>]>,
}

impl ConnTable {
    /// A table for every fd this process may open (`RLIMIT_NOFILE`).
    pub fn new() -> ConnTable {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(1 << 20)
            .min(1 << 20) as usize;
        ConnTable {
            slots: (0..limit).map(|_| Mutex::default()).collect(),
        }
    }

    /// Stores `conn` in its fd's slot; its token.
    ///
    /// # Errors
    /// `EMFILE` if the fd is beyond the table (cannot happen while the limit holds).
    pub fn insert(&self, conn: Conn) -> io::Result<Token> {
        let fd = conn.stream().as_raw_fd() as usize;
        let slot = self
            .slots
            .get(fd)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EMFILE))?;
        let mut slot = lock(slot);
        slot.generation = slot.generation.wrapping_add(1);
        slot.conn = Some(conn);
        slot.writing = false;
        Ok(Token(u64::from(slot.generation) << 32 | fd as u64))
    }

    /// The slot of `token`, locked, if that connection is still open.
    pub fn lock(&self, token: Token) -> Option<MutexGuard<'_, Slot>> {
        let fd = (token.0 & 0xffff_ffff) as usize;
        let generation = (token.0 >> 32) as u32;
        let slot = lock(self.slots.get(fd)?);
        (slot.generation == generation && slot.conn.is_some()).then_some(slot)
    }
}

impl Default for ConnTable {
    fn default() -> Self {
        ConnTable::new()
    }
}

fn lock(m: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    // A worker that panicked left a connection in some state; serving it on is fine.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

//! [`FdHandler`]: read, write and poll callbacks for one fd (QEMU's `aio_set_fd_handler`),
//! and the loop's table of them.
//!
//! Each fd with a handler is one `KEVENT_POLL` kevent on the loop's queue, level-triggered
//! as QEMU's epoll set is, its mask `IN` (read or poll callback) and/or `OUT` (write
//! callback). Its [`Token`] names the handler's slot and the slot's generation, so an
//! event claimed before the handler was removed — and its slot reused — is recognised as
//! stale and dropped. Replacing a handler keeps its slot and token: an event already
//! claimed goes to the new callbacks.
//!
//! The table is behind a read-write lock that is never held while a callback runs: a
//! callback may set or remove any handler, its own included. The entry it runs from is
//! an `Arc`, so removing it frees the callbacks only once the running one returns.

use std::collections::HashMap;
use std::fmt;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::context::Loop;
use crate::{Kind, PollMask, Queue, Result, Source, Token, Trigger};

/// A read or write callback.
pub(super) type FdFn = Arc<dyn Fn(&Loop) + Send + Sync>;
/// A poll callback: whether the fd has work (then the read callback runs).
pub(super) type PollFn = Arc<dyn Fn(&Loop) -> bool + Send + Sync>;

/// The callbacks of one fd, for [`Loop::set_fd_handler`].
///
/// ```
/// # use kevent::{FdHandler, Loop};
/// # use std::io::{Read, Write};
/// # use std::sync::Arc;
/// let lp = Loop::new()?;
/// let (r, mut w) = std::io::pipe()?;
/// let r = Arc::new(r);
/// let reader = r.clone();
/// lp.set_fd_handler(&*r, FdHandler::new().read(move |_lp| {
///     let mut buf = [0u8; 16];
///     let n = (&*reader).read(&mut buf).unwrap();
///     assert_eq!(&buf[..n], b"hi");
/// }))?;
/// w.write_all(b"hi")?;
/// assert!(lp.poll(true)); // the read callback ran
/// lp.remove_fd_handler(&*r)?; // before the fd is closed, as with epoll
/// # Ok::<(), kevent::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct FdHandler {
    pub(super) read: Option<FdFn>,
    pub(super) write: Option<FdFn>,
    pub(super) poll: Option<PollFn>,
    pub(super) external: bool,
}

impl FdHandler {
    /// No callbacks yet (setting it as is removes the fd's handler).
    pub fn new() -> FdHandler {
        FdHandler::default()
    }

    /// `io_read`: runs when the fd is readable (or at end of file, or in error).
    pub fn read(mut self, f: impl Fn(&Loop) + Send + Sync + 'static) -> FdHandler {
        self.read = Some(Arc::new(f));
        self
    }

    /// `io_write`: runs when the fd is writable (or in error).
    pub fn write(mut self, f: impl Fn(&Loop) + Send + Sync + 'static) -> FdHandler {
        self.write = Some(Arc::new(f));
        self
    }

    /// `io_poll`: called repeatedly while the loop busy-polls (see
    /// [`Loop::set_poll_params`]); returns whether the fd has work, and then the read
    /// callback runs. Cheap and without system calls, as it runs in a tight loop.
    pub fn poll(mut self, f: impl Fn(&Loop) -> bool + Send + Sync + 'static) -> FdHandler {
        self.poll = Some(Arc::new(f));
        self
    }

    /// `is_external`: an external source (a guest's requests, in QEMU) is not dispatched
    /// in a nested poll or a drained section; its events are kept for after.
    pub fn external(mut self, external: bool) -> FdHandler {
        self.external = external;
        self
    }

    fn mask(&self) -> PollMask {
        let mut mask = PollMask::empty();
        if self.read.is_some() || self.poll.is_some() {
            mask |= PollMask::IN;
        }
        if self.write.is_some() {
            mask |= PollMask::OUT;
        }
        mask
    }
}

impl fmt::Debug for FdHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FdHandler")
            .field("read", &self.read.is_some())
            .field("write", &self.write.is_some())
            .field("poll", &self.poll.is_some())
            .field("external", &self.external)
            .finish()
    }
}

/// One registered handler, as dispatch sees it.
pub(super) struct Entry {
    pub(super) token: Token,
    pub(super) handler: FdHandler,
    /// Replaced or removed: a busy poll holding an old snapshot skips it.
    pub(super) removed: AtomicBool,
}

struct Slot {
    gen: u32,
    fd: RawFd,
    entry: Option<Arc<Entry>>,
    /// The kevent is removed from the queue while an event of this external handler is
    /// kept (see `external.rs`).
    muted: bool,
}

#[derive(Default)]
struct Table {
    slots: Vec<Slot>,
    by_fd: HashMap<RawFd, u32>,
    free: Vec<u32>,
    /// The entries with a poll callback, for busy polling without the lock.
    pollers: Arc<[Arc<Entry>]>,
}

/// The loop's fd handlers.
#[derive(Default)]
pub(super) struct HandlerTable {
    table: RwLock<Table>,
}

fn source(fd: RawFd, mask: PollMask) -> Source {
    Source::from_raw(Kind::Poll, u64::from(fd as u32), mask.bits())
}

fn token(slot: u32, gen: u32) -> Token {
    Token(u64::from(gen) << 32 | u64::from(slot))
}

fn split(token: Token) -> (u32, u32) {
    (token.0 as u32, (token.0 >> 32) as u32)
}

impl HandlerTable {
    fn read(&self) -> RwLockReadGuard<'_, Table> {
        self.table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Table> {
        self.table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets, replaces or (no callbacks) removes the handler of `fd`.
    pub(super) fn set(&self, queue: &Queue, fd: RawFd, handler: FdHandler) -> Result<()> {
        let mask = handler.mask();
        if mask.is_empty() {
            return self.remove(queue, fd).map(drop);
        }
        let mut t = self.write();
        let t = &mut *t;
        let polls = handler.poll.is_some();
        if let Some(&i) = t.by_fd.get(&fd) {
            let slot = &mut t.slots[i as usize];
            let old = slot.entry.take().expect("a mapped slot has an entry");
            let tok = old.token;
            if old.handler.mask() != mask && !slot.muted {
                if let Err(e) = queue.modify(&source(fd, mask), tok, Trigger::Level) {
                    slot.entry = Some(old);
                    return Err(e);
                }
            }
            old.removed.store(true, Ordering::Release);
            let had_poll = old.handler.poll.is_some();
            slot.entry = Some(Arc::new(Entry {
                token: tok,
                handler,
                removed: AtomicBool::new(false),
            }));
            if had_poll || polls {
                t.rebuild_pollers();
            }
            return Ok(());
        }
        let i = t.free.pop().unwrap_or_else(|| {
            t.slots.push(Slot {
                gen: 0,
                fd: -1,
                entry: None,
                muted: false,
            });
            (t.slots.len() - 1) as u32
        });
        let slot = &mut t.slots[i as usize];
        let tok = token(i, slot.gen);
        // Queue::add queues an fd that is ready at once: nothing is lost before the first
        // wait.
        if let Err(e) = queue.add(&source(fd, mask), tok, Trigger::Level) {
            t.free.push(i);
            return Err(e);
        }
        slot.fd = fd;
        slot.muted = false;
        slot.entry = Some(Arc::new(Entry {
            token: tok,
            handler,
            removed: AtomicBool::new(false),
        }));
        t.by_fd.insert(fd, i);
        if polls {
            t.rebuild_pollers();
        }
        Ok(())
    }

    /// Removes the handler of `fd`; returns whether there was one. Events of it already
    /// claimed are dropped when their turn comes (the token's generation moved on).
    pub(super) fn remove(&self, queue: &Queue, fd: RawFd) -> Result<bool> {
        let mut t = self.write();
        let Some(i) = t.by_fd.remove(&fd) else {
            return Ok(false);
        };
        let (entry, muted) = t.release(i);
        let polls = entry.handler.poll.is_some();
        if polls {
            t.rebuild_pollers();
        }
        drop(t);
        if muted {
            return Ok(true);
        }
        queue
            .remove(&source(fd, entry.handler.mask()))
            .map(|()| true)
    }

    /// The current handler for an event's token, if that handler is still registered.
    /// Whether `fd` has a handler.
    pub(super) fn has_fd(&self, fd: RawFd) -> bool {
        self.read().by_fd.contains_key(&fd)
    }

    pub(super) fn get(&self, tok: Token) -> Option<Arc<Entry>> {
        let (i, gen) = split(tok);
        let t = self.read();
        let slot = t.slots.get(i as usize)?;
        (slot.gen == gen).then(|| slot.entry.clone()).flatten()
    }

    /// The handlers with a poll callback.
    pub(super) fn pollers(&self) -> Arc<[Arc<Entry>]> {
        self.read().pollers.clone()
    }

    /// Takes the kevent of `tok`'s handler off the queue while its events are kept.
    pub(super) fn mute(&self, queue: &Queue, tok: Token) -> Result<()> {
        self.set_muted(queue, tok, true)
    }

    /// Registers a muted handler's kevent again (queued at once if the fd is ready).
    pub(super) fn unmute(&self, queue: &Queue, tok: Token) -> Result<()> {
        self.set_muted(queue, tok, false)
    }

    /// Removes (`muted`) or adds back the kevent of `tok`'s handler, if the handler is
    /// still registered and not in that state already.
    fn set_muted(&self, queue: &Queue, tok: Token, muted: bool) -> Result<()> {
        let (i, gen) = split(tok);
        let mut t = self.write();
        let Some(slot) = t.slots.get_mut(i as usize) else {
            return Ok(());
        };
        let Some(entry) = slot
            .entry
            .as_ref()
            .filter(|_| slot.gen == gen && slot.muted != muted)
        else {
            return Ok(());
        };
        let src = source(slot.fd, entry.handler.mask());
        if muted {
            queue.remove(&src)?;
        } else {
            queue.add(&src, tok, Trigger::Level)?;
        }
        slot.muted = muted;
        Ok(())
    }

    /// Removes every handler (the loop is dropped); errors are of no use then.
    pub(super) fn clear(&self, queue: &Queue) {
        let mut t = self.write();
        let fds: Vec<(RawFd, u32)> = t.by_fd.drain().collect();
        for (fd, i) in fds {
            let (entry, muted) = t.release(i);
            if !muted {
                let _ = queue.remove(&source(fd, entry.handler.mask()));
            }
        }
        t.pollers = Arc::new([]);
    }
}

impl Table {
    /// Frees slot `i`: its generation moves on, so its token names nothing.
    fn release(&mut self, i: u32) -> (Arc<Entry>, bool) {
        let slot = &mut self.slots[i as usize];
        let entry = slot.entry.take().expect("a mapped slot has an entry");
        entry.removed.store(true, Ordering::Release);
        slot.gen = if slot.gen + 1 == u32::MAX {
            0
        } else {
            slot.gen + 1
        };
        let muted = std::mem::replace(&mut slot.muted, false);
        slot.fd = -1;
        self.free.push(i);
        (entry, muted)
    }

    fn rebuild_pollers(&mut self) {
        self.pollers = self
            .slots
            .iter()
            .filter_map(|s| s.entry.clone())
            .filter(|e| e.handler.poll.is_some())
            .collect();
    }
}

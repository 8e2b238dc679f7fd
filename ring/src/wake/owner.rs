//! The owner's liveness word: how a consumer in another process learns, while it sleeps,
//! that the process owning the queue died (ARCHITECTURE.md §5, "Processes are peers").
//!
//! The owner's producer thread holds a *robust futex*: the header's `owner` word holds
//! its thread id, and the word is on that thread's robust list (`set_robust_list(2)`).
//! When the thread ends, however it ends — `SIGKILL` included — the kernel walks the
//! list, sets `FUTEX_OWNER_DIED` in the word and, if `FUTEX_WAITERS` is set, wakes one
//! waiter. A sleeper therefore announces itself by setting `FUTEX_WAITERS` and sleeps with
//! `futex_waitv(2)` (Linux 5.16) on the ring's wake-up word *and* the owner word: the
//! first wakes it for entries, the second for the owner's death, with no thread and no
//! periodic tick of its own.
//!
//! ```text
//!  sleeper                                   the kernel, when the owner's thread ends
//!  w = owner                                 if owner & TID == its tid:
//!  if w & OWNER_DIED: closed, return             was = owner
//!  CAS owner: w -> w | WAITERS                   owner = OWNER_DIED | (was & WAITERS)
//!  futex_waitv(seq == s, owner == w|WAITERS)     if was & WAITERS: wake one
//! ```
//!
//! The sleeper's CAS and the kernel's update are both atomic on the word, so either the
//! CAS fails (the owner died first: the sleeper sees it) or the kernel finds `WAITERS`
//! and wakes a sleeper; `futex_waitv` queues the sleeper only while the word still holds
//! the value it expects. The one sleeper the kernel wakes marks the ring closed (its
//! `closed` word says why) and wakes every other sleeper through the ring's own word.
//! A loom model checks this handshake (`ring/tests/loom_sleep.rs`, section j).
//!
//! A queue closed normally restores the thread's previous robust list before the thread
//! ends (the ring is marked closed first), so nothing is reported as a death.

use crate::sync::{AtomicU32, Ordering};
use crate::Ring;

/// The kernel's `FUTEX_WAITERS`: somebody sleeps on the word.
pub(crate) const FUTEX_WAITERS: u32 = 0x8000_0000;
/// The kernel's `FUTEX_OWNER_DIED`: the thread holding the word ended.
pub(crate) const FUTEX_OWNER_DIED: u32 = 0x4000_0000;

/// The `closed` word's values (the header's identity block).
pub(crate) const CLOSED_BY_OWNER: u32 = 1;
/// The owner's producer thread ended without closing the queue: the owner died.
pub(crate) const CLOSED_OWNER_DIED: u32 = 2;

/// What a sleeper may sleep on besides the ring's wake-up word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OwnerWatch {
    /// Nobody holds the word (the producer thread has not started, or another
    /// implementation made the ring): sleep on the wake-up word alone.
    Unheld,
    /// Held: sleep while the word still holds this value (`FUTEX_WAITERS` set).
    Alive(u32),
    /// The owner died.
    Died,
}

impl Ring {
    pub(crate) fn owner_word(&self) -> &AtomicU32 {
        &self.header().wake.owner
    }

    /// Whether the queue's owner died: its producer thread ended without closing the
    /// queue (the kernel marked the owner word), or a consumer that saw that already
    /// closed the ring for that reason.
    pub fn owner_died(&self) -> bool {
        self.header().identity.closed.load(Ordering::Acquire) == CLOSED_OWNER_DIED
            || self.owner_word().load(Ordering::Acquire) & FUTEX_OWNER_DIED != 0
    }

    /// Sleeper: announces itself on the owner word (sets `FUTEX_WAITERS`, see the module
    /// docs) and says what to sleep on.
    pub(crate) fn watch_owner(&self) -> OwnerWatch {
        let word = self.owner_word();
        let mut w = word.load(Ordering::Acquire);
        loop {
            if w & FUTEX_OWNER_DIED != 0 {
                return OwnerWatch::Died;
            }
            if w == 0 {
                return OwnerWatch::Unheld;
            }
            if w & FUTEX_WAITERS != 0 {
                return OwnerWatch::Alive(w);
            }
            match word.compare_exchange_weak(
                w,
                w | FUTEX_WAITERS,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return OwnerWatch::Alive(w | FUTEX_WAITERS),
                Err(now) => w = now,
            }
        }
    }

    /// Called by whoever finds the owner dead: closes the ring for that reason (once)
    /// and wakes every sleeper, wherever it sleeps. Besides the sleeper the kernel wakes
    /// through the owner word, a consumer that learns it otherwise — the owner's pidfd
    /// readable: its process ended — calls it, in case the word never said so.
    pub fn note_owner_died(&self) {
        if self
            .header()
            .identity
            .closed
            .compare_exchange(0, CLOSED_OWNER_DIED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.wake_all();
        }
    }

    /// The kernel's side of the handshake, for the loom models: what the kernel does to
    /// the owner word when the owner's thread ends (`handle_futex_death`): marks it
    /// `FUTEX_OWNER_DIED`, keeping `FUTEX_WAITERS`, and if that was set wakes one waiter
    /// of the word.
    #[cfg(loom)]
    pub fn model_owner_thread_ends(&self) {
        let word = self.owner_word();
        let mut w = word.load(Ordering::Acquire);
        let waiters = loop {
            let died = FUTEX_OWNER_DIED | (w & FUTEX_WAITERS);
            match word.compare_exchange(w, died, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break w & FUTEX_WAITERS != 0,
                Err(now) => w = now,
            }
        };
        if waiters {
            // The futex model wakes both words' sleepers through one parking (futex.rs).
            self.parking.wake(1);
        }
    }

    /// Loom models: the owner holds the word (as `hold_owner_lock` does for real).
    #[cfg(loom)]
    pub fn model_hold_owner(&self, tid: u32) {
        self.owner_word().store(tid, Ordering::Release);
    }
}

#[cfg(not(loom))]
pub use lock::OwnerLock;

#[cfg(not(loom))]
mod lock {
    use std::io;
    use std::marker::PhantomData;

    use crate::sync::Ordering;
    use crate::Ring;

    /// The kernel's `struct robust_list_head` followed by our one list entry (see the
    /// module docs). The head's `list.next` points at the entry, the entry's `next` back
    /// at the head (the end of the list); the futex word is at entry + `futex_offset`.
    #[repr(C)]
    struct RobustList {
        head_next: usize,
        futex_offset: isize,
        list_op_pending: usize,
        entry_next: usize,
    }

    /// The owner's hold on the ring's owner word, in the thread that took it (the
    /// producer thread). Dropping it (in that thread) puts the thread's previous robust
    /// list back: a normal end of the thread is not reported as a death.
    pub struct OwnerLock {
        /// Read by the kernel, never by us; freed after the previous list is back.
        _list: Box<RobustList>,
        prev_head: usize,
        prev_len: usize,
        // The robust list belongs to the thread: the lock must be dropped there.
        _not_send: PhantomData<*const ()>,
    }

    impl Ring {
        /// Producer thread: takes the owner word for this thread (its tid), registered
        /// on the thread's robust list, so that the kernel marks the word
        /// `FUTEX_OWNER_DIED` and wakes a sleeper when the thread ends without dropping
        /// the returned lock — the process died (module docs). Keep the lock for the
        /// thread's life and drop it in the same thread, after closing the ring.
        ///
        /// # Errors
        /// The errors of `get_robust_list(2)` / `set_robust_list(2)` (`ENOSYS` on a
        /// kernel without them).
        pub fn hold_owner_lock(&self) -> io::Result<OwnerLock> {
            let mut prev_head: usize = 0;
            let mut prev_len: usize = 0;
            // SAFETY: get_robust_list(0, ...) writes the calling thread's list head
            // pointer and its length into the two words we pass, which live on our stack.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_get_robust_list,
                    0,
                    &mut prev_head as *mut usize,
                    &mut prev_len as *mut usize,
                )
            };
            if r != 0 {
                return Err(io::Error::last_os_error());
            }
            let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
            let word = self.owner_word();
            let mut list = Box::new(RobustList {
                head_next: 0,
                futex_offset: 0,
                list_op_pending: 0,
                entry_next: 0,
            });
            let head = &list.head_next as *const usize as usize;
            let entry = &list.entry_next as *const usize as usize;
            list.head_next = entry;
            list.entry_next = head;
            list.futex_offset = (word as *const _ as isize).wrapping_sub(entry as isize);
            word.store(tid, Ordering::Release);
            // SAFETY: the list lives in a Box owned by the returned lock, which puts the
            // previous list back before it frees the Box (and must be dropped in this
            // thread); until then the kernel may read it at any time, and it is a valid
            // `struct robust_list_head` of `size_of` 24 whose one entry points (through
            // `futex_offset`) at the owner word, which lives in the ring's mapping for as
            // long as the ring does — the caller (the producer thread) holds the ring.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_set_robust_list,
                    head as *const RobustList,
                    3 * std::mem::size_of::<usize>(),
                )
            };
            if r != 0 {
                let e = io::Error::last_os_error();
                word.store(0, Ordering::Release);
                return Err(e);
            }
            Ok(OwnerLock {
                _list: list,
                prev_head,
                prev_len,
                _not_send: PhantomData,
            })
        }
    }

    impl Drop for OwnerLock {
        fn drop(&mut self) {
            // SAFETY: puts back the head this thread had before `hold_owner_lock` (glibc's
            // own, in its thread control block, valid for the thread's life) with its
            // length; our list is no longer read by the kernel once this returns.
            unsafe {
                libc::syscall(
                    libc::SYS_set_robust_list,
                    self.prev_head as *const libc::c_void,
                    self.prev_len,
                );
            }
        }
    }
}

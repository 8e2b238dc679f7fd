//! [`KernelLock`]: the one lock whoever acts as the kernel holds, and its guard, which
//! sends the notifications the kernel noted (`outbox.rs`) after it unlocks.
//!
//! The lock serves in arrival order ([`kevent_ring::TicketLock`]): a poller with reports
//! in hand, or the producer thread, never starves behind a thread calling `kevent_ctl`
//! in a loop (a barging mutex kept a poller waiting 12.7 ms behind 1,000 ADDs).

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use kevent_ring::TicketLock;

use super::{Completions, Kernel};
use crate::outbox::Outbox;

/// The kernel of one queue (`None` once the queue closed) behind its lock.
pub(crate) struct KernelLock {
    lock: TicketLock,
    kernel: UnsafeCell<Option<Kernel>>,
    outbox: Arc<Outbox>,
    completions: Arc<Completions>,
}

// SAFETY: the kernel is reached only through a `KernelGuard`, which exists only while its
// thread holds `lock` (taken in `lock`/`try_lock`, released in the guard's drop): one
// thread at a time, as with a `Mutex`. `Kernel` is `Send`.
unsafe impl Sync for KernelLock {}
// SAFETY: as above; moving the lock moves the kernel, which is `Send`.
unsafe impl Send for KernelLock {}

/// The kernel, locked. Dropping it unlocks, then sends what the kernel noted meanwhile.
pub(crate) struct KernelGuard<'a> {
    owner: &'a KernelLock,
}

impl KernelLock {
    pub(crate) fn new(kernel: Kernel) -> KernelLock {
        let (outbox, completions) = (kernel.outbox.clone(), kernel.completions.clone());
        KernelLock {
            lock: TicketLock::new(),
            kernel: UnsafeCell::new(Some(kernel)),
            outbox,
            completions,
        }
    }

    /// Locks the kernel, after everyone who asked before. A panic while it is held (a
    /// bug) releases it as the guard drops; the kernel's state is consistent between
    /// calls.
    pub(crate) fn lock(&self) -> KernelGuard<'_> {
        self.lock.lock();
        KernelGuard { owner: self }
    }

    /// Lists `range`, positions a consumer of this process committed, for the kernel to
    /// handle (`release.rs`): now, if the lock is free; else by whoever holds it, as it
    /// unlocks. Returns whether it did the kernel's part itself (releases included).
    pub(crate) fn completed(&self, range: std::ops::Range<u64>) -> bool {
        self.completions.push(range);
        if !self.completions.is_pending() {
            return false;
        }
        // SeqCst fence: the committer's half of the handshake with an unlocking holder
        // (`Drop for KernelGuard`): either our `try_lock` finds the lock free, or the
        // holder's look after its unlock finds the list pending.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        let Some(mut guard) = self.try_lock() else {
            return false;
        };
        if let Some(k) = guard.as_mut() {
            k.service(0);
            k.settle();
        }
        true
    }

    /// Makes the notify fds readable now, without the lock (an explicit wake-up).
    pub(crate) fn notify_loops_now(&self) {
        self.outbox.notify_later();
        self.outbox.flush();
    }

    /// Whether completions wait to be handled (a consumer about to sleep handles them
    /// first: W4).
    pub(crate) fn completions_pending(&self) -> bool {
        self.completions.is_pending()
    }

    /// The kernel if nobody holds it or waits for it now.
    pub(crate) fn try_lock(&self) -> Option<KernelGuard<'_>> {
        // A guard is made only once the lock is ours: dropping one unlocks.
        if self.lock.try_lock() {
            Some(KernelGuard { owner: self })
        } else {
            None
        }
    }
}

impl Deref for KernelGuard<'_> {
    type Target = Option<Kernel>;
    fn deref(&self) -> &Option<Kernel> {
        // SAFETY: the guard exists only while this thread holds the lock (see the `Sync`
        // impl): no other reference to the kernel exists meanwhile.
        unsafe { &*self.owner.kernel.get() }
    }
}

impl DerefMut for KernelGuard<'_> {
    fn deref_mut(&mut self) -> &mut Option<Kernel> {
        // SAFETY: as in `deref`; `&mut self` makes this the only borrow through the guard.
        unsafe { &mut *self.owner.kernel.get() }
    }
}

impl Drop for KernelGuard<'_> {
    fn drop(&mut self) {
        // `unlock` ends with a SeqCst fence: completions listed by a committer whose
        // `try_lock` failed on us are seen below (`KernelLock::completed`).
        self.owner.lock.unlock();
        if self.owner.completions.is_pending() {
            if let Some(mut guard) = self.owner.try_lock() {
                if let Some(k) = guard.as_mut() {
                    k.service(0);
                    k.settle();
                }
            }
        }
        self.owner.outbox.flush();
    }
}

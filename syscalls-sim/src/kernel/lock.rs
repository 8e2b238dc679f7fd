//! [`KernelLock`]: the one mutex whoever acts as the kernel holds, and its guard, which
//! sends the notifications the kernel noted (`outbox.rs`) after it unlocks.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use super::Kernel;
use crate::outbox::Outbox;

/// The kernel of one queue (`None` once the queue closed) behind its mutex.
pub(crate) struct KernelLock {
    kernel: Mutex<Option<Kernel>>,
    outbox: Arc<Outbox>,
}

/// The kernel, locked. Dropping it unlocks, then sends what the kernel noted meanwhile.
pub(crate) struct KernelGuard<'a> {
    guard: Option<MutexGuard<'a, Option<Kernel>>>,
    outbox: &'a Outbox,
}

impl KernelLock {
    pub(crate) fn new(kernel: Kernel) -> KernelLock {
        let outbox = kernel.outbox.clone();
        KernelLock {
            kernel: Mutex::new(Some(kernel)),
            outbox,
        }
    }

    /// Locks the kernel, tolerating a poisoned mutex (a panic elsewhere must not take the
    /// queue down with it: the kernel's state is consistent between calls).
    pub(crate) fn lock(&self) -> KernelGuard<'_> {
        KernelGuard {
            guard: Some(self.kernel.lock().unwrap_or_else(|e| e.into_inner())),
            outbox: &self.outbox,
        }
    }

    /// The kernel if nobody holds it now.
    pub(crate) fn try_lock(&self) -> Option<KernelGuard<'_>> {
        let guard = match self.kernel.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        Some(KernelGuard {
            guard: Some(guard),
            outbox: &self.outbox,
        })
    }
}

impl Deref for KernelGuard<'_> {
    type Target = Option<Kernel>;
    fn deref(&self) -> &Option<Kernel> {
        self.guard.as_ref().expect("held until drop")
    }
}

impl DerefMut for KernelGuard<'_> {
    fn deref_mut(&mut self) -> &mut Option<Kernel> {
        self.guard.as_mut().expect("held until drop")
    }
}

impl Drop for KernelGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        self.outbox.flush();
    }
}

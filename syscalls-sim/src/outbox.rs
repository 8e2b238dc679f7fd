//! [`Outbox`]: the wake-ups the kernel owes fds that other event loops and processes
//! wait on — the notify fds and the doorbell — sent only after the kernel's lock is
//! released (ARCHITECTURE.md §5: no call of the owner blocks on an fd a peer can reach, and
//! nothing is written to such an fd while a lock is held).
//!
//! The kernel, under its lock, only *notes* that a notification is due (an atomic flag);
//! the guard of the lock (`KernelGuard` in `kernel/lock.rs`) sends what is due when it
//! drops, after unlocking. Every send is non-blocking per call (`WakeFd::ring`: a socket
//! with `MSG_DONTWAIT`, or a private eventfd), so even then a peer that clears
//! `O_NONBLOCK` or fills a buffer delays nobody, and a full buffer loses no wake-up (the
//! reader's end is readable then anyway).
//!
//! Ordering: whoever publishes notes "due" after the publish, under the lock; whoever
//! sends takes the flag first. So every publish is followed by a send that comes after
//! it — by the publisher, or by another thread that took the flag in between.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use kevent_ring::WakeFd;

use crate::peer::PeerId;

/// One notify fd: the owner's own handle, or a consumer in another process's channel.
struct Target {
    peer: PeerId,
    fd: WakeFd,
}

/// Notifications due, and where they go.
pub(crate) struct Outbox {
    notify_due: AtomicBool,
    doorbell_due: AtomicBool,
    targets: Mutex<Vec<Target>>,
    /// The doorbell's ringing end (the end every attached process holds).
    doorbell: WakeFd,
}

impl Outbox {
    pub(crate) fn new(doorbell: WakeFd) -> Outbox {
        Outbox {
            notify_due: AtomicBool::new(false),
            doorbell_due: AtomicBool::new(false),
            targets: Mutex::new(Vec::new()),
            doorbell,
        }
    }

    fn targets(&self) -> MutexGuard<'_, Vec<Target>> {
        self.targets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every notify fd is to be made readable (entries were published, the queue closed,
    /// an explicit wake-up).
    pub(crate) fn notify_later(&self) {
        self.notify_due.store(true, Ordering::Release);
    }

    /// The producer thread's doorbell is to be rung.
    pub(crate) fn doorbell_later(&self) {
        self.doorbell_due.store(true, Ordering::Release);
    }

    /// Adds `fd` as `peer`'s notify fd (replacing one it had).
    pub(crate) fn add_target(&self, peer: PeerId, fd: WakeFd) {
        let mut targets = self.targets();
        targets.retain(|t| t.peer != peer);
        targets.push(Target { peer, fd });
    }

    /// Forgets `peer`'s notify fd (its connection ended).
    pub(crate) fn drop_target(&self, peer: PeerId) {
        self.targets().retain(|t| t.peer != peer);
    }

    /// Sends what is due. Called without the kernel's lock (see the module docs).
    pub(crate) fn flush(&self) {
        if self.notify_due.load(Ordering::Relaxed) && self.notify_due.swap(false, Ordering::AcqRel)
        {
            // A target whose reader is gone (its process closed its end) is dropped.
            self.targets().retain(|t| t.fd.ring().is_ok());
        }
        if self.doorbell_due.load(Ordering::Relaxed)
            && self.doorbell_due.swap(false, Ordering::AcqRel)
        {
            let _ = self.doorbell.ring();
        }
    }
}

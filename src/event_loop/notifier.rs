//! [`EventNotifier`]: a flag any thread can set, with a handler the loop runs while it is
//! set (QEMU's `EventNotifier` with `aio_set_event_notifier`).
//!
//! QEMU's notifier is an eventfd, and setting it is a `write(2)`. Here it is an atomic
//! flag, queued on the loop's bottom-half list when set: setting it costs no system call
//! unless the loop sleeps (then one wake-up, as for a bottom half). The handler should
//! [`test_and_clear`](EventNotifier::test_and_clear) it, as QEMU's handlers do.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::context::{Loop, Shared};
use super::lock;
use super::poll::Work;
use super::stats::bump;

/// A notifier's handler.
pub(super) type NotifierFn = Arc<dyn Fn(&Loop, &EventNotifier) + Send + Sync>;

pub(super) struct NotifierInner {
    /// The notifier's state (an eventfd's counter being non-zero, in QEMU).
    flag: AtomicBool,
    /// On the loop's list, not yet taken.
    queued: AtomicBool,
    /// Kept by the loop for after a nested poll or drained section.
    pub(super) kept: AtomicBool,
    removed: AtomicBool,
    external: bool,
    handler: Mutex<Option<NotifierFn>>,
    shared: Arc<Shared>,
}

/// An event notifier attached to a loop: [`set`](EventNotifier::set) from any thread
/// makes the loop run its handler; the handler
/// [`test_and_clear`](EventNotifier::test_and_clear)s it.
///
/// Made by [`Loop::event_notifier`] (or [`Loop::external_event_notifier`]). The handler
/// runs at the loop's next iteration after a `set`, if the notifier is still set then (a
/// `test_and_clear` from elsewhere in between takes the event); several sets before that
/// run it once. Cheap to clone and share between threads.
///
/// ```
/// # use kevent::Loop;
/// let lp = Loop::new()?;
/// let n = lp.event_notifier(|_lp, n| {
///     assert!(n.test_and_clear());
/// });
/// n.set();
/// assert!(lp.poll(false)); // the handler ran
/// assert!(!n.is_set());
/// assert!(!lp.poll(false));
/// n.remove();
/// # Ok::<(), kevent::Error>(())
/// ```
#[derive(Clone)]
pub struct EventNotifier {
    inner: Arc<NotifierInner>,
}

impl EventNotifier {
    pub(super) fn new(shared: &Arc<Shared>, external: bool, handler: NotifierFn) -> EventNotifier {
        EventNotifier {
            inner: Arc::new(NotifierInner {
                flag: AtomicBool::new(false),
                queued: AtomicBool::new(false),
                kept: AtomicBool::new(false),
                removed: AtomicBool::new(false),
                external,
                handler: Mutex::new(Some(handler)),
                shared: shared.clone(),
            }),
        }
    }

    /// `event_notifier_set`: sets the notifier and has the loop run its handler. From any
    /// thread; a system call only if the loop sleeps.
    #[doc(alias = "event_notifier_set")]
    pub fn set(&self) {
        // Release: what the setter wrote before is visible to a handler that sees the
        // flag (Acquire in `run`).
        self.inner.flag.store(true, Ordering::Release);
        self.inner.enqueue();
    }

    /// `event_notifier_test_and_clear`: clears it; returns whether it was set.
    #[doc(alias = "event_notifier_test_and_clear")]
    pub fn test_and_clear(&self) -> bool {
        self.inner.flag.swap(false, Ordering::AcqRel)
    }

    /// Whether it is set.
    pub fn is_set(&self) -> bool {
        self.inner.flag.load(Ordering::Acquire)
    }

    /// Whether it is an external source (see [`Loop::drained_begin`]).
    pub fn is_external(&self) -> bool {
        self.inner.external
    }

    /// `aio_set_event_notifier(ctx, e, NULL)`: detaches the handler: it never runs again
    /// and is dropped now (or when it returns, if it is running). The flag still works.
    /// Safe from any thread and from any callback, the handler itself included.
    pub fn remove(&self) {
        self.inner.removed.store(true, Ordering::Release);
        let handler = lock(&self.inner.handler).take();
        drop(handler);
    }
}

impl NotifierInner {
    fn enqueue(self: &Arc<Self>) {
        if self.removed.load(Ordering::Acquire) {
            return;
        }
        // AcqRel: pairs with the swap in `take`, as PENDING does for bottom halves.
        if !self.queued.swap(true, Ordering::AcqRel)
            && !self.shared.push(Work::Notifier(self.clone()))
        {
            return; // the loop is gone
        }
        self.shared.notify();
    }

    /// Taken off the loop's list: a later `set` queues it again.
    pub(super) fn take(&self) {
        self.queued.swap(false, Ordering::AcqRel);
    }

    /// Whether the handler is to be kept rather than run now.
    pub(super) fn is_external(&self) -> bool {
        self.external
    }

    /// Runs the handler if the notifier is set and attached. Returns whether it ran.
    pub(super) fn run(self: &Arc<Self>, lp: &Loop) -> bool {
        if self.removed.load(Ordering::Acquire) || !self.flag.load(Ordering::Acquire) {
            return false;
        }
        let Some(handler) = lock(&self.handler).clone() else {
            return false;
        };
        handler(
            lp,
            &EventNotifier {
                inner: self.clone(),
            },
        );
        bump(&self.shared.counters.notifier_runs);
        true
    }
}

impl fmt::Debug for EventNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventNotifier")
            .field("set", &self.is_set())
            .field("external", &self.inner.external)
            .field("removed", &self.inner.removed.load(Ordering::Relaxed))
            .finish()
    }
}

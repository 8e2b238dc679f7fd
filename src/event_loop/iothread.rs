//! [`IoThread`]: a thread that runs one loop until stopped (QEMU's `IOThread`,
//! `iothread.c`).

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::context::Loop;
use crate::Error;

/// A thread running [`Loop::poll`]`(true)` on its loop until [`stop`](IoThread::stop)ped
/// or dropped. Give it work from any thread through [`get`](IoThread::get): fd handlers,
/// bottom halves, notifiers, timers.
///
/// The thread runs with a timer slack of 1 ns (`PR_SET_TIMERSLACK`, as QEMU sets for its
/// threads), so that its timers fire within microseconds of their deadline: with Linux's
/// default 50 µs slack any timed sleep may end up to 50 µs late. A thread of yours that
/// polls a loop with timers can do the same (`prctl(PR_SET_TIMERSLACK, 1)`).
///
/// ```
/// # use kevent::IoThread;
/// # use std::sync::mpsc;
/// let io = IoThread::spawn("io0")?;
/// let (tx, rx) = mpsc::channel();
/// io.get().schedule_oneshot(move |_lp| {
///     tx.send(std::thread::current().name().map(str::to_owned)).unwrap();
/// });
/// assert_eq!(rx.recv().unwrap().as_deref(), Some("io0"));
/// io.stop()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct IoThread {
    lp: Arc<Loop>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<Option<Error>>>,
}

impl IoThread {
    /// Starts a thread named `name` running a new [`Loop`] of its own queue.
    ///
    /// # Errors
    /// As [`Loop::new`], or the thread could not be spawned.
    pub fn spawn(name: &str) -> io::Result<IoThread> {
        IoThread::with_loop(name, Arc::new(Loop::new()?))
    }

    /// Starts a thread named `name` running `lp` (which no other thread should poll, if
    /// it is to be an IOThread in QEMU's sense).
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub fn with_loop(name: &str, lp: Arc<Loop>) -> io::Result<IoThread> {
        let stopping = Arc::new(AtomicBool::new(false));
        let (l, s) = (lp.clone(), stopping.clone());
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                // SAFETY: PR_SET_TIMERSLACK only changes a property of this thread. A
                // failure leaves the default slack: timers then fire up to 50 µs late.
                unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
                // Acquire: pairs with `stop`'s Release.
                while !s.load(Ordering::Acquire) {
                    if let Err(e) = l.try_poll(true) {
                        return Some(e); // the queue closed or broke: nothing to wait on
                    }
                }
                None
            })?;
        Ok(IoThread {
            lp,
            stopping,
            thread: Some(thread),
        })
    }

    /// The thread's loop.
    pub fn get(&self) -> &Arc<Loop> {
        &self.lp
    }

    /// Stops the thread after its current iteration and waits for it.
    ///
    /// # Errors
    /// The error that ended the thread's loop early (its queue closed or broke), or the
    /// thread panicked (in a callback).
    pub fn stop(mut self) -> io::Result<()> {
        self.halt()
    }

    fn halt(&mut self) -> io::Result<()> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        // Release: the thread sees the flag once the notification wakes it (or at its
        // next check); `notified` stays set until a poll accepts it, so a poll that
        // begins after this store returns at once.
        self.stopping.store(true, Ordering::Release);
        self.lp.notify();
        match thread.join() {
            Ok(None) => Ok(()),
            Ok(Some(e)) => Err(e.into()),
            Err(_) => Err(io::Error::other("the iothread panicked in a callback")),
        }
    }
}

impl Drop for IoThread {
    /// Stops the thread and waits for it (an error is dropped: call
    /// [`stop`](IoThread::stop) to see it).
    fn drop(&mut self) {
        let _ = self.halt();
    }
}

impl fmt::Debug for IoThread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoThread")
            .field("thread", &self.thread.as_ref().map(|t| t.thread().name()))
            .field("loop", &self.lp)
            .finish()
    }
}

//! Telling the producer about commits only when it asked (io_uring's
//! `IORING_SQ_NEED_WAKEUP`).
//!
//! The producer needs to hear of commits when it has something to do with the freed
//! slots: a backlog to drain, level-triggered kevents to re-check, counts to deliver.
//! Before it goes to sleep in `epoll_wait` it sets `need_doorbell`; a consumer that moved
//! `uidx` then clears the flag and rings the doorbell (an eventfd write). Each side does
//! store, SeqCst fence, load — the same handshake as the waiters' — so either the
//! producer's re-check after setting the flag sees the new `uidx`, or the consumer sees
//! the flag. At most one consumer rings per sleep (the swap), and none rings while the
//! producer is awake.

use crate::sync::{fence, Ordering};
use crate::Ring;

impl Ring {
    /// Producer: ask to be told of the next commit. Re-check `uidx` afterwards and skip
    /// the sleep if it moved.
    pub fn request_doorbell(&self) {
        self.header().wake.need_doorbell.store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// Producer: awake again, no doorbell needed.
    pub fn cancel_doorbell(&self) {
        self.header().wake.need_doorbell.store(0, Ordering::Relaxed);
    }

    /// Consumer, after moving `uidx`: whether it must ring the producer's doorbell (true
    /// for at most one caller per request).
    pub fn doorbell_wanted(&self) -> bool {
        fence(Ordering::SeqCst);
        let flag = &self.header().wake.need_doorbell;
        flag.load(Ordering::Relaxed) != 0 && flag.swap(0, Ordering::Relaxed) != 0
    }
}

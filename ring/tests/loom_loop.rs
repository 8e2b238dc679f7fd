//! Loom models of an event loop's sleep (ARCHITECTURE.md §3 W1, `kevent::Loop`): the
//! `NotifyMe` handshake between a loop about to sleep and whoever gives it work
//! (section k, `ring/src/wake/notify.rs`), and the loop woken by the queue's explicit
//! wake-up, a kick that no later wait remembers (section l). Sections a–j are in
//! `loom.rs` and `loom_sleep.rs`; run them all the same way (`loom.rs`).

#![cfg(loom)]

mod loom_util;

use std::sync::Arc;

use kevent_ring::{NotifyMe, Ring, WaitOutcome, WaitSpec};
use loom::thread;
use loom_util::*;

// ---------------------------------------------------------------------------------------
// k. an event loop's own work: `NotifyMe` (QEMU's notify_me / notified, `notify.rs`)
// ---------------------------------------------------------------------------------------
//
// `kevent::Loop` keeps bottom halves, notifiers and timers outside the ring; whoever
// gives it work publishes it, then `notify()`s, and wakes the loop only if that says so.
// The loop announces a sleep with `sleep_begin()`, waits only if that allows it, and
// `accept()`s before it looks at its work. The wake-up (a user kevent made ready) is
// remembered until the loop waits: an `Eventfd` here. A loop asleep with work given and
// no wake-up coming shows as a loom deadlock; work given but not seen after the accept
// that read its notification, as a failed assertion.

/// What a loop and its wakers share: the handshake, the loop's remembered wake-up, and
/// the work bits given so far.
#[derive(Clone)]
struct LoopSide {
    gate: Arc<NotifyMe>,
    wake: Arc<Eventfd>,
    work: Arc<loom::sync::atomic::AtomicU32>,
}

impl LoopSide {
    fn new() -> LoopSide {
        LoopSide {
            gate: Arc::new(NotifyMe::new()),
            wake: Eventfd::new(),
            work: Arc::new(loom::sync::atomic::AtomicU32::new(0)),
        }
    }

    /// One blocking poll: announce, wait if allowed, accept; the work bits it sees.
    fn iteration(&self) -> u32 {
        if self.gate.sleep_begin() {
            self.wake.wait();
        }
        self.gate.sleep_end();
        self.gate.accept();
        self.work.load(loom::sync::atomic::Ordering::Relaxed)
    }

    /// A waker on another thread: publishes its bit, then notifies (waking the loop if
    /// told to).
    fn give_work(&self, bit: u32) -> thread::JoinHandle<()> {
        let me = self.clone();
        thread::spawn(move || {
            me.work.fetch_or(bit, loom::sync::atomic::Ordering::Relaxed);
            if me.gate.notify() {
                me.wake.ring();
            }
        })
    }
}

#[test]
fn a_loop_about_to_sleep_never_misses_work_given_by_another_thread() {
    model(|| {
        let side = LoopSide::new();
        let waker = side.give_work(1);
        // Blocking polls until the work is seen: a poll that sleeps with the work given
        // and no wake-up coming deadlocks the model.
        while side.iteration() == 0 {}
        waker.join().expect("waker");
    });
}

#[test]
fn two_wakers_one_wake_up_and_the_loop_sees_both_works() {
    model(|| {
        let side = LoopSide::new();
        let wakers = [side.give_work(1), side.give_work(2)];
        let mut seen = 0;
        let mut polls = 0;
        while seen != 3 {
            seen |= side.iteration();
            polls += 1;
        }
        for w in wakers {
            w.join().expect("waker");
        }
        // Only a waker that flipped `notified` while a poll was announced rings; each
        // poll accepts once, so there are never more wake-ups than polls.
        let rings = side.wake.rings();
        assert!(rings <= polls, "{rings} wake-ups for {polls} polls");
    });
}

#[test]
fn an_awake_loop_costs_its_waker_no_wake_up() {
    model(|| {
        let side = LoopSide::new();
        let waker = side.give_work(1);
        // Non-blocking polls only (no sleep announced): nobody must be woken.
        while {
            side.gate.accept();
            side.work.load(loom::sync::atomic::Ordering::Relaxed) == 0
        } {
            thread::yield_now();
        }
        waker.join().expect("waker");
        assert_eq!(
            side.wake.rings(),
            0,
            "a wake-up for a loop that never slept"
        );
    });
}

// ---------------------------------------------------------------------------------------
// l. an event loop woken by the queue's explicit wake-up (`kevent::Loop`, `wake.rs`)
// ---------------------------------------------------------------------------------------
//
// The loop's sleeping threads are woken with `Ring::kick` (no entry in the ring), which
// is not remembered for a wait that begins later. So a poll reads `kicks` before it
// announces its sleep (`NotifyMe::sleep_begin`) and waits for a change of it: a waker
// that saw the announcement kicks after that read. A poll asleep with work given and no
// kick coming shows as a loom deadlock.

/// One blocking poll of the loop: read the kick count, announce, wait on the ring for a
/// kick if allowed, accept; the work bits it sees.
fn kicked_iteration(ring: &Ring, gate: &NotifyMe, work: &loom::sync::atomic::AtomicU32) -> u32 {
    let kicks = ring.kicks();
    if gate.sleep_begin() {
        let spec = WaitSpec {
            return_on_wake: true,
            kicks,
            ..WaitSpec::default()
        };
        let outcome = ring.wait(&spec).expect("a futex wait does not fail");
        assert_eq!(outcome, WaitOutcome::Woken, "nothing else ends this wait");
    }
    gate.sleep_end();
    gate.accept();
    work.load(loom::sync::atomic::Ordering::Relaxed)
}

#[test]
fn a_loop_woken_by_a_kick_never_misses_work_given_by_another_thread() {
    model(|| {
        let (ring, _producer, _ids) = ring_with(4, 1);
        let gate = Arc::new(NotifyMe::new());
        let work = Arc::new(loom::sync::atomic::AtomicU32::new(0));
        let (r, g, w) = (ring.clone(), gate.clone(), work.clone());
        let waker = thread::spawn(move || {
            w.fetch_or(1, loom::sync::atomic::Ordering::Relaxed);
            if g.notify() {
                r.kick(1);
            }
        });
        while kicked_iteration(&ring, &gate, &work) == 0 {}
        waker.join().expect("waker");
    });
}

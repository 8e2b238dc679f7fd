//! Loom models of the simulated kernel's lock (`ring/src/wake/ticket.rs`): one holder at
//! a time, served in arrival order, no waiter left asleep (section m), and work a
//! committer leaves for the lock's holder always done by somebody (section n,
//! `syscalls-sim/src/kernel/release.rs`). Sections a–l are in `loom.rs`, `loom_sleep.rs`
//! and `loom_loop.rs`; run them all the same way (`loom.rs`).

#![cfg(loom)]

mod loom_util;

use std::sync::Arc;

use loom::thread;
use loom_util::*;

// ---------------------------------------------------------------------------------------
// m. the kernel's lock (`ticket.rs`): first come, first served, no lost wake-up
// ---------------------------------------------------------------------------------------
//
// Whoever acts as the kernel holds a `TicketLock`. Its waiters sleep on a futex word
// (`serving`) after announcing themselves (`sleepers`); an unlock moves `serving`, then
// wakes them if it sees any. A waiter left asleep with the lock free shows as a loom
// deadlock; two holders at once, as a torn counter.

/// A counter only the lock's holder touches, as a load and a store (not an atomic
/// increment): two holders at once would lose an increment.
fn locked_increment(lock: &kevent_ring::TicketLock, count: &loom::sync::atomic::AtomicU32) {
    lock.lock();
    let n = count.load(loom::sync::atomic::Ordering::Relaxed);
    count.store(n + 1, loom::sync::atomic::Ordering::Relaxed);
    lock.unlock();
}

#[test]
fn the_kernel_lock_admits_one_holder_and_wakes_every_waiter() {
    model(|| {
        let lock = Arc::new(kevent_ring::TicketLock::new());
        let count = Arc::new(loom::sync::atomic::AtomicU32::new(0));
        let others: Vec<_> = (0..2)
            .map(|_| {
                let (lock, count) = (lock.clone(), count.clone());
                thread::spawn(move || locked_increment(&lock, &count))
            })
            .collect();
        locked_increment(&lock, &count);
        for t in others {
            t.join().expect("locker");
        }
        assert_eq!(count.load(loom::sync::atomic::Ordering::Relaxed), 3);
    });
}

#[test]
fn try_lock_never_takes_a_held_or_awaited_lock() {
    model(|| {
        let lock = Arc::new(kevent_ring::TicketLock::new());
        let count = Arc::new(loom::sync::atomic::AtomicU32::new(0));
        let (l, c) = (lock.clone(), count.clone());
        let locker = thread::spawn(move || locked_increment(&l, &c));
        if lock.try_lock() {
            let n = count.load(loom::sync::atomic::Ordering::Relaxed);
            count.store(n + 1, loom::sync::atomic::Ordering::Relaxed);
            lock.unlock();
        } else {
            locked_increment(&lock, &count);
        }
        locker.join().expect("locker");
        assert_eq!(count.load(loom::sync::atomic::Ordering::Relaxed), 2);
    });
}

// ---------------------------------------------------------------------------------------
// n. work left for the lock's holder: a commit's completions (`kernel/release.rs`)
// ---------------------------------------------------------------------------------------
//
// A consumer that committed lists its positions, then (SeqCst fence) tries the kernel's
// lock; whoever holds it, as it unlocks (the unlock ends with a SeqCst fence), looks for
// listed work and, if any, tries the lock again to do it. This replays
// `KernelLock::completed` and `Drop for KernelGuard` over the real `TicketLock`: work
// listed while the lock is held must be done by somebody — left undone, it would be a
// level kevent never re-checked (W4).

fn unlock_and_do_listed(
    lock: &kevent_ring::TicketLock,
    listed: &loom::sync::atomic::AtomicBool,
    done: &loom::sync::atomic::AtomicU32,
) {
    use loom::sync::atomic::Ordering::{Acquire, Relaxed, Release};
    lock.unlock();
    if listed.load(Acquire) && lock.try_lock() {
        if listed.swap(false, Relaxed) {
            done.fetch_add(1, Release);
        }
        unlock_and_do_listed(lock, listed, done);
    }
}

#[test]
fn work_listed_while_the_kernel_lock_is_held_is_done_by_somebody() {
    use loom::sync::atomic::{fence, AtomicBool, AtomicU32, Ordering};
    model(|| {
        let lock = Arc::new(kevent_ring::TicketLock::new());
        let listed = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU32::new(0));
        let (l, w, d) = (lock.clone(), listed.clone(), done.clone());
        // A thread acting as the kernel (a ctl, the poller): lock, work, unlock.
        let holder = thread::spawn(move || {
            l.lock();
            unlock_and_do_listed(&l, &w, &d);
        });
        // The committer: lists its completions, fence, tries the lock.
        listed.store(true, Ordering::Release);
        fence(Ordering::SeqCst);
        if lock.try_lock() {
            if listed.swap(false, Ordering::Relaxed) {
                done.fetch_add(1, Ordering::Release);
            }
            unlock_and_do_listed(&lock, &listed, &done);
        }
        holder.join().expect("holder");
        assert_eq!(
            done.load(Ordering::Acquire),
            1,
            "the listed work was left undone"
        );
    });
}

//! Wake-ups across processes (ARCHITECTURE.md §3, §5): `fork`ed children asleep in
//! `kevent_wait` on one queue; one event wakes exactly one of them, `KEVENT_REQ_WAKEUP_ALL`
//! every one (even while the taker holds the entry), `READY` with no entries one with an
//! empty claim; and a process killed asleep leaves no phantom sleeper behind.
//!
//! Children are forked from the test thread, run only this file's code and end with
//! `_exit`; a guard kills whatever is left when a test fails, and `PR_SET_PDEATHSIG` kills
//! them if the test process dies. The tests of this file run one at a time: they fork,
//! and their timings should not compete.

#![deny(clippy::undocumented_unsafe_blocks)]

mod util;

use std::sync::atomic::Ordering;
use std::time::Duration;

use kevent_syscalls::*;
use rustix::process::Pid;
use util::proc::{bounded, child_log, Children, SharedWords};
use util::{assert_only_the_owner_stays_registered, user_ev, wait_until, MS};

const SLEEPERS: usize = 6;
const SLEEP_TIMEOUT: u64 = 2_000 * MS;

/// How a sleeping child's `kevent_wait` ended.
#[derive(Debug, Clone, Copy)]
struct Woke {
    /// 1: with an entry; 2: empty claim (timeout or wake-up); 3: error.
    kind: u64,
    /// Monotonic ns at the call and at the return.
    called: u64,
    returned: u64,
    /// The entry's cookie.
    user: u64,
}

/// A child: one `kevent_wait` through the inherited handle (which attaches it), then
/// reports how it ended and, after `hold`, commits what it got.
fn sleeper(h: i32, board: &SharedWords, i: usize, hold: Duration) -> i32 {
    let q = match instance(h) {
        Ok(q) => q,
        Err(e) => {
            child_log(&format!("sleeper {i}: attaching: {e}"));
            return 3;
        }
    };
    let old = q.ring().uidx();
    let called = kevent_ring::monotonic_now();
    let r = kevent_wait(h, 1, old, Some(SLEEP_TIMEOUT), 0);
    let returned = kevent_ring::monotonic_now();
    let (kind, user) = match r {
        Ok(c) if c.owned > 0 => {
            let user = q.entry(c.start).map_or(0, |ev| ev.user);
            std::thread::sleep(hold);
            let (idx, over) = q.ring().kevent_view(c.end);
            if kevent_commit(h, idx, over).ok() != Some(1) {
                child_log(&format!("sleeper {i}: commit failed"));
                return 5;
            }
            (1, user)
        }
        Ok(_) => (2, 0),
        Err(e) => {
            child_log(&format!("sleeper {i}: kevent_wait: {e}"));
            (3, 0)
        }
    };
    for (f, v) in [called, returned, user, kind].into_iter().enumerate() {
        board.at(i * 4 + f).store(v, Ordering::SeqCst);
    }
    0
}

/// Puts `SLEEPERS` children to sleep in `kevent_wait`, makes sure they all sleep, runs
/// `fire`, and returns when each woke relative to the fire, and how. The one that gets
/// an entry holds it for `hold` before committing.
fn sleepers_then(q: &Instance, h: i32, hold: Duration, fire: impl FnOnce()) -> (u64, Vec<Woke>) {
    let board = SharedWords::new(SLEEPERS * 4);
    let mut kids = Children::default();
    let pids: Vec<Pid> = (0..SLEEPERS)
        .map(|i| kids.fork(|| sleeper(h, &board, i, hold)))
        .collect();
    let all_asleep = || q.ring().sleepers() as usize == SLEEPERS;
    assert!(
        wait_until(Duration::from_secs(5), all_asleep),
        "only {} of {SLEEPERS} children asleep",
        q.ring().sleepers()
    );
    std::thread::sleep(Duration::from_millis(30));
    assert!(all_asleep(), "a sleeper woke up by itself");
    let fired = kevent_ring::monotonic_now();
    fire();
    for (i, &pid) in pids.iter().enumerate() {
        kids.expect_success(pid, Duration::from_secs(5), &format!("sleeper {i}"));
    }
    let woke = (0..SLEEPERS)
        .map(|i| Woke {
            called: board.at(i * 4).load(Ordering::SeqCst),
            returned: board.at(i * 4 + 1).load(Ordering::SeqCst),
            user: board.at(i * 4 + 2).load(Ordering::SeqCst),
            kind: board.at(i * 4 + 3).load(Ordering::SeqCst),
        })
        .collect();
    (fired, woke)
}

/// Woke within 1 s of the fire (the others sleep until their 2 s timeout).
fn woken_early(fired: u64, w: &Woke) -> bool {
    w.returned < fired + 1_000 * MS
}

fn timed_out(w: &Woke) -> bool {
    w.kind == 2 && w.returned >= w.called + SLEEP_TIMEOUT - 50 * MS
}

#[test]
fn one_event_wakes_exactly_one_of_n_sleeping_processes() {
    bounded(
        Duration::from_secs(60),
        one_event_wakes_exactly_one_of_n_sleeping_processes_body,
    );
}

fn one_event_wakes_exactly_one_of_n_sleeping_processes_body() {
    let q = Instance::create(64, 0).expect("kevent_init");
    let h = register(q.clone());
    let mut ev = [user_ev(1, 0)];
    assert_eq!(kevent_ctl(h, KEVENT_CTL_ADD, &mut ev).unwrap(), 0);

    let (fired, woke) = sleepers_then(&q, h, Duration::ZERO, || {
        assert_eq!(
            kevent_ctl(h, KEVENT_CTL_READY, &mut [user_ev(1, 0)]).unwrap(),
            0
        );
    });
    let winners: Vec<&Woke> = woke.iter().filter(|w| w.kind == 1).collect();
    let early = woke.iter().filter(|w| woken_early(fired, w)).count();
    assert_eq!(winners.len(), 1, "{woke:?}");
    assert_eq!(winners[0].user, 1);
    assert!(woken_early(fired, winners[0]), "{woke:?}");
    assert_eq!(
        early, 1,
        "more than one process woke for one event: {woke:?}"
    );
    assert_eq!(
        woke.iter().filter(|w| timed_out(w)).count(),
        SLEEPERS - 1,
        "the others sleep until their timeout: {woke:?}"
    );
    eprintln!(
        "one event, {SLEEPERS} sleeping processes: 1 woke after {:.1} µs, {} timed out",
        (winners[0].returned - fired) as f64 / 1e3,
        SLEEPERS - 1
    );
    kevent_close(h).unwrap();
}

fn wakeup_all_case(hold: Duration) {
    let q = Instance::create(64, 0).expect("kevent_init");
    let h = register(q.clone());
    let mut ev = [user_ev(2, KEVENT_REQ_WAKEUP_ALL)];
    assert_eq!(kevent_ctl(h, KEVENT_CTL_ADD, &mut ev).unwrap(), 0);

    let (fired, woke) = sleepers_then(&q, h, hold, || {
        assert_eq!(
            kevent_ctl(h, KEVENT_CTL_READY, &mut [user_ev(2, 0)]).unwrap(),
            0
        );
    });
    let winners: Vec<&Woke> = woke.iter().filter(|w| w.kind == 1).collect();
    assert_eq!(winners.len(), 1, "one entry, one taker: {woke:?}");
    assert_eq!(winners[0].user, 2);
    assert!(
        woke.iter().all(|w| woken_early(fired, w) && w.kind != 3),
        "with KEVENT_REQ_WAKEUP_ALL every sleeper returns before its timeout: {woke:?}"
    );
    let slowest = woke.iter().map(|w| w.returned - fired).max().unwrap_or(0);
    eprintln!(
        "WAKEUP_ALL, {SLEEPERS} sleeping processes, taker holds the entry {hold:?}: all \
         returned within {:.1} µs",
        slowest as f64 / 1e3
    );
    kevent_close(h).unwrap();
}

#[test]
fn wakeup_all_wakes_every_sleeping_process() {
    bounded(Duration::from_secs(60), || wakeup_all_case(Duration::ZERO));
}

/// The losers of the race for the one entry must return too, whether or not the winner
/// has committed it yet.
#[test]
fn wakeup_all_wakes_every_sleeping_process_even_while_the_taker_holds_the_entry() {
    bounded(Duration::from_secs(60), || {
        wakeup_all_case(Duration::from_millis(300))
    });
}

#[test]
fn ready_with_no_entries_wakes_exactly_one_sleeping_process() {
    bounded(
        Duration::from_secs(60),
        ready_with_no_entries_wakes_exactly_one_sleeping_process_body,
    );
}

fn ready_with_no_entries_wakes_exactly_one_sleeping_process_body() {
    let q = Instance::create(64, 0).expect("kevent_init");
    let h = register(q.clone());
    let (fired, woke) = sleepers_then(&q, h, Duration::ZERO, || {
        assert_eq!(kevent_ctl(h, KEVENT_CTL_READY, &mut []).unwrap(), 0);
    });
    let early: Vec<&Woke> = woke.iter().filter(|w| woken_early(fired, w)).collect();
    assert_eq!(early.len(), 1, "{woke:?}");
    assert_eq!(early[0].kind, 2, "woken with an empty claim: {woke:?}");
    assert_eq!(woke.iter().filter(|w| timed_out(w)).count(), SLEEPERS - 1);
    kevent_close(h).unwrap();
}

/// A consumer that dies asleep cannot take its `waiters` count back: the reaper must
/// (ARCHITECTURE.md §3: no system call is made when nobody sleeps).
#[test]
fn a_process_killed_asleep_in_kevent_wait_leaves_no_phantom_sleeper() {
    bounded(
        Duration::from_secs(60),
        a_process_killed_asleep_in_kevent_wait_leaves_no_phantom_sleeper_body,
    );
}

fn a_process_killed_asleep_in_kevent_wait_leaves_no_phantom_sleeper_body() {
    let q = Instance::create_with(64, 0, Duration::from_millis(100)).expect("kevent_init");
    let h = register(q.clone());
    assert_eq!(
        kevent_ctl(h, KEVENT_CTL_ADD, &mut [user_ev(3, 0)]).unwrap(),
        0
    );
    let mut kids = Children::default();
    let pid = kids.fork(|| {
        let Ok(q) = instance(h) else { return 3 };
        let _ = kevent_wait(h, 1, q.ring().uidx(), Some(10_000 * MS), 0);
        0
    });
    assert!(wait_until(Duration::from_secs(5), || q.ring().sleepers() == 1));
    std::thread::sleep(Duration::from_millis(20));
    let status = kids.kill(pid);
    assert_eq!(status.terminating_signal(), Some(libc::SIGKILL));
    // The reaper frees the dead consumer's record within a few ticks...
    assert_only_the_owner_stays_registered(&q);
    // ... and nobody sleeps any more: publishing needs no FUTEX_WAKE.
    let stats = &q.ring().header().stats;
    let calls = stats.wake_calls.load(Ordering::SeqCst);
    assert_eq!(
        kevent_ctl(h, KEVENT_CTL_READY, &mut [user_ev(3, 0)]).unwrap(),
        0
    );
    assert_eq!(q.ring().kidx(), 1);
    let phantom = q.ring().sleepers();
    let wakes = stats.wake_calls.load(Ordering::SeqCst) - calls;
    assert_eq!(
        (phantom, wakes),
        (0, 0),
        "a dead sleeper is still counted (sleepers, FUTEX_WAKE calls for one publish)"
    );
    kevent_close(h).unwrap();
}

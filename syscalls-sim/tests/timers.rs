//! Many timers on one queue (`source/timer.rs`: one deadline heap and one timerfd per
//! clock, no fd per timer): each fires exactly once (or every period, counted), never
//! early, in any order of ADDs; a removed one never fires; none holds an fd.
//! The single-timer cases are in `sources.rs`.

mod util;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kevent_ring::{monotonic_now, realtime_now};
use kevent_syscalls::*;
use util::proc::XorShift;
use util::*;

/// Collects events until `want` arrived or `limit` passed; records when each was had
/// (monotonic and realtime ns, read right after the wait returned).
fn collect_timers(q: &Q, want: usize, limit: Duration) -> Vec<(Ukevent, u64, u64)> {
    let end = Instant::now() + limit;
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < end {
        let batch = q.get(Duration::from_millis(100));
        let (mono, real) = (monotonic_now(), realtime_now());
        got.extend(batch.into_iter().map(|e| (e, mono, real)));
    }
    got
}

/// Asserts each of `users` arrived exactly once with an expiration count of 1, no earlier
/// than its deadline on its clock, and nothing else arrived.
fn each_once_never_early(
    got: &[(Ukevent, u64, u64)],
    deadlines: &HashMap<u64, (u32, u64)>,
    seed: u64,
) {
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for (e, mono, real) in got {
        *seen.entry(e.user).or_default() += 1;
        let Some(&(type_, due)) = deadlines.get(&e.user) else {
            panic!("seed {seed}: an event nobody is owed: {e:?}");
        };
        assert_eq!(
            (e.type_, e.event, e.ret_data),
            (type_, KEVENT_TIMER_FIRED, [1, 0]),
            "seed {seed}: timer {} fired with {e:?}",
            e.user
        );
        let now = if type_ == KEVENT_POSIX_TIMER {
            *real
        } else {
            *mono
        };
        assert!(
            now >= due,
            "seed {seed}: timer {} was had {} ns before its deadline",
            e.user,
            due - now
        );
    }
    let missing: Vec<u64> = deadlines
        .keys()
        .filter(|u| !seen.contains_key(u))
        .copied()
        .collect();
    let twice: Vec<(u64, usize)> = seen.into_iter().filter(|&(_, n)| n > 1).collect();
    assert!(
        missing.is_empty() && twice.is_empty(),
        "seed {seed}: {} of {} timers never fired ({:?}…), {} more than once ({:?}…)",
        missing.len(),
        deadlines.len(),
        &missing[..missing.len().min(8)],
        twice.len(),
        &twice[..twice.len().min(8)]
    );
}

#[test]
fn a_thousand_timers_added_in_random_order_each_fire_once_and_never_early() {
    let seed = 0x7157_2026_1207;
    let mut rng = XorShift(seed);
    let q = Q::new(256);
    let mut deadlines = HashMap::new();
    for user in 0..1_000u64 {
        // Due 1–300 ms from now in random order; a third absolute monotonic, a third
        // relative one-shot, a third POSIX (absolute realtime). A kevent is named by its
        // type and id — the time — so each time is made unique with `user` ns.
        let after = (1 + rng.below(300)) * MS + user;
        let (type_, id, event, due) = match user % 3 {
            0 => {
                let at = monotonic_now() + after;
                let flags = KEVENT_TIMER_FIRED | KEVENT_TIMER_ABSTIME;
                (KEVENT_TIMER, at, flags, at)
            }
            1 => {
                let due = monotonic_now() + after;
                let flags = KEVENT_TIMER_FIRED | KEVENT_TIMER_ONCE;
                (KEVENT_TIMER, after, flags, due)
            }
            _ => {
                let at = realtime_now() + after;
                (KEVENT_POSIX_TIMER, at, KEVENT_TIMER_FIRED, at)
            }
        };
        // A relative timer's deadline is read before its ADD: it may be due later, never
        // earlier.
        deadlines.insert(user, (type_, due));
        let mut add = [ev(type_, id, event, 0, user)];
        assert_eq!(q.add(&mut add), 0, "seed {seed}: {add:?}");
    }
    let got = collect_timers(&q, 1_000, Duration::from_secs(5));
    each_once_never_early(&got, &deadlines, seed);
    q.expect_none(Duration::from_millis(100));
}

#[test]
fn removed_timers_among_many_never_fire_and_the_others_fire_once() {
    let seed = 0x5eed_0002;
    let mut rng = XorShift(seed);
    let q = Q::new(256);
    let mut deadlines = HashMap::new();
    let mut removed = Vec::new();
    for user in 0..1_000u64 {
        let at = monotonic_now() + (50 + rng.below(100)) * MS;
        let t = ev(
            KEVENT_TIMER,
            at,
            KEVENT_TIMER_FIRED | KEVENT_TIMER_ABSTIME,
            0,
            user,
        );
        q.add(&mut [t]);
        if rng.below(2) == 0 {
            removed.push(t);
        } else {
            deadlines.insert(user, (KEVENT_TIMER, at));
        }
    }
    // Among them the nearest deadline: the clock's timerfd is armed for one that is gone.
    q.ctl_ok(KEVENT_CTL_REMOVE, &mut removed);
    let got = collect_timers(&q, deadlines.len(), Duration::from_secs(5));
    each_once_never_early(&got, &deadlines, seed);
    q.expect_none(Duration::from_millis(150));
}

#[test]
fn periodic_timers_of_different_periods_each_count_their_own_periods() {
    let q = Q::new(64);
    let start = Instant::now();
    let periods = [(1u64, 3 * MS), (2, 7 * MS), (3, 20 * MS)];
    for &(user, period) in &periods {
        q.add(&mut [ev(KEVENT_TIMER, period, KEVENT_TIMER_FIRED, 0, user)]);
    }
    let mut counted: HashMap<u64, u64> = HashMap::new();
    while start.elapsed() < Duration::from_millis(300) {
        for e in q.get(Duration::from_millis(50)) {
            assert_eq!(e.event, KEVENT_TIMER_FIRED, "{e:?}");
            *counted.entry(e.user).or_default() +=
                u64::from(e.ret_data[0]) | u64::from(e.ret_data[1]) << 32;
        }
    }
    let elapsed = start.elapsed().as_nanos() as u64;
    for &(user, period) in &periods {
        let n = counted.get(&user).copied().unwrap_or(0);
        // Never more than the periods passed; at most 30 ms of them not yet had.
        let most = elapsed / period;
        let least = (elapsed - 30 * MS).saturating_sub(50 * MS) / period;
        assert!(
            (least..=most).contains(&n),
            "timer {user} (period {} ms) counted {n} expirations in {} ms: expected {least}..={most}",
            period / MS,
            elapsed / MS
        );
    }
}

#[test]
fn a_periodic_timer_held_by_a_claimed_entry_counts_every_period_at_the_commit() {
    let q = Q::new(64);
    let start = Instant::now();
    q.add(&mut [ev(KEVENT_TIMER, 2 * MS, KEVENT_TIMER_FIRED, 0, 9)]);
    let (claim, first) = q.claim(1, PATIENCE);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].user, 9, "{first:?}");
    // Held, level-triggered: no new entry until the commit, however many periods pass.
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !q.queue().ring().has_claimable(),
        "a second entry while one is held"
    );
    q.commit_to(claim.end);
    let next = q.get_one();
    let elapsed = start.elapsed().as_nanos() as u64;
    let n = u64::from(first[0].ret_data[0]) + u64::from(next.ret_data[0]);
    assert!(
        n >= 100 * MS / (2 * MS) && n <= elapsed / (2 * MS),
        "after holding the entry ~100 ms: {n} expirations of a 2 ms timer counted ({} ms in all)",
        elapsed / MS
    );
}

#[test]
fn ten_thousand_timers_hold_no_fd_each() {
    let q = Q::new(64);
    let before = my_fds().len();
    for user in 0..10_000u64 {
        q.add(&mut [ev(
            KEVENT_TIMER,
            3_600 * SEC + user,
            KEVENT_TIMER_FIRED | KEVENT_TIMER_ONCE,
            0,
            user,
        )]);
        if user == 0 {
            // One clock, one timerfd.
            assert!(my_fds().len() <= before + 1);
        }
    }
    let after = my_fds().len();
    assert!(
        after <= before + 1,
        "{} fds opened for 10,000 timers",
        after - before
    );
    // One on the other clock adds its timerfd.
    q.add(&mut [ev(
        KEVENT_POSIX_TIMER,
        realtime_now() + 3_600 * SEC,
        KEVENT_TIMER_FIRED,
        0,
        10_000,
    )]);
    assert!(my_fds().len() <= before + 2);
}

#[test]
fn a_oneshot_periodic_timer_rests_until_modify_and_then_counts_every_period_passed() {
    let q = Q::new(64);
    // Every 10 µs, ONESHOT: one event, then disabled until MODIFY.
    let t = ev(
        KEVENT_TIMER,
        10_000,
        KEVENT_TIMER_FIRED,
        KEVENT_REQ_ONESHOT,
        5,
    );
    let added_at = Instant::now();
    q.add(&mut [t]);
    let first = q.get_one();
    assert_eq!(
        (first.user, first.event),
        (5, KEVENT_TIMER_FIRED),
        "{first:?}"
    );
    let disabled_at = Instant::now();
    let tid = q.queue().producer_tid().expect("producer runs");
    let before = util::proc::thread_cpu(tid);
    std::thread::sleep(Duration::from_millis(300));
    let spent = util::proc::thread_cpu(tid) - before;
    assert!(
        spent < Duration::from_millis(60),
        "the producer spent {spent:?} of CPU in 300 ms on a disabled 10 µs timer"
    );
    q.expect_none(Duration::from_millis(50));
    // Enabled again, it reports at once what passed while it rested: ~35,000 periods.
    let mut modify = [t];
    q.ctl_ok(KEVENT_CTL_MODIFY, &mut modify);
    let next = q.get_one();
    let n = u64::from(next.ret_data[0]) | u64::from(next.ret_data[1]) << 32;
    // Not one period lost or made up: both events together count at most the periods
    // since the ADD.
    let passed = added_at.elapsed().as_nanos() as u64 / 10_000;
    let total = u64::from(first.ret_data[0]) + n;
    assert!(
        n >= 300 * MS / 10_000 && total <= passed,
        "{n} expirations counted after resting {} ms ({total} in all, at most {passed})",
        disabled_at.elapsed().as_millis()
    );
    // ONESHOT again: one event, then quiet.
    q.expect_none(Duration::from_millis(100));
}

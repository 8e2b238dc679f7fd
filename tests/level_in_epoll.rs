//! A level-triggered kevent of a lone consumer sits in the kernel's epoll set
//! level-triggered after a re-check (`syscalls-sim/src/source/fd.rs`): epoll reports it
//! again while it is ready, and a commit asks nothing of the kernel. These tests hold the level contract
//! through that change — reported after every commit while ready, never twice at once,
//! nothing once drained — and check that a source epoll keeps reporting while its event
//! is held, or after MODIFY made it edge-triggered or one-shot, makes nobody spin.

mod util;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use kevent::{Interest, Queue, Source, Token, Trigger};
use util::{level_pipe, queue};

const SHORT: Option<Duration> = Some(Duration::from_millis(300));
const LONG: Option<Duration> = Some(Duration::from_secs(5));

/// CPU time this process has used so far (every thread: the producer's too).
fn cpu_used() -> Duration {
    // SAFETY: getrusage writes the struct it is given, which is ours.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid `who` and a valid out-pointer.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) }, 0);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Waits `SHORT` and asserts nothing came, and that the whole process did not spin
/// meanwhile (a source reported at every `epoll_wait` would keep a waiter or the
/// producer thread busy for the whole wait).
fn expect_quiet(q: &Queue, what: &str) {
    let (cpu, start) = (cpu_used(), Instant::now());
    let batch = q.wait(8, SHORT).unwrap();
    let (used, waited) = (cpu_used() - cpu, start.elapsed());
    let tokens: Vec<u64> = batch.iter().map(|e| e.token().0).collect();
    assert!(tokens.is_empty(), "{what}: got events {tokens:?}");
    assert!(
        used < waited / 2,
        "{what}: the process used {used:?} of CPU during a {waited:?} wait"
    );
}

/// Waits for exactly one event, of `token`, and returns it committed.
fn expect_one(q: &Queue, token: u64, what: &str) {
    let batch = q.wait(8, LONG).unwrap();
    let tokens: Vec<u64> = batch.iter().map(|e| e.token().0).collect();
    assert_eq!(tokens, vec![token], "{what}");
}

/// A pipe committed while readable and then drained before the next wait: reported
/// again or not, depending on whether the kernel looked before the read (the `poll(2)`
/// re-check at the commit) or after it (epoll's level-triggered mode looks at the next
/// `epoll_wait`) — but once at most.
fn at_most_one_after_drain(q: &Queue, token: u64) {
    let last = q.wait(8, Some(Duration::from_millis(50))).unwrap();
    let tokens: Vec<u64> = last.iter().map(|e| e.token().0).collect();
    assert!(
        tokens.is_empty() || tokens == [token],
        "after the drain: {tokens:?}"
    );
}

#[test]
fn a_level_pipe_is_reported_after_each_commit_while_it_holds_data_and_then_no_more() {
    let q = queue();
    let (mut r, mut w) = level_pipe(&q, 7);
    w.write_all(&[1; 10]).unwrap();
    // The first commit re-checks the pipe with poll(2) and moves it to epoll's
    // level-triggered mode; the nine after it rely on epoll alone.
    for i in 0..10 {
        let batch = q.wait(8, LONG).unwrap();
        let tokens: Vec<u64> = batch.iter().map(|e| e.token().0).collect();
        assert_eq!(tokens, vec![7], "round {i}");
        // Never a second event while the first is held.
        let second = q.wait(8, Some(Duration::ZERO)).unwrap();
        assert!(
            second.is_empty(),
            "round {i}: a second event while one is held"
        );
        drop(second);
        let mut b = [0u8; 1];
        r.read_exact(&mut b).unwrap();
        drop(batch);
    }
    expect_quiet(&q, "the drained pipe");
    // New data: reported once, and again after each commit until read.
    w.write_all(&[2; 2]).unwrap();
    expect_one(&q, 7, "the refilled pipe");
    expect_one(&q, 7, "the refilled pipe, unread, after its commit");
    let mut b = [0u8; 2];
    r.read_exact(&mut b).unwrap();
    at_most_one_after_drain(&q, 7);
    expect_quiet(&q, "the drained pipe, again");
}

#[test]
fn an_event_held_by_one_thread_neither_wakes_nor_spins_another_and_comes_back_after_its_commit() {
    let q = queue();
    let (mut r, mut w) = level_pipe(&q, 3);
    w.write_all(b"abc").unwrap();
    // One cycle alone first, so that the pipe sits in epoll level-triggered.
    expect_one(&q, 3, "the first report");
    for round in 0..3 {
        let held = q.wait(8, LONG).unwrap();
        assert_eq!(held.len(), 1, "round {round}");
        std::thread::scope(|s| {
            s.spawn(|| expect_quiet(&q, &format!("round {round}: another thread's wait")));
        });
        drop(held); // still readable: reported again
    }
    let mut b = [0u8; 3];
    r.read_exact(&mut b).unwrap();
    at_most_one_after_drain(&q, 3);
    expect_quiet(&q, "the drained pipe");
    w.write_all(b"d").unwrap();
    expect_one(&q, 3, "new data after all that");
}

#[test]
fn modify_from_level_to_edge_or_oneshot_leaves_a_readable_pipe_quiet() {
    let q = queue();
    let (r, mut w) = level_pipe(&q, 5);
    w.write_all(b"x").unwrap();
    expect_one(&q, 5, "level, first");
    expect_one(&q, 5, "level, after its commit");

    // Edge-triggered: MODIFY reports what is ready now, once; then only new edges.
    let source = Source::pipe(&r, Interest::READABLE);
    q.modify(&source, Token(5), Trigger::Edge).unwrap();
    expect_one(&q, 5, "edge, the readiness MODIFY found");
    expect_quiet(&q, "edge-triggered, unread, committed");
    w.write_all(b"y").unwrap();
    expect_one(&q, 5, "edge, a new edge");
    expect_quiet(&q, "edge-triggered after the new edge");

    // One-shot: reported once, then quiet however readable.
    q.modify(&source, Token(5), Trigger::Oneshot).unwrap();
    expect_one(&q, 5, "oneshot");
    expect_quiet(&q, "one-shot, fired");
    w.write_all(b"z").unwrap();
    expect_quiet(&q, "one-shot, fired, new data");

    // And back to level: reported after every commit again.
    q.modify(&source, Token(5), Trigger::Level).unwrap();
    for i in 0..3 {
        expect_one(&q, 5, &format!("level again, round {i}"));
    }
}

//! `kevent stat` (moved here from the library's `tests/api.rs` with the tool): it finds a
//! live ring in this process and says so when a process does not exist.

use kevent::{Queue, Source, Token, Trigger};
use kevent_bench::cli::stat;

#[test]
fn stat_of_this_process_finds_the_ring() {
    let q = Queue::builder().capacity(128).build().unwrap();
    let user = Source::user(1);
    q.add(&user, Token(1), Trigger::Level).unwrap();
    q.ready(&user).unwrap();
    let posted_before = q.stats().posted;
    assert!(posted_before >= 1);

    let scan = stat::rings_of_pid(std::process::id()).unwrap();
    let me = std::process::id();
    let found: Vec<_> = scan
        .rings
        .iter()
        .map(|(path, ring)| stat::RingStat::read(ring, &path.display().to_string()))
        .filter(|s| s.capacity == 128 && s.producer_pid == me && s.stats.posted >= 1)
        .collect();
    assert!(
        !found.is_empty(),
        "no 128-entry ring of ours among {:?}",
        scan.rings.len()
    );
    let s = &found[0];
    assert!(s.location.starts_with(&format!("/proc/{me}/fd/")));
    assert!(s.consumers.iter().any(|c| c.pid == me));
    let json = s.to_json();
    assert!(json.starts_with('{') && json.ends_with('}'));
    assert!(json.contains(r#""capacity":128"#), "{json}");
    let text = s.to_string();
    assert!(text.contains("capacity 128"), "{text}");
}

#[test]
fn stat_of_a_missing_process_says_so() {
    let e = stat::rings_of_pid(u32::MAX - 1).unwrap_err();
    assert!(e.to_string().contains("no process"), "{e}");
}

#[test]
fn stat_tells_claimed_entries_from_done_ones_waiting_for_an_older_release() {
    let q = Queue::builder().capacity(64).build().unwrap();
    let ring = q.ring();
    for id in 1..=3 {
        let user = Source::user(id);
        q.add(&user, Token(id), Trigger::Level).unwrap();
        q.ready(&user).unwrap();
    }
    // Three entries claimed in three batches; the 2nd and 3rd are committed, the 1st is
    // held: uidx cannot pass it.
    let first = q.wait(1, Some(std::time::Duration::from_secs(5))).unwrap();
    let rest = q.wait(2, Some(std::time::Duration::from_secs(5))).unwrap();
    assert_eq!((first.len(), rest.len()), (1, 2));
    drop(rest);
    let s = stat::RingStat::read(ring, "test");
    assert_eq!((s.claimed_now, s.done_waiting), (1, 2), "{s}");
    assert!(s.holding_uidx.is_some(), "{s}");
    assert!(s.to_string().contains("1 claimed   2 done"), "{s}");
    assert!(s.to_json().contains(r#""claimed_now":1,"done_waiting":2"#));
    drop(first);
    let s = stat::RingStat::read(ring, "test");
    assert_eq!(
        (s.claimed_now, s.done_waiting, s.holding_uidx),
        (0, 0, None),
        "{s}"
    );
}

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

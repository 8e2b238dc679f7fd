//! What a queue leaves behind once it is dropped: nothing, even in a thread that waited
//! on it (issue: a thread that ever waited kept every queue alive in a thread-local list).
//! One test in its own binary, so no other test's queues are counted.

use std::time::Duration;

use kevent::{Queue, Source, Token, Trigger};

/// Ring mappings of this process (the memfd is named `kevent...`) and open fds.
fn footprint() -> (usize, usize) {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let rings = maps.lines().filter(|l| l.contains("/memfd:kevent")).count();
    let fds = std::fs::read_dir("/proc/self/fd").unwrap().count();
    (rings, fds)
}

#[test]
fn a_thread_that_waited_on_many_queues_keeps_none_of_them_alive() {
    let before = footprint();
    assert_eq!(before.0, 0, "no queue yet, but ring mappings: {before:?}");
    // One long-lived thread waits on 300 queues in turn (a timed-out wait, then a wait
    // that takes an event), then drops each.
    std::thread::spawn(|| {
        for i in 0..300u64 {
            let q = Queue::builder().capacity(8).build().unwrap();
            if i == 0 {
                // The count sees a live queue's ring (or this test could not fail).
                assert!(footprint().0 >= 1, "{:?}", footprint());
            }
            assert!(q.wait(4, Some(Duration::ZERO)).unwrap().is_empty());
            let user = Source::user(i);
            q.add(&user, Token(i), Trigger::Edge).unwrap();
            q.ready(&user).unwrap();
            let batch = q.wait(4, Some(Duration::from_secs(5))).unwrap();
            assert_eq!(batch.len(), 1, "queue {i}");
            assert_eq!(batch.iter().next().unwrap().token(), Token(i));
            drop(batch);
        }
        // Still alive here: what it kept would show now.
        let during = footprint();
        assert_eq!(
            during.0, 0,
            "a thread that waited on 300 dropped queues still maps {} rings",
            during.0
        );
    })
    .join()
    .unwrap();
    let after = footprint();
    assert_eq!(after.0, 0, "{after:?}");
    assert_eq!(
        after.1, before.1,
        "fds before and after: {before:?} {after:?}"
    );
}

//! `kevent loop-bench --quick` end to end: every rival of every experiment produces
//! numbers (no timing is asserted: the machine is shared; a timer firing early fails the
//! run, and so does a bottom half that never runs).

use std::process::Command;

fn numbers_after(line: &str, name: &str) -> Vec<f64> {
    line[name.len()..]
        .split_whitespace()
        .map(|w| {
            w.parse::<f64>()
                .unwrap_or_else(|_| panic!("{w:?} in {line:?}"))
        })
        .collect()
}

#[test]
fn the_quick_run_reports_every_rival_of_every_experiment() {
    let out = Command::new(env!("CARGO_BIN_EXE_kevent"))
        .args(["loop-bench", "--quick", "--rounds", "1"])
        .output()
        .expect("run kevent loop-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // The row `name` of the section whose heading starts with `== {section}`.
    let row_in = |section: &str, name: &str| -> Vec<f64> {
        let line = stdout
            .lines()
            .skip_while(|l| !l.starts_with(&format!("== {section}")))
            .skip(1)
            .take_while(|l| !l.starts_with("=="))
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row {name:?} in\n{stdout}"));
        numbers_after(line, name)
    };
    for name in [
        "kevent::Loop bottom half",
        "eventfd+epoll loop (QEMU)",
        "tokio Handle::spawn (current-thread)",
    ] {
        let v = row_in("bottom half", name);
        assert_eq!(v.len(), 8, "{name}: {v:?}");
        // p50 <= p99 <= max, positive round trips.
        assert!(v[0] <= v[1] && v[1] <= v[2], "{name}: {v:?}");
        assert!(v[5] > 0.0, "{name}: {v:?}");
    }
    for name in [
        "kevent::Loop timer",
        "epoll_wait ms timeout",
        "epoll + timerfd",
    ] {
        let v = row_in("timer", name);
        assert_eq!(v.len(), 3, "{name}: {v:?}");
        assert!(v[0] <= v[1] && v[1] <= v[2], "{name}: {v:?}");
    }
    // The ms-timeout loop rounds 100 µs up to a whole millisecond: it cannot be on time.
    assert!(row_in("timer", "epoll_wait ms timeout")[0] >= 800.0);
    for name in ["kevent::Loop", "epoll loop", "ppoll loop"] {
        let v = row_in("one iteration", name);
        assert_eq!(v.len(), 5, "{name}: {v:?}");
        assert!(v.iter().all(|&x| x > 0.0), "{name}: {v:?}");
    }
}

#[test]
fn bad_arguments_are_usage_errors() {
    let out = Command::new(env!("CARGO_BIN_EXE_kevent"))
        .args(["loop-bench", "--rounds", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("kevent: loop-bench: --rounds"), "{err}");
}

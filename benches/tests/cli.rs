//! The `kevent` binary as a user runs it: a closed stdout, `--version`, `help COMMAND`,
//! the error style and exit codes, `--svg` checked before a run, `stat --watch` into a
//! pipe, SIGINT, SIGTERM and SIGKILL to `bench` with consumer processes, SIGINT and
//! SIGTERM to `demo`, the JSON settings and the chart. One regression test per defect
//! of issue 11, item 4.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

const KEVENT: &str = env!("CARGO_BIN_EXE_kevent");

fn kevent(args: &[&str]) -> Command {
    let mut c = Command::new(KEVENT);
    c.args(args).env_remove("RUST_BACKTRACE");
    // SAFETY: between fork and exec only `signal`, which is async-signal-safe. As
    // started from a terminal: SIGINT and SIGTERM not ignored, even when this test runs
    // as a background job (whose SIGINT is ignored, and the tool then leaves it so).
    unsafe {
        c.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
            Ok(())
        });
    }
    c
}

fn run(args: &[&str]) -> Output {
    kevent(args).output().expect("running kevent")
}

fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Waits up to `limit` for `child`; `None` if it is still running.
fn wait_for(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: sending a signal to a process this test started.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, sig) }, 0);
}

/// `(pid, state)` of every process whose process group is `pgrp`, `pgrp` itself left
/// out (from `/proc/*/stat`: `pid (comm) state ppid pgrp ...`).
fn group_members(pgrp: u32) -> Vec<(u32, char)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        let state = fields.first().and_then(|s| s.chars().next()).unwrap_or('?');
        if fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgrp) && pid != pgrp {
            out.push((pid, state));
        }
    }
    out
}

/// Kills what is left of a test's processes and removes its files, so that a failing
/// test leaves nothing behind.
struct KillOnDrop(Vec<u32>, Option<PathBuf>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: signalling a process this test started (or one of its children);
            // an already gone pid only gives ESRCH.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        if let Some(path) = &self.1 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A pipe whose reader has already gone: the first write into it fails with EPIPE.
fn closed_pipe() -> std::os::fd::OwnedFd {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for `pipe2`.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds were just created by `pipe2` and are owned by nobody else.
    let (read, write) = unsafe {
        use std::os::fd::FromRawFd;
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    drop(read);
    write
}

/// Runs `kevent args` with a stdout whose reader has already gone.
fn into_closed_pipe(args: &[&str]) -> (ExitStatus, String) {
    let o = kevent(args)
        .stdout(Stdio::from(closed_pipe()))
        .stderr(Stdio::piped())
        .output()
        .expect("running kevent");
    (o.status, stderr_of(&o))
}

#[test]
fn a_closed_stdout_ends_quietly_with_0() {
    for args in [
        &["bench", "--list"][..],
        &["bench", "--help"],
        &["--help"],
        &["help", "stat"],
        &["--version"],
        &["stat", "--help"],
        &["demo", "--help"],
    ] {
        let (status, err) = into_closed_pipe(args);
        assert_eq!(
            status.code(),
            Some(0),
            "kevent {args:?}: {status}, stderr {err}"
        );
        assert!(!err.contains("panicked"), "kevent {args:?}: {err}");
        assert_eq!(err, "", "kevent {args:?}: not quiet");
    }
}

#[test]
fn a_run_with_stdout_and_stderr_into_a_closed_pipe_ends_with_0() {
    // `kevent bench ... 2>&1 | head -1`: the progress lines meet the closed pipe first.
    let out = closed_pipe();
    let status = kevent(&[
        "bench",
        "--kinds",
        "pipe,pingpong",
        "--pingpong",
        "100",
        "--streams",
        "16",
        "--consumers",
        "1",
        "--mode",
        "threads",
        "--seconds",
        "0.05",
        "--rounds",
        "1",
        "--warmup",
        "0",
        "--backends",
        "epoll-lt,kevent-lt",
    ])
    .stdout(Stdio::from(out.try_clone().unwrap()))
    .stderr(Stdio::from(out))
    .status()
    .unwrap();
    assert_eq!(status.code(), Some(0), "{status}");
}

#[test]
fn version_names_the_tool_and_its_version() {
    for flag in ["--version", "-V"] {
        let o = run(&[flag]);
        assert_eq!(o.status.code(), Some(0));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            format!("kevent {} (kevent-bench)\n", env!("CARGO_PKG_VERSION"))
        );
    }
}

#[test]
fn version_takes_no_argument() {
    for args in [
        &["--version", "extra"][..],
        &["-V", "stat"],
        &["--version", "--frob"],
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(2), "kevent {args:?}");
        assert_eq!(o.stdout, b"", "kevent {args:?}: printed the version");
        let err = stderr_of(&o);
        assert!(err.starts_with("kevent: "), "kevent {args:?}: {err}");
        assert!(
            err.contains("Run `kevent --help`"),
            "kevent {args:?}: {err}"
        );
    }
}

#[test]
fn completions_are_a_script_for_the_shell_asked_for() {
    let bash = run(&["completions", "bash"]);
    assert_eq!(bash.status.code(), Some(0), "{}", stderr_of(&bash));
    let script = String::from_utf8(bash.stdout).unwrap();
    // Every command and the options of one.
    for word in [
        "_kevent()",
        "loop-bench",
        "completions",
        "--pingpong",
        "--watch",
    ] {
        assert!(script.contains(word), "no {word} in the bash script");
    }
    let zsh = String::from_utf8(run(&["completions", "zsh"]).stdout).unwrap();
    assert!(zsh.starts_with("#compdef kevent"), "{zsh}");
    let o = run(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr_of(&o).starts_with("kevent: completions: "),
        "{}",
        stderr_of(&o)
    );
}

#[test]
fn help_command_shows_that_commands_help() {
    for command in ["stat", "demo", "bench", "loop-bench", "completions"] {
        let usage = kevent_bench::cli::help_of(command).unwrap();
        assert!(
            usage.contains(&format!("Usage: kevent {command} ")),
            "{usage}"
        );
        let o = run(&["help", command]);
        assert_eq!(o.status.code(), Some(0), "help {command}");
        assert_eq!(String::from_utf8_lossy(&o.stdout), usage, "help {command}");
        // The same text as `kevent COMMAND --help`.
        assert_eq!(
            run(&[command, "--help"]).stdout,
            o.stdout,
            "{command} --help"
        );
    }
    let o = run(&["help"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        kevent_bench::cli::help_of("").unwrap()
    );
    assert_eq!(run(&["--help"]).stdout, o.stdout);
    // Every option of `kevent bench`, with its text.
    let bench = String::from_utf8_lossy(&run(&["bench", "--help"]).stdout).into_owned();
    for option in [
        "--quick ",
        "--seconds <SECS>",
        "--rounds <N>",
        "--warmup <SECS>",
        "--seed <N>",
        "--paced <RATE>",
        "--streams <LIST>",
        "--kinds <LIST>",
        "--pingpong <N>",
        "--consumers <LIST>",
        "--mode <LIST>",
        "--backends <LIST>",
        "--batch <N>",
        "--format <FMT>",
        "--svg <PATH>",
        "--list ",
        "-h, --help ",
    ] {
        assert!(bench.contains(option), "no {option} in {bench}");
    }
    assert!(bench.contains("measured seconds per run (default 2; quick 0.5)"));
    assert!(
        !bench.contains("--bench"),
        "cargo bench's flag is not shown"
    );
    let o = run(&["help", "frob"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr_of(&o).starts_with("kevent: help: unknown command \"frob\"\n"),
        "{}",
        stderr_of(&o)
    );
}

#[test]
fn errors_have_one_style_exit_2_for_usage_and_1_at_run_time() {
    for (args, first_line) in [
        (&["frob"][..], "kevent: unknown command \"frob\""),
        (&[][..], "kevent: no command given"),
        (
            &["stat", "--frob"],
            "kevent: stat: unknown option \"--frob\"",
        ),
        (
            &["demo", "--frob"],
            "kevent: demo: unknown option \"--frob\"",
        ),
        (
            &["demo", "extra"],
            "kevent: demo: unexpected argument \"extra\"",
        ),
        (
            &["bench", "--frob"],
            "kevent: bench: unknown option \"--frob\"",
        ),
        (
            &["bench", "--seconds", "-1"],
            "kevent: bench: --seconds: `-1` is out of range",
        ),
        (&["--version", "extra"], "kevent: unknown command \"extra\""),
        (
            &["bench", "--backends", "nope"],
            "kevent: bench: --backends: unknown backend `nope`",
        ),
    ] {
        let o = run(args);
        let err = stderr_of(&o);
        assert_eq!(o.status.code(), Some(2), "kevent {args:?}: {err}");
        let mut lines = err.lines();
        assert!(
            lines.next().unwrap_or("").starts_with(first_line),
            "kevent {args:?}: {err}"
        );
        assert!(
            lines.next().unwrap_or("").starts_with("Run `kevent"),
            "kevent {args:?}: {err}"
        );
    }
    let o = run(&["stat", "4294967294"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr_of(&o), "kevent: stat: no process 4294967294\n");
    let o = run(&["stat", "/nonexistent/kevent.sock"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr_of(&o).starts_with("kevent: stat: attaching through /nonexistent/kevent.sock: "),
        "{}",
        stderr_of(&o)
    );
    let help = String::from_utf8_lossy(&run(&["--help"]).stdout).into_owned();
    assert!(help.contains("`kevent: <command>: <message>`"), "{help}");
    assert!(
        help.contains("1 failure at run time, 2 bad command"),
        "{help}"
    );
}

#[test]
fn svg_into_a_missing_directory_fails_before_the_run() {
    let started = Instant::now();
    // Without the check, these settings run for more than 10 s before writing the chart.
    let o = run(&[
        "bench",
        "--kinds",
        "pipe",
        "--streams",
        "16",
        "--consumers",
        "1",
        "--mode",
        "threads",
        "--seconds",
        "10",
        "--rounds",
        "1",
        "--warmup",
        "0",
        "--pingpong",
        "0",
        "--backends",
        "epoll-et",
        "--svg",
        "/nonexistent/dir/x.svg",
    ]);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let err = stderr_of(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with(
            "kevent: bench: --svg /nonexistent/dir/x.svg: directory /nonexistent/dir: "
        ),
        "{err}"
    );
    assert!(!err.contains("[cell"), "a cell ran: {err}");
    let dir = std::env::temp_dir();
    let o = run(&["bench", "--svg", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr_of(&o).contains("is a directory"),
        "{}",
        stderr_of(&o)
    );
}

#[test]
fn stat_watch_into_a_pipe_has_no_escape_codes_and_ends_quietly_when_the_reader_goes() {
    // A ring in this process to look at.
    let q = kevent::Queue::builder().capacity(64).build().unwrap();
    let me = std::process::id().to_string();
    let mut child = kevent(&["stat", &me, "--watch", "0.1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _guard = KillOnDrop(vec![child.id()], None);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut text = Vec::new();
    let mut refreshes = 0;
    let header = format!("kevent stat {me}");
    while refreshes < 3 {
        let mut line = Vec::new();
        assert!(
            out.read_until(b'\n', &mut line).unwrap() > 0,
            "stdout ended"
        );
        // Anywhere in the line: a screen-clearing escape code may come first.
        if String::from_utf8_lossy(&line).contains(&header) {
            refreshes += 1;
        }
        text.extend_from_slice(&line);
        assert!(text.len() < 1 << 20, "no refresh header in {text:?}");
    }
    drop(out); // the reader goes: the next refresh meets a closed pipe
    let status = wait_for(&mut child, Duration::from_secs(5)).expect("stat --watch still runs");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{status}: {err}");
    assert_eq!(err, "");
    assert!(!text.contains(&0x1b), "{}", String::from_utf8_lossy(&text));
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("capacity 64"), "{text}");
    drop(q);
}

/// `kevent bench` with two consumer processes, long enough to be killed while running;
/// a process group of its own, so that every process it forked can be found.
fn bench_with_consumer_processes() -> (Child, Vec<u32>) {
    bench_with_consumer_processes_into(Stdio::null())
}

/// [`bench_with_consumer_processes`], its report into `stdout`.
fn bench_with_consumer_processes_into(stdout: Stdio) -> (Child, Vec<u32>) {
    let mut child = kevent(&[
        "bench",
        "--kinds",
        "pipe",
        "--streams",
        "16",
        "--consumers",
        "2",
        "--mode",
        "processes",
        "--seconds",
        "20",
        "--rounds",
        "1",
        "--warmup",
        "0",
        "--pingpong",
        "0",
        "--backends",
        "epoll-et",
    ])
    .stdout(stdout)
    .stderr(Stdio::null())
    .process_group(0)
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let consumers = loop {
        let m = group_members(child.id());
        if m.len() == 2 {
            break m.into_iter().map(|(pid, _)| pid).collect::<Vec<_>>();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("no 2 consumer processes after 10 s: {m:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (child, consumers)
}

#[test]
fn sigint_and_sigterm_to_bench_kill_and_reap_its_consumer_processes() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let (mut child, consumers) = bench_with_consumer_processes();
        let pgrp = child.id();
        let _guard = KillOnDrop(consumers.iter().copied().chain([pgrp]).collect(), None);
        signal(pgrp, sig);
        let status = wait_for(&mut child, Duration::from_secs(5)).expect("bench ignored it");
        assert_eq!(status.signal(), Some(sig), "{status}");
        // Reaped by the harness before it ended: not even a zombie is left.
        assert_eq!(
            group_members(pgrp),
            vec![],
            "signal {sig}: consumers {consumers:?} left behind"
        );
    }
}

/// Reads `n` lines of `child`'s stdout, then closes it (the reader goes, as `head -n`
/// does); returns the lines.
fn read_lines_and_close(child: &mut Child, n: usize) -> Vec<String> {
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    for _ in 0..n {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "stdout ended");
        lines.push(line);
    }
    lines
}

#[test]
fn bench_into_a_reader_that_goes_after_3_lines_stops_at_once_and_exits_0() {
    // `kevent bench --quick | head -3`: the header comes before the run, and the run
    // (about a minute) stops when head has gone, not at its next write.
    let started = Instant::now();
    let mut child = kevent(&["bench", "--quick"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let pgrp = child.id();
    let _guard = KillOnDrop(vec![pgrp], None);
    let lines = read_lines_and_close(&mut child, 3);
    assert!(lines[0].starts_with("kevent bench: "), "{lines:?}");
    assert!(lines[2].starts_with("kernel: "), "{lines:?}");
    // Before the run, not after it (a minute).
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let closed = Instant::now();
    let status = wait_for(&mut child, Duration::from_secs(5)).expect("bench runs on");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{status}: {err}");
    assert!(closed.elapsed() < Duration::from_secs(5));
    // (Progress lines may still follow it for a moment, until the process has ended.)
    assert!(
        err.contains("\nkevent: bench: the reader of stdout has gone: stopped (exit code 0)\n"),
        "{err}"
    );
    assert_eq!(group_members(pgrp), vec![], "left behind");
}

#[test]
fn bench_whose_reader_goes_kills_and_reaps_its_consumer_processes_and_exits_0() {
    let started = Instant::now();
    let (mut child, consumers) = bench_with_consumer_processes_into(Stdio::piped());
    let pgrp = child.id();
    let _guard = KillOnDrop(consumers.iter().copied().chain([pgrp]).collect(), None);
    // The 20 s run is under way, its consumers forked: the reader goes.
    read_lines_and_close(&mut child, 3);
    let status = wait_for(&mut child, Duration::from_secs(5)).expect("bench runs on");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "ended with its run: {:?}",
        started.elapsed()
    );
    assert_eq!(status.code(), Some(0), "{status}");
    // Killed and reaped before it ended, as on SIGINT: not even a zombie is left.
    assert_eq!(
        group_members(pgrp),
        vec![],
        "consumers {consumers:?} left behind"
    );
}

#[test]
fn loop_bench_into_a_reader_that_goes_after_3_lines_stops_at_once_and_exits_0() {
    let started = Instant::now();
    let mut child = kevent(&["loop-bench", "--quick"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = KillOnDrop(vec![child.id()], None);
    let lines = read_lines_and_close(&mut child, 3);
    assert!(lines[0].starts_with("kevent loop-bench: "), "{lines:?}");
    let status = wait_for(&mut child, Duration::from_secs(5)).expect("loop-bench runs on");
    // The quick run takes 20 to 30 s.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "ended with its run: {:?}",
        started.elapsed()
    );
    assert_eq!(status.code(), Some(0), "{status}");
}

#[test]
fn sigkill_to_bench_takes_its_consumer_processes_with_it() {
    let (mut child, consumers) = bench_with_consumer_processes();
    let pgrp = child.id();
    let _guard = KillOnDrop(consumers.iter().copied().chain([pgrp]).collect(), None);
    signal(pgrp, libc::SIGKILL);
    let status = wait_for(&mut child, Duration::from_secs(5)).expect("SIGKILL");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    // PR_SET_PDEATHSIG: the consumers die too (init reaps them, so a zombie may linger
    // for a moment; nothing may still run).
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let running: Vec<_> = group_members(pgrp)
            .into_iter()
            .filter(|&(_, state)| state != 'Z')
            .collect();
        if running.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "consumers still running: {running:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `kevent demo` with two worker processes for 30 s, stdout and stderr piped.
fn spawn_demo() -> Child {
    kevent(&["demo", "--seconds", "30", "--pipes", "4", "--workers", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A `kevent demo` with worker processes, its output read up to the line naming its
/// workers and socket: `(child, its stdout, worker pids, socket path)`.
fn demo_with_workers() -> (
    Child,
    BufReader<std::process::ChildStdout>,
    Vec<u32>,
    PathBuf,
) {
    let mut child = spawn_demo();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    // "workers are processes [12, 13], attached through /tmp/kevent-demo-11.sock"
    let (pids, socket) = loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "demo ended early");
        if let Some(rest) = line.strip_prefix("workers are processes [") {
            let (pids, socket) = rest.split_once("], attached through ").unwrap();
            break (pids.to_string(), PathBuf::from(socket.trim_end()));
        }
    };
    let pids = pids.split(", ").map(|p| p.parse().unwrap()).collect();
    (child, out, pids, socket)
}

fn assert_gone(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while pids
        .iter()
        .any(|p| Path::new(&format!("/proc/{p}")).exists())
    {
        assert!(Instant::now() < deadline, "workers {pids:?} still exist");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sigint_and_sigterm_to_demo_stop_its_workers_and_remove_its_socket() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let (mut child, _out, workers, socket) = demo_with_workers();
        let _guard = KillOnDrop(
            workers.iter().copied().chain([child.id()]).collect(),
            Some(socket.clone()),
        );
        assert!(socket.exists(), "{}", socket.display());
        signal(child.id(), sig);
        let status = wait_for(&mut child, Duration::from_secs(5)).expect("demo ignored it");
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert_eq!(status.code(), Some(128 + sig), "{status}: {err}");
        assert_eq!(
            err,
            format!("kevent: demo: stopped by signal {sig}; workers stopped, socket removed\n")
        );
        assert!(!socket.exists(), "{} left behind", socket.display());
        assert_gone(&workers);
    }
}

#[test]
fn demo_into_a_reader_that_goes_stops_cleans_up_and_exits_0() {
    let (mut child, out, workers, socket) = demo_with_workers();
    let _guard = KillOnDrop(
        workers.iter().copied().chain([child.id()]).collect(),
        Some(socket.clone()),
    );
    drop(out);
    // The next per-second line meets the closed pipe.
    let status = wait_for(&mut child, Duration::from_secs(5)).expect("demo runs on");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{status}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!socket.exists(), "{} left behind", socket.display());
    assert_gone(&workers);
}

/// The text of member `key` of the JSON object that starts at `object` (its `{`): up to
/// the `,` or `}` that ends it at depth 0.
fn member<'a>(object: &'a str, key: &str) -> &'a str {
    let start = object
        .find(&format!("\"{key}\": "))
        .unwrap_or_else(|| panic!("no {key} in {object}"))
        + key.len()
        + 4;
    let mut depth = 0;
    for (i, c) in object[start..].char_indices() {
        match c {
            '[' | '{' => depth += 1,
            ']' | '}' if depth > 0 => depth -= 1,
            ',' | '}' if depth == 0 => return &object[start..start + i],
            _ => {}
        }
    }
    panic!("unterminated {key}")
}

#[test]
fn json_settings_are_numbers_and_the_chart_has_scale_spread_settings_and_labels() {
    let svg = std::env::temp_dir().join(format!("kevent-cli-test-{}.svg", std::process::id()));
    let o = run(&[
        "bench",
        "--kinds",
        "pipe",
        "--streams",
        "16",
        "--consumers",
        "1",
        "--mode",
        "threads",
        "--seconds",
        "0.05",
        "--rounds",
        "2",
        "--warmup",
        "0",
        "--pingpong",
        "0",
        "--backends",
        "epoll-et,kevent-lt",
        "--format",
        "json",
        "--svg",
        svg.to_str().unwrap(),
    ]);
    // Read and removed before any assertion, so that a failing test leaves no file.
    let chart = std::fs::read_to_string(&svg);
    let _ = std::fs::remove_file(&svg);
    assert_eq!(o.status.code(), Some(0), "{}", stderr_of(&o));
    let chart = chart.expect("the chart");
    let json = String::from_utf8(o.stdout).unwrap();
    let settings = &json[json.find("\"settings\": {").expect("settings") + 12..];
    let number = |key: &str| -> f64 {
        let v = member(settings, key);
        v.parse()
            .unwrap_or_else(|_| panic!("{key}: {v} is not a number"))
    };
    assert_eq!(number("seconds"), 0.05);
    assert_eq!(number("rounds"), 2.0);
    assert_eq!(number("warmup"), 0.0);
    assert_eq!(number("seed"), 1.0);
    assert_eq!(number("batch"), 1024.0);
    assert_eq!(number("read_buf_bytes"), 64.0);
    assert_eq!(number("wait_timeout_ms"), 50.0);
    assert_eq!(member(settings, "streams"), "[16]");
    assert_eq!(member(settings, "consumers"), "[1]");
    assert_eq!(member(settings, "kinds"), "[\"pipe\"]");
    assert_eq!(
        member(settings, "rotation"),
        "[\"epoll-et\", \"kevent-lt\"]"
    );
    assert_eq!(member(settings, "paced_writes_per_s"), "null");
    assert_eq!(member(settings, "pingpong_round_trips"), "null");

    assert!(
        chart.contains("scale: one per metric, shared by every cell"),
        "no scale note"
    );
    // One whisker per bar: 2 backends × (events/s, CPU per event).
    assert_eq!(chart.matches("class=\"whisker\"").count(), 4);
    assert!(chart.contains("whiskers: lowest to highest round (min–max)"));
    assert!(chart.contains("settings: seconds=0.05 rounds=2 warmup=0 seed=1"));
    assert!(chart.contains("CPU per event (consumers + helper threads)"));
    assert!(chart.contains("kevent: its producer thread"));
    assert!(!chart.contains("consumer CPU"), "the old, inaccurate label");
}

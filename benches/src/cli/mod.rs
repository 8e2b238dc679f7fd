//! The `kevent` command line: `kevent stat` (a live view of a ring), `kevent demo`
//! (events flowing through a queue), `kevent bench` (the benchmark harness),
//! `kevent loop-bench` (the event loop's benchmark).
//!
//! Arguments are parsed by hand (no parser dependency for four subcommands). Every
//! subcommand reports errors in one style, `kevent: <command>: <message>` on stderr, and
//! exits with 2 for a bad command line (then a pointer to the help follows) and 1 for a
//! failure at run time. A closed stdout (`kevent bench --list | head -1`) ends a
//! command quietly with 0, as there is nobody left to tell.

use std::process::ExitCode;

pub mod demo;
pub mod out;
pub mod stat;

use out::{print_stdout, usage_error};
pub use out::{EXIT_FAILURE, EXIT_USAGE};

/// The top-level usage text (`kevent --help`).
pub const USAGE: &str = "\
kevent — a user-space Linux kevent: a shared-memory event ring

usage:
  kevent stat <pid|socket-path> [--watch [SECS]] [--json]
                        live view of a queue's ring: positions, backlog, sleepers,
                        consumers, counters
  kevent demo [--pipes N] [--workers N] [--seconds S] [--threads] [--edge]
                        events flowing from N pipes to worker processes (or
                        threads), with exact accounting at the end
  kevent bench [ARGS]   the benchmark harness (kevent bench --help)
  kevent loop-bench [ARGS]
                        kevent::Loop against QEMU-style loops and tokio
                        (kevent loop-bench --help)
  kevent help [COMMAND] this text, or the help of COMMAND (also `kevent COMMAND --help`)
  kevent --version      the version

Errors go to stderr as `kevent: <command>: <message>`. Exit codes: 0 success (also when
stdout is closed early, e.g. piped into `head`), 1 failure at run time, 2 bad command
line, 128+N killed by signal N (SIGINT and SIGTERM clean up first: `bench` reaps its
consumer processes, `demo` its workers and its socket).
";

/// The process's arguments, without the program name, to [`run`].
pub fn main() -> ExitCode {
    run(std::env::args().skip(1).collect())
}

/// The help text of `command` ("" for the top level), `None` for an unknown command.
fn help_of(command: &str) -> Option<&'static str> {
    match command {
        "" => Some(USAGE),
        "stat" => Some(stat::USAGE),
        "demo" => Some(demo::USAGE),
        "bench" => Some(crate::bench::args::USAGE),
        "loop-bench" => Some(crate::loopbench::USAGE),
        _ => None,
    }
}

/// Runs the command line `args` (without the program name) and returns the exit code:
/// 0 success, 1 failure, 2 bad arguments.
pub fn run(args: Vec<String>) -> ExitCode {
    let Some(command) = args.first() else {
        return usage_error("", "no command given");
    };
    let rest = &args[1..];
    match command.as_str() {
        "-h" | "--help" => print_help(""),
        "help" => match rest {
            [] => print_help(""),
            [c] if help_of(c).is_some() => print_help(c),
            [c] => usage_error("help", &format!("unknown command {c:?}")),
            [_, extra, ..] => usage_error("help", &format!("unexpected argument {extra:?}")),
        },
        "-V" | "--version" => print_stdout(
            "",
            &format!("kevent {} (kevent-bench)\n", env!("CARGO_PKG_VERSION")),
        ),
        "stat" => stat::run(rest),
        "demo" => demo::run(rest),
        "bench" => crate::bench::main(rest.to_vec()),
        "loop-bench" => crate::loopbench::main(rest),
        other => usage_error("", &format!("unknown command {other:?}")),
    }
}

fn print_help(command: &str) -> ExitCode {
    print_stdout(command, help_of(command).unwrap_or(USAGE))
}

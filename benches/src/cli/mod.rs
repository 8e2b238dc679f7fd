//! The `kevent` command line: `kevent stat` (a live view of a ring), `kevent demo`
//! (events flowing through a queue), `kevent bench` (the benchmark harness).
//!
//! Arguments are parsed by hand (no parser dependency for three subcommands). Bad
//! arguments print what was wrong and the usage to stderr and exit with code 2.

use std::process::ExitCode;

pub mod demo;
pub mod stat;

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
  kevent --help         this text; `kevent <command> --help` for each command
";

/// The process's arguments, without the program name, to [`run`].
pub fn main() -> ExitCode {
    run(std::env::args().skip(1).collect())
}

/// Runs the command line `args` (without the program name) and returns the exit code:
/// 0 success, 1 failure, 2 bad arguments.
pub fn run(args: Vec<String>) -> ExitCode {
    let Some(command) = args.first() else {
        return usage_error("", "no command given");
    };
    let rest = &args[1..];
    match command.as_str() {
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        "stat" => stat::run(rest),
        "demo" => demo::run(rest),
        "bench" => crate::bench::main(rest.to_vec()),
        other => usage_error("", &format!("unknown command {other:?}")),
    }
}

/// Prints `message` and the usage of `command` ("" for the top level) to stderr; exit
/// code 2.
pub(crate) fn usage_error(command: &str, message: &str) -> ExitCode {
    let usage = match command {
        "stat" => stat::USAGE,
        "demo" => demo::USAGE,
        _ => USAGE,
    };
    let prefix = if command.is_empty() {
        "kevent".to_string()
    } else {
        format!("kevent {command}")
    };
    eprint!("{prefix}: {message}\n\n{usage}");
    ExitCode::from(2)
}

/// Parses the value of option `name` (the next argument).
pub(crate) fn value<T: std::str::FromStr>(name: &str, next: Option<&String>) -> Result<T, String> {
    let v = next.ok_or_else(|| format!("{name} needs a value"))?;
    v.parse()
        .map_err(|_| format!("{name}: {v:?} is not a valid value"))
}

//! The `kevent` command-line tool. Subcommands: `bench` (the benchmark harness).

use std::process::ExitCode;

const USAGE: &str = "Usage: kevent <COMMAND> [OPTIONS]\n\nCommands:\n  bench   run the epoll_bench-style comparison of notification backends (kevent bench --help)\n";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("bench") => kevent::bench::main(args),
        Some("-h" | "--help") => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("kevent: unknown command `{other}`\n{USAGE}");
            ExitCode::from(2)
        }
        None => {
            eprint!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

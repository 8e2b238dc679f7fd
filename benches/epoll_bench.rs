//! `cargo bench` entry point: the same program as `kevent bench`.
//!
//! `cargo bench` passes `--bench` (dropped here); with no other argument the quick reference
//! cells are run. Example:
//! `cargo bench -p kevent-bench --bench epoll_bench -- --kinds tcp --streams 2000`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.is_empty() {
        args.push("--quick".to_string());
    }
    kevent_bench::bench::main(args)
}

//! The `kevent` command-line tool: `bench`, `stat`, `demo` (see `kevent --help`).

fn main() -> std::process::ExitCode {
    kevent_bench::cli::main()
}

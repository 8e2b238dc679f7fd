//! # kevent-bench: the comparison harness and the `kevent` tool
//!
//! Not part of the `kevent` library: this crate holds what a program that merely uses
//! kevent should not have to build — the benchmark against epoll and io_uring (with the
//! rivals' dependencies) and the command line.
//!
//! * [`bench`](mod@bench) — the harness behind `kevent bench` and `cargo bench -p kevent-bench`;
//! * [`cli`](mod@cli) — the `kevent` binary's subcommands: `kevent stat` shows a live ring,
//!   `kevent demo` shows events flowing, `kevent bench` runs the comparison;
//! * [`loopbench`] — `kevent loop-bench`: `kevent::Loop` against QEMU-style loops and tokio.
//! * [`http`](mod@http) — `kevent-httpd`, the HTTP server of the server benchmark
//!   (`benches/http/run.sh`): kevent back-ends against epoll, tokio and nginx.
//!
//! ```text
//! cargo run --release -p kevent-bench -- bench --quick
//! ```

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, missing_docs)]

pub mod bench;
pub mod cli;
pub mod http;
pub mod loopbench;

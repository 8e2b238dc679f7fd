//! One `kevent::Loop` iteration in a tight loop — a readable eventfd made readable, the
//! loop's poll, its read handler draining it — for counting what an iteration costs in
//! instructions, which unlike time does not move with the machine's load:
//!
//! ```text
//! RUSTFLAGS="--cfg rustix_use_libc" CARGO_TARGET_DIR=target/vg \
//!     cargo build --release -p kevent-bench --example loop_iteration
//! for n in 20000 40000; do
//!     valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.$n \
//!         target/vg/release/examples/loop_iteration $n
//! done
//! ```
//!
//! (instructions per iteration = the difference of the two totals ÷ 20,000; rustix must
//! go through libc under valgrind). Without valgrind it prints the time per iteration.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use kevent::{FdHandler, Loop};
use rustix::event::{eventfd, EventfdFlags};

fn main() {
    let lp = Loop::new().expect("a loop");
    let fd: Arc<OwnedFd> =
        Arc::new(eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).expect("an eventfd"));
    let handler_fd = fd.clone();
    lp.set_fd_handler(
        &*fd,
        FdHandler::new().read(move |_| {
            let mut b = [0u8; 8];
            let _ = rustix::io::read(&*handler_fd, &mut b);
        }),
    )
    .expect("the handler");
    let n: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("a count of iterations"))
        .unwrap_or(1_000_000);
    let start = std::time::Instant::now();
    for _ in 0..n {
        let _ = rustix::io::write(&*fd, &1u64.to_ne_bytes());
        lp.poll(true);
    }
    eprintln!(
        "{n} iterations, {:.0} ns each",
        start.elapsed().as_nanos() as f64 / n as f64
    );
}

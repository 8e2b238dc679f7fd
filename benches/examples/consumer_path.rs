//! A lone consumer's path through the queue — harvest, publish, claim, read, commit,
//! release — in a tight, single-threaded loop, for counting what one event costs in
//! instructions (issue 20, item 3), which unlike time does not move with the machine's
//! load:
//!
//! ```text
//! RUSTFLAGS="--cfg rustix_use_libc" CARGO_TARGET_DIR=target/vg \
//!     cargo build --release -p kevent-bench --example consumer_path
//! for r in 200 400; do
//!     valgrind --tool=callgrind --callgrind-out-file=/tmp/cp.$r \
//!         target/vg/release/examples/consumer_path $r edge
//! done
//! ```
//!
//! Each round writes one byte into each of 64 of the registered pipes (256, or the third
//! argument), then waits until it has handled 64 events (reading each pipe), committing
//! each batch. Instructions per event = the difference of the two totals ÷ (200 × 64).
//! `edge` or `level` picks the trigger. With many pipes (2,000, as `kevent bench`), add
//! `--cache-sim=yes` to count the cache misses too. Without valgrind it prints the time
//! per event.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use kevent::{Interest, Queue, Source, Token, Trigger};

const PER_ROUND: usize = 64;

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args
        .next()
        .map(|s| s.parse().expect("a count of rounds"))
        .unwrap_or(20_000);
    let trigger = match args.next().as_deref() {
        Some("level") => Trigger::Level,
        _ => Trigger::Edge,
    };
    let pipes_n: usize = args
        .next()
        .map(|s| s.parse().expect("a count of pipes"))
        .unwrap_or(256)
        .max(PER_ROUND);
    let queue = Queue::new().expect("a queue");
    let pipes: Vec<(OwnedFd, OwnedFd)> = (0..pipes_n)
        .map(|_| {
            rustix::pipe::pipe_with(
                rustix::pipe::PipeFlags::NONBLOCK | rustix::pipe::PipeFlags::CLOEXEC,
            )
            .expect("a pipe")
        })
        .collect();
    for (i, (r, _)) in pipes.iter().enumerate() {
        queue
            .add(
                &Source::pipe(r, Interest::READABLE),
                Token(i as u64),
                trigger,
            )
            .expect("ADD");
    }
    let mut next = 0usize;
    let mut buf = [0u8; 64];
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        for _ in 0..PER_ROUND {
            let _ = rustix::io::write(pipes[next].1.as_fd(), &[1]);
            // A prime stride: 64 writes go to 64 different pipes.
            next = (next + 7919) % pipes_n;
        }
        let mut got = 0;
        while got < PER_ROUND {
            let batch = queue
                .wait(PER_ROUND, Some(Duration::from_secs(5)))
                .expect("wait");
            assert!(!batch.is_empty(), "an event was lost");
            for ev in batch.iter() {
                let _ = rustix::io::read(pipes[ev.token().0 as usize].0.as_fd(), &mut buf);
                got += 1;
            }
        }
    }
    let events = rounds * PER_ROUND;
    eprintln!(
        "{events} events, {:.0} ns each",
        start.elapsed().as_nanos() as f64 / events as f64
    );
}

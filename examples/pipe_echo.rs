//! Echo what arrives on a few pipes: builder → add → wait → batch.
//!
//! A writer thread sends lines into three pipes; the main thread waits on one queue,
//! reads every pipe it is told about, and prints what it read with the pipe's token.
//!
//! Run with `cargo run --example pipe_echo`.

use std::io::{Read, Write};
use std::time::Duration;

use kevent::{Interest, Queue, Source, Token, Trigger};

fn main() -> std::io::Result<()> {
    let queue = Queue::builder().capacity(16).build()?;

    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for i in 0..3 {
        let (reader, writer) = std::io::pipe()?;
        // A pipe with data in it already would be queued too: every event comes
        // through `wait`.
        queue.add(
            &Source::pipe(&reader, Interest::READABLE),
            Token(i),
            Trigger::Level,
        )?;
        readers.push(reader);
        writers.push(writer);
    }

    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        for round in 0..3 {
            for (i, w) in writers.iter_mut().enumerate() {
                writeln!(w, "round {round} on pipe {i}")?;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(()) // the write ends close here: readers see EOF
    });

    let mut open = readers.len();
    while open > 0 {
        let batch = queue.wait(8, Some(Duration::from_secs(5)))?;
        if batch.is_empty() {
            eprintln!("nothing for 5 s");
            break;
        }
        for event in &batch {
            let token = event.token();
            let mut buf = [0u8; 4096];
            let n = readers[token.0 as usize].read(&mut buf)?;
            if n == 0 {
                // EOF: stop watching this pipe (a level-triggered EOF stays ready).
                queue.remove(&Source::pipe(
                    &readers[token.0 as usize],
                    Interest::READABLE,
                ))?;
                open -= 1;
                continue;
            }
            print!("[token {}] {}", token.0, String::from_utf8_lossy(&buf[..n]));
        }
        // Dropping the batch commits it: the producer re-checks the pipes it named.
    }
    writer.join().expect("writer thread")?;
    println!(
        "posted {} events, lost {}",
        queue.stats().posted,
        queue.stats().lost
    );
    Ok(())
}

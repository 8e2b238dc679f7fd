//! A TCP echo server on one kevent queue shared by a few threads — the server a user
//! writes first.
//!
//! Every worker thread calls `Queue::wait` on the same queue; each event goes to exactly
//! one of them, and a level-triggered kevent has one event outstanding until its batch
//! commits, so a connection is never handled by two threads at once. The handling
//! (`examples/echo_common/echo.rs`, shared with `tokio_echo.rs`) shows the rules:
//! non-blocking sockets read until `WouldBlock`, EOF removes the connection from the
//! queue before the socket is dropped, output the client is not reading yet waits for
//! WRITABLE.
//!
//! ```text
//! cargo run --release --example tcp_server -- 127.0.0.1:7878   # serve until killed
//! cargo run --release --example tcp_server -- --self-test      # what CI runs
//! ```
//!
//! `--self-test` serves on a free port, runs [`CLIENTS`] client threads that each send
//! [`MESSAGES`] messages (1 byte to 48 KiB; client 0 ends with 8 MiB written whole before
//! it reads, which makes the output wait for WRITABLE if the socket buffers fill) and
//! check every echoed byte, then checks that every connection was accepted and closed
//! and every byte echoed, and stops the workers; it exits 0 only if all of that holds.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kevent::Queue;

#[path = "echo_common/echo.rs"]
mod echo;
use echo::{Echo, Next};

const WORKERS: usize = 4;
const CLIENTS: usize = 32;
const MESSAGES: usize = 20;
/// The last message of client 0: 8 MiB.
const BULK: usize = 8 << 20;

fn main() -> std::io::Result<()> {
    let arg = std::env::args().nth(1);
    let self_test = arg.as_deref() == Some("--self-test");
    let addr = match (&arg, self_test) {
        (Some(a), false) => a.clone(),
        (_, true) => "127.0.0.1:0".to_string(),
        (None, false) => "127.0.0.1:7878".to_string(),
    };
    let queue = Queue::builder().capacity(256).build()?;
    let server = Echo::bind(&addr, &queue)?;
    let addr = server.local_addr()?;
    println!("echo server on {addr}, {WORKERS} threads sharing one queue");

    std::thread::scope(|s| -> std::io::Result<()> {
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| s.spawn(|| worker(&queue, &server)))
            .collect();
        if self_test {
            let result = run_clients(addr);
            // Stop the workers whatever happened, so that the scope can end.
            Echo::stop(&queue)?;
            for w in workers {
                w.join().expect("a worker panicked")?;
            }
            let sent = result?;
            check(&server, sent);
        } else {
            for w in workers {
                w.join().expect("a worker panicked")?;
            }
        }
        Ok(())
    })
}

/// A worker: waits on the shared queue, handles its batch, commits it (the drop).
fn worker(queue: &Queue, server: &Echo) -> std::io::Result<()> {
    loop {
        let batch = queue.wait(16, None)?;
        let mut stop = false;
        for event in &batch {
            if server.handle(queue, &event)? == Next::Stop {
                stop = true;
            }
        }
        drop(batch); // commit: level-triggered sources still ready come back
        if stop {
            return Ok(());
        }
    }
}

/// The size of message `m` of client `c`: 1 byte to 48 KiB, different for each, and
/// [`BULK`] for the last of client 0.
fn message_len(c: usize, m: usize) -> usize {
    if c == 0 && m == MESSAGES - 1 {
        // Written whole before the client reads: the echo outgrows the socket buffers
        // and waits for WRITABLE.
        return BULK;
    }
    (c * 7919 + m * 104_729) % (48 * 1024) + 1
}

/// Runs the clients; returns the bytes they sent (and got back, checked).
fn run_clients(addr: std::net::SocketAddr) -> std::io::Result<u64> {
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            std::thread::spawn(move || -> std::io::Result<u64> {
                let mut stream = TcpStream::connect(addr)?;
                stream.set_read_timeout(Some(Duration::from_secs(10)))?;
                stream.set_write_timeout(Some(Duration::from_secs(10)))?;
                let mut sent = 0;
                for m in 0..MESSAGES {
                    let msg: Vec<u8> = (0..message_len(c, m))
                        .map(|i| (i * 31 + c * 7 + m) as u8)
                        .collect();
                    stream.write_all(&msg)?;
                    let mut back = vec![0u8; msg.len()];
                    stream.read_exact(&mut back)?;
                    assert!(back == msg, "client {c}: message {m} came back altered");
                    sent += msg.len() as u64;
                }
                stream.shutdown(std::net::Shutdown::Write)?;
                // The server closes after our EOF: nothing more comes.
                assert_eq!(
                    stream.read(&mut [0u8; 16])?,
                    0,
                    "client {c}: bytes after EOF"
                );
                Ok(sent)
            })
        })
        .collect();
    let mut total = 0;
    for c in clients {
        // A failed client is an error, not a panic: the workers must still be stopped.
        total += c
            .join()
            .map_err(|_| std::io::Error::other("a client failed (see its panic above)"))??;
    }
    Ok(total)
}

/// Every connection accepted and closed (removed before its drop), every byte echoed.
fn check(server: &Echo, sent: u64) {
    // The workers stopped after the clients saw their EOF, so the counts are final.
    let accepted = server.accepted.load(Ordering::Relaxed);
    let closed = server.closed.load(Ordering::Relaxed);
    let echoed = server.echoed.load(Ordering::Relaxed);
    assert_eq!(accepted, CLIENTS as u64, "connections accepted");
    assert_eq!(closed, CLIENTS as u64, "connections closed");
    assert_eq!(server.open(), 0, "connections still open");
    assert_eq!(echoed, sent, "bytes echoed");
    println!(
        "self-test passed: {CLIENTS} clients x {MESSAGES} messages, {sent} bytes echoed, \
         {accepted} connections accepted and closed, output waited for WRITABLE {} times",
        server.waited.load(Ordering::Relaxed)
    );
}

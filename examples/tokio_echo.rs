//! The echo server of `tcp_server.rs` on a tokio runtime: tasks share one
//! [`kevent::AsyncQueue`] and `wait().await` on it, next to tokio's own sockets (the
//! self-test's clients are `tokio::net::TcpStream`s on the same runtime).
//!
//! ```text
//! cargo run --release --features tokio --example tokio_echo -- 127.0.0.1:7879
//! cargo run --release --features tokio --example tokio_echo -- --self-test
//! ```
//!
//! `--self-test` runs [`CLIENTS`] client tasks that each send [`MESSAGES`] messages and
//! check every echoed byte, checks the server's counts, stops the server tasks, and
//! exits 0 only if all of that holds.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use kevent::{AsyncQueue, Queue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "echo_common/echo.rs"]
mod echo;
use echo::{Echo, Next};

const TASKS: usize = 4;
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
        (None, false) => "127.0.0.1:7879".to_string(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let queue = AsyncQueue::new(Queue::builder().capacity(256).build()?)?;
        let server = Echo::bind(&addr, queue.queue())?;
        let addr = server.local_addr()?;
        println!("echo server on {addr}, {TASKS} tasks sharing one AsyncQueue");
        let shared = Arc::new((queue, server));
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| tokio::spawn(serve(shared.clone())))
            .collect();
        let sent = if self_test {
            let sent = run_clients(addr).await;
            Echo::stop(shared.0.queue())?;
            Some(sent?)
        } else {
            None
        };
        for t in tasks {
            t.await.expect("a server task panicked")?;
        }
        if let Some(sent) = sent {
            check(&shared.1, sent);
        }
        Ok(())
    })
}

/// A server task: awaits events on the shared queue, handles its batch, commits it.
async fn serve(shared: Arc<(AsyncQueue, Echo)>) -> std::io::Result<()> {
    let (queue, server) = &*shared;
    loop {
        let batch = queue.wait(16).await?;
        let mut stop = false;
        for event in &batch {
            // Non-blocking calls only: the task never blocks its runtime thread.
            if server.handle(queue.queue(), &event)? == Next::Stop {
                stop = true;
            }
        }
        drop(batch);
        if stop {
            return Ok(());
        }
    }
}

fn message_len(c: usize, m: usize) -> usize {
    if c == 0 && m == MESSAGES - 1 {
        // Written whole before the client reads: the echo outgrows the socket buffers
        // and waits for WRITABLE.
        return BULK;
    }
    (c * 7919 + m * 104_729) % (48 * 1024) + 1
}

/// Client tasks on tokio's own sockets; returns the bytes sent (and got back, checked).
async fn run_clients(addr: std::net::SocketAddr) -> std::io::Result<u64> {
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            tokio::spawn(async move {
                let mut stream = tokio::net::TcpStream::connect(addr).await?;
                let mut sent = 0;
                for m in 0..MESSAGES {
                    let msg: Vec<u8> = (0..message_len(c, m))
                        .map(|i| (i * 31 + c * 7 + m) as u8)
                        .collect();
                    stream.write_all(&msg).await?;
                    let mut back = vec![0u8; msg.len()];
                    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut back))
                        .await
                        .map_err(|_| std::io::Error::other(format!("client {c}: no echo")))??;
                    assert!(back == msg, "client {c}: message {m} came back altered");
                    sent += msg.len() as u64;
                }
                stream.shutdown().await?;
                assert_eq!(
                    stream.read(&mut [0u8; 16]).await?,
                    0,
                    "client {c}: bytes after EOF"
                );
                Ok::<u64, std::io::Error>(sent)
            })
        })
        .collect();
    let mut total = 0;
    for c in clients {
        total += c.await.expect("a client panicked")?;
    }
    Ok(total)
}

fn check(server: &Echo, sent: u64) {
    let accepted = server.accepted.load(Ordering::Relaxed);
    assert_eq!(accepted, CLIENTS as u64, "connections accepted");
    assert_eq!(
        server.closed.load(Ordering::Relaxed),
        CLIENTS as u64,
        "connections closed"
    );
    assert_eq!(server.open(), 0, "connections still open");
    assert_eq!(server.echoed.load(Ordering::Relaxed), sent, "bytes echoed");
    println!(
        "self-test passed: {CLIENTS} clients x {MESSAGES} messages, {sent} bytes echoed, \
         {accepted} connections accepted and closed, output waited for WRITABLE {} times",
        server.waited.load(Ordering::Relaxed)
    );
}

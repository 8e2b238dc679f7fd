//! `tokio`: what a Rust user would write instead — tokio's multi-thread runtime with N
//! worker threads (`#[tokio::main(flavor = "multi_thread", worker_threads = N)]`, built
//! with `runtime::Builder` because N is an argument), a `TcpListener::accept` loop and a
//! task per connection (`tokio::spawn`), answering with the same parser and the same
//! bytes. Work stealing moves tasks off a busy worker; a connection's task runs where
//! the runtime puts it.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::page;
use super::parse::{parse, Parsed, MAX_REQUEST};
use super::stall::Stall;
use super::{listener, Config};

/// Runs the server (for ever, or until accepting fails).
pub fn run(cfg: &Config) -> io::Result<()> {
    let std_listener = listener::bind(cfg.addr, false)?;
    listener::announce(&std_listener)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.workers)
        .enable_all()
        .build()?;
    let stall = cfg.stall;
    runtime.block_on(async move {
        let listener = TcpListener::from_std(std_listener)?;
        if let Some(stall) = stall {
            tokio::spawn(stall_a_worker(stall));
        }
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve(stream));
                }
                Err(e) if listener::is_transient(&e) => {}
                Err(e) => return Err(e),
            }
        }
    })
}

/// One connection: read, answer every complete request, write; until the client
/// closes or asks to.
async fn serve(mut stream: TcpStream) {
    let mut input = Vec::with_capacity(1024);
    let mut output = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        input.extend_from_slice(&chunk[..n]);
        let mut used = 0;
        let mut close = false;
        while !close {
            match parse(&input[used..]) {
                Parsed::Incomplete => break,
                Parsed::Get { len, keep_alive } => {
                    used += len;
                    output.extend_from_slice(page::response(keep_alive));
                    close = !keep_alive;
                }
                Parsed::Bad => {
                    output.extend_from_slice(page::bad_request());
                    close = true;
                }
            }
        }
        input.drain(..used);
        if !output.is_empty() {
            if stream.write_all(&output).await.is_err() {
                return;
            }
            output.clear();
        }
        if close || input.len() >= MAX_REQUEST {
            return;
        }
    }
}

/// The stalled worker of the tail-latency run: a task that blocks the worker thread it
/// runs on for the pause, once a period (what a blocking call in a handler does).
async fn stall_a_worker(stall: Stall) {
    loop {
        tokio::time::sleep(stall.period - stall.pause).await;
        std::thread::sleep(stall.pause);
    }
}

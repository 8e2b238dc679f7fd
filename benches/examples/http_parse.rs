//! The HTTP server's request parser (`kevent_bench::http::parse::parse`) in a tight loop:
//! nanoseconds per request over a few thousand typical `wrk` and `ab` requests, parsed
//! one after another from one buffer as a connection's pipelined input is, the median
//! of several runs.
//!
//! ```text
//! cargo run --release -p kevent-bench --example http_parse
//! ```
//!
//! It measures whatever `parse` is at the commit it is run at: run it at two commits
//! to compare two parsers (the switch to `httparse` was measured so).

use std::hint::black_box;
use std::time::Instant;

use kevent_bench::http::parse::{parse, Parsed};

/// What the benchmark clients send: `wrk` (HTTP/1.1, keep-alive), `ab` (HTTP/1.0, a
/// connection per request), `ab -k`, and a `curl`-like request with a few more headers.
const REQUESTS: [&[u8]; 4] = [
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: 127.0.0.1:8080\r\nUser-Agent: ApacheBench/2.3\r\nAccept: */*\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: 127.0.0.1:8080\r\nUser-Agent: ApacheBench/2.3\r\nAccept: */*\r\n\r\n",
    b"GET /index.html HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\nAccept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\n\r\n",
];

/// Requests in the buffer.
const N: usize = 4000;
/// Passes over the buffer per run.
const PASSES: usize = 50;
/// Runs; the median is reported.
const RUNS: usize = 9;

fn main() {
    let mut buf = Vec::new();
    for i in 0..N {
        buf.extend_from_slice(REQUESTS[i % REQUESTS.len()]);
    }
    let mut per_request = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let start = Instant::now();
        let mut kept = 0usize;
        for _ in 0..PASSES {
            let mut used = 0;
            let input = black_box(&buf[..]);
            while used < input.len() {
                match parse(&input[used..]) {
                    Parsed::Get { len, keep_alive } => {
                        used += len;
                        kept += usize::from(keep_alive);
                    }
                    other => panic!("{other:?} at byte {used}"),
                }
            }
        }
        let ns = start.elapsed().as_nanos() as f64 / (N * PASSES) as f64;
        // wrk, ab -k and curl keep the connection; ab does not.
        assert_eq!(kept, PASSES * N * 3 / 4);
        per_request.push(ns);
    }
    per_request.sort_by(f64::total_cmp);
    let shown: Vec<String> = per_request.iter().map(|x| format!("{x:.1}")).collect();
    println!(
        "http parse: {:.1} ns/request (median of {RUNS} runs of {} requests; runs: {})",
        per_request[RUNS / 2],
        N * PASSES,
        shown.join(" ")
    );
}

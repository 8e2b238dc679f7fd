//! `kevent-httpd`: the HTTP server of the server benchmark (see `kevent_bench::http`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use kevent::Trigger;
use kevent_bench::http::kevent_procs::{self, ChildSpec};
use kevent_bench::http::{self, Backend, Config, Stall};

const USAGE: &str = "\
kevent-httpd: a small HTTP/1.1 server (every GET gets the same 699-byte page) with
interchangeable notification back-ends, for benches/http/run.sh.

usage: kevent-httpd --backend NAME [--workers N] [--port P] [--addr IP]
                    [--trigger level|edge] [--batch N] [--ring N] [--lease MS]
                    [--stall PAUSE_MS/PERIOD_MS]

  --backend   kevent-threads   N threads share one kevent queue (listener + connections)
              kevent-procs     N processes share the listener's queue, each has its own
              epoll-reuseport  a listener (SO_REUSEPORT) and an epoll fd per worker
              epoll-exclusive  one listener in every worker's epoll fd, EPOLLEXCLUSIVE
              tokio            tokio multi-thread runtime, a task per connection
  --workers   worker threads or processes (default 2)
  --port      TCP port (default 8080; 0 picks a free one)
  --addr      address to bind (default 127.0.0.1)
  --trigger   kevent back-ends: connections edge-triggered (default; a worker commits
              its batch before serving it) or level-triggered (commits after)
  --batch     kevent back-ends: events per wait (default 64)
  --ring      kevent back-ends: ring entries (default: the fd limit, to a power of two)
  --lease     kevent back-ends: lease and reap interval in ms (default: the library's)
  --stall     worker 0 stops PAUSE_MS every PERIOD_MS (tail-latency run), e.g. 200/1000

Prints `kevent-httpd: listening on ADDR` when it accepts connections; runs until killed.";

/// The parsed command line: the server's configuration, and the worker-process part of
/// `kevent-procs` if this is one of its workers.
fn parse(args: &[String]) -> Result<(Config, Option<ChildSpec>), String> {
    let mut backend = None;
    let mut cfg = Config {
        backend: Backend::KeventThreads,
        workers: 2,
        addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
        trigger: Trigger::Edge,
        batch: 64,
        ring: 0,
        lease: None,
        stall: None,
    };
    let mut child = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .as_str();
        let number = |v: &str| v.parse::<usize>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--backend" => {
                backend = Some(
                    Backend::from_name(value)
                        .ok_or_else(|| format!("--backend {value}: unknown back-end"))?,
                )
            }
            "--workers" => cfg.workers = number(value)?.max(1),
            "--port" => cfg
                .addr
                .set_port(value.parse().map_err(|e| format!("--port {value}: {e}"))?),
            "--addr" => cfg
                .addr
                .set_ip(value.parse().map_err(|e| format!("--addr {value}: {e}"))?),
            "--trigger" => {
                cfg.trigger = match value {
                    "level" => Trigger::Level,
                    "edge" => Trigger::Edge,
                    _ => return Err(format!("--trigger {value}: level or edge")),
                }
            }
            "--batch" => cfg.batch = number(value)?.max(1),
            "--ring" => cfg.ring = number(value)?,
            "--lease" => cfg.lease = Some(Duration::from_millis(number(value)? as u64)),
            "--stall" => cfg.stall = Some(Stall::parse(value)?),
            "--child" => child = Some(ChildSpec::parse(value)?),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    cfg.backend = backend.ok_or("--backend is required")?;
    Ok((cfg, child))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cfg, child) = match parse(&args) {
        Ok(parsed) => parsed,
        Err(msg) if msg.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("kevent-httpd: {msg}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match &child {
        Some(spec) => kevent_procs::child(&cfg, spec),
        None => http::run(&cfg, &args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kevent-httpd ({}): {e}", cfg.backend.name());
            ExitCode::FAILURE
        }
    }
}

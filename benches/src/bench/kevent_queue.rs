//! Our queue as a benchmark backend: `kevent-lt` (level-triggered, the kevent default)
//! and `kevent-et` (`KEVENT_REQ_ET`).
//!
//! Each run makes a fresh queue (ring of `next_pow2(2 × streams)` slots, at least 1024)
//! and registers every stream's read end (`KEVENT_PIPE` or `KEVENT_SOCKET`, `RECV`, the
//! stream index as the cookie). Consumers — threads, or forked processes that attach to
//! the inherited queue as their own consumers — claim up to `batch` entries, do the
//! harness's one read per entry, and commit the batch. The queue is created paused and
//! started in [`BackendRun::start`], because process mode forks after `setup`.
//!
//! The producer thread does the `epoll_wait` work the epoll rivals do in their consumers,
//! so its CPU time and context switches are added to the consumers' (a
//! [`HelperReport`]): moving work into another thread does not make it free.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use kevent_syscalls::{abi::*, Instance, DEFAULT_REAP_INTERVAL, DEFAULT_SPIN};

use super::backend::{Backend, BackendRun, ConsumerLoop, HelperReport, RunSpec};
use super::consumer::ConsumerCtx;
use super::metrics::Usage;
use super::streams::StreamKind;

/// `kevent-lt` or `kevent-et`.
#[derive(Debug, Clone, Copy)]
pub struct KeventBackend {
    name: &'static str,
    edge: bool,
}

/// The kevent backends, in report order.
pub fn backends() -> Vec<Box<dyn Backend>> {
    vec![
        Box::new(KeventBackend {
            name: "kevent-lt",
            edge: false,
        }),
        Box::new(KeventBackend {
            name: "kevent-et",
            edge: true,
        }),
    ]
}

/// How long a consumer spins before sleeping (`KEVENT_BENCH_SPIN_NS` overrides the
/// library default).
pub(super) fn spin() -> Duration {
    std::env::var("KEVENT_BENCH_SPIN_NS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_nanos)
        .unwrap_or(DEFAULT_SPIN)
}

/// A fresh, paused queue (start it with [`Instance::start`]) watching every fd of `fds` for
/// `RECV` (`KEVENT_PIPE` or `KEVENT_SOCKET` by `kind`; `KEVENT_REQ_ET` if `edge`;
/// `KEVENT_REQ_ALWAYS_QUEUE`), with the fd's index as the cookie. The ring has
/// `next_pow2(2 × fds)` slots, at least 1024; consumers spin [`spin`] before sleeping.
/// Shared by the throughput backends and the ping-pong cell ([`super::pingpong`]).
pub(super) fn paused_queue_for(
    kind: StreamKind,
    fds: &[OwnedFd],
    edge: bool,
) -> io::Result<Arc<Instance>> {
    let capacity = (2 * fds.len()).next_power_of_two().max(1024) as u32;
    let queue = Instance::create_paused(capacity, 0, DEFAULT_REAP_INTERVAL)?;
    queue.set_spin(spin());
    let type_ = match kind {
        StreamKind::Pipe => KEVENT_PIPE,
        _ => KEVENT_SOCKET,
    };
    let flags = if edge { KEVENT_REQ_ET } else { 0 };
    let mut events: Vec<Ukevent> = fds
        .iter()
        .enumerate()
        .map(|(i, fd)| Ukevent {
            id: fd.as_raw_fd() as u64,
            type_,
            event: KEVENT_SOCKET_RECV,
            req_flags: flags | KEVENT_REQ_ALWAYS_QUEUE,
            user: i as u64,
            ..Default::default()
        })
        .collect();
    for chunk in events.chunks_mut(KEVENT_MAX_EVENTS) {
        let n = queue.ctl(KEVENT_CTL_ADD, chunk)?;
        if let Some(bad) = chunk[..n]
            .iter()
            .find(|e| e.ret_flags & KEVENT_RET_BROKEN != 0)
        {
            return Err(io::Error::from_raw_os_error(bad.ret_data[1] as i32));
        }
    }
    Ok(queue)
}

impl Backend for KeventBackend {
    fn name(&self) -> &str {
        self.name
    }

    fn describe(&self) -> String {
        format!(
            "kevent queue, {} kevents, producer thread over one epoll fd (EPOLLET), consumers claim/commit batches and harvest epoll themselves when the ring is empty (owning process only); spin {} µs before sleeping; producer CPU counted",
            if self.edge { "KEVENT_REQ_ET" } else { "level-triggered" },
            spin().as_micros()
        )
    }

    fn setup<'a>(&'a self, spec: &RunSpec<'a>) -> io::Result<Box<dyn BackendRun + 'a>> {
        let queue = paused_queue_for(spec.kind, spec.read_fds, self.edge)?;
        Ok(Box::new(KeventRun {
            queue,
            start_usage: std::sync::Mutex::new(None),
        }))
    }
}

struct KeventRun {
    queue: Arc<Instance>,
    start_usage: std::sync::Mutex<Option<Usage>>,
}

/// CPU time and context switches of one thread of this process, from `/proc`
/// (`schedstat` has nanosecond run time; `status` the switch counts).
fn thread_usage(tid: i32) -> Option<Usage> {
    let sched = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    let cpu_ns = sched.split_whitespace().next()?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    Some(Usage {
        cpu_ns,
        vol_csw: field("voluntary_ctxt_switches:"),
        invol_csw: field("nonvoluntary_ctxt_switches:"),
    })
}

impl BackendRun for KeventRun {
    fn consumer(&self, _index: usize) -> io::Result<Box<dyn ConsumerLoop + '_>> {
        // In a forked consumer this attaches the child as a consumer of its own.
        let queue = self.queue.for_this_process()?;
        queue.set_spin(spin());
        Ok(Box::new(KeventConsumer { queue }))
    }

    fn start(&self) -> io::Result<()> {
        self.queue.start()?;
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while self.queue.producer_tid().is_none() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        *self.start_usage.lock().unwrap_or_else(|e| e.into_inner()) =
            self.queue.producer_tid().and_then(thread_usage);
        Ok(())
    }

    fn stopping(&self) {
        // Waiters return within their own deadline; waking them now ends the run sooner.
        self.queue.ring().wake_all();
    }

    fn teardown(self: Box<Self>) -> io::Result<HelperReport> {
        let end = self.queue.producer_tid().and_then(thread_usage);
        let start = *self.start_usage.lock().unwrap_or_else(|e| e.into_inner());
        self.queue.close();
        let usage = match (start, end) {
            (Some(s), Some(e)) => Usage {
                cpu_ns: e.cpu_ns.saturating_sub(s.cpu_ns),
                vol_csw: e.vol_csw.saturating_sub(s.vol_csw),
                invol_csw: e.invol_csw.saturating_sub(s.invol_csw),
            },
            _ => Usage::default(),
        };
        Ok(HelperReport { usage })
    }
}

struct KeventConsumer {
    queue: Arc<Instance>,
}

impl ConsumerLoop for KeventConsumer {
    fn run(&mut self, ctx: &mut ConsumerCtx<'_>) -> io::Result<()> {
        let ring = self.queue.ring().clone();
        let me = self.queue.consumer();
        let batch = ctx.batch() as u64;
        while !ctx.should_stop() {
            ctx.count_wait();
            let spec = kevent_ring::WaitSpec {
                old_uidx: None,
                deadline: Some(kevent_ring::Deadline::Monotonic(
                    kevent_ring::monotonic_now() + ctx.wait_timeout().as_nanos() as u64,
                )),
                spin: spin(),
                return_on_wake: false,
                kicks: 0, // next_batch reads the count itself
                sleeper: None,
            };
            let (claim, outcome) = self.queue.next_batch(batch, &spec)?;
            if matches!(
                outcome,
                kevent_ring::WaitOutcome::Closed | kevent_ring::WaitOutcome::Broken
            ) {
                return Err(io::Error::other(
                    "kevent queue closed or broken during the run",
                ));
            }
            for pos in claim.start..claim.end {
                if let Some(ev) = ring.take(me, pos) {
                    ctx.read_event(ev.user as usize);
                }
            }
            if !claim.is_empty() {
                self.queue.commit_range(claim.start..claim.end);
            }
        }
        Ok(())
    }
}

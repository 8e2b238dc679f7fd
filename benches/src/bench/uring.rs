//! io_uring rival: one multishot `IORING_OP_POLL_ADD` (`POLLIN`) per stream.
//!
//! Two set-ups are compared as separate backends because they behave very differently on
//! this workload:
//!
//! * `uring`: default flags (plus `IORING_SETUP_CQSIZE`). Poll wake-ups are completed
//!   through task work that interrupts the consumer, and a full CQ ends multishot polls;
//! * `uring-defer`: `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN` (plus
//!   `CQSIZE`): completions are produced only when the consumer enters the kernel to wait.
//!
//! Each consumer owns one ring, created in the consumer's thread (as `SINGLE_ISSUER`
//! requires) or process, watching its share of the streams (`i % consumers`): a ring per
//! thread with its own connections is how io_uring servers are built. With several
//! consumers compare it with `epoll-et-shard`, the same partitioning with epoll.
//!
//! CQ overflow is handled, and reported, honestly: the CQ is sized at 4 entries per stream
//! (4096 ≤ CQ ≤ 65536); a multishot poll that could not post a CQE is ended by the kernel
//! (its last CQE lacks `IORING_CQE_F_MORE`) and is re-armed, counted in "rearms"; CQEs the
//! kernel dropped (`cq.overflow()`) are counted as lost events. At most `batch` CQEs are
//! taken per `io_uring_enter`, the same batch as epoll's `maxevents`.

use std::io;
use std::sync::OnceLock;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::backend::{Backend, BackendRun, ConsumerLoop, RunSpec};
use super::consumer::ConsumerCtx;
use super::workload::Cell;

/// An io_uring set-up under test.
pub struct UringBackend {
    name: &'static str,
    defer: bool,
    /// Result of building a small ring with these flags, once, on this machine.
    probe: OnceLock<Result<String, String>>,
}

/// The io_uring backends, in report order.
pub fn backends() -> Vec<Box<dyn Backend>> {
    vec![
        Box::new(UringBackend {
            name: "uring",
            defer: false,
            probe: OnceLock::new(),
        }),
        Box::new(UringBackend {
            name: "uring-defer",
            defer: true,
            probe: OnceLock::new(),
        }),
    ]
}

/// CQ size for a ring watching `streams` streams.
fn cq_entries(streams: usize) -> u32 {
    (4 * streams.max(1)).next_power_of_two().clamp(4096, 65536) as u32
}

/// SQ size for a ring watching `streams` streams (arming is submitted in chunks).
fn sq_entries(streams: usize) -> u32 {
    streams.max(1).next_power_of_two().clamp(256, 4096) as u32
}

impl UringBackend {
    fn flag_names(&self) -> &'static str {
        if self.defer {
            "IORING_SETUP_CQSIZE|IORING_SETUP_SINGLE_ISSUER|IORING_SETUP_DEFER_TASKRUN"
        } else {
            "IORING_SETUP_CQSIZE (default flags otherwise)"
        }
    }

    fn build(&self, streams: usize) -> io::Result<IoUring> {
        let mut b = IoUring::builder();
        b.setup_cqsize(cq_entries(streams));
        if self.defer {
            b.setup_single_issuer().setup_defer_taskrun();
        }
        b.build(sq_entries(streams))
    }

    fn probe(&self) -> &Result<String, String> {
        self.probe.get_or_init(|| match self.build(1) {
            Ok(ring) => {
                let p = ring.params();
                Ok(format!(
                    "nodrop={}, ext_arg={}",
                    p.is_feature_nodrop(),
                    p.is_feature_ext_arg()
                ))
            }
            Err(e) => Err(format!("io_uring_setup({}) failed: {e}", self.flag_names())),
        })
    }
}

impl Backend for UringBackend {
    fn name(&self) -> &str {
        self.name
    }

    fn describe(&self) -> String {
        let features = match self.probe() {
            Ok(f) => f.clone(),
            Err(e) => format!("unavailable: {e}"),
        };
        format!(
            "multishot IORING_OP_POLL_ADD(POLLIN) per stream, ring per consumer, streams \
             partitioned i % consumers; setup {}; CQ = 4/stream (4096..65536); {features}",
            self.flag_names()
        )
    }

    fn check(&self, _cell: &Cell) -> Result<(), String> {
        match self.probe() {
            Ok(f) if f.contains("ext_arg=false") => {
                Err("kernel lacks IORING_FEAT_EXT_ARG (timed waits)".into())
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e.clone()),
        }
    }

    fn setup<'a>(&'a self, spec: &RunSpec<'a>) -> io::Result<Box<dyn BackendRun + 'a>> {
        Ok(Box::new(UringRun {
            backend: self,
            spec: *spec,
        }))
    }
}

/// One run: nothing is shared, every consumer builds its own ring.
struct UringRun<'a> {
    backend: &'a UringBackend,
    spec: RunSpec<'a>,
}

fn poll_entry(ctx_fd: i32, stream: usize) -> squeue::Entry {
    opcode::PollAdd::new(types::Fd(ctx_fd), libc::POLLIN as u32)
        .multi(true)
        .build()
        .user_data(stream as u64)
}

/// Queues a poll for each of `streams`, submitting whenever the SQ fills. Returns how many
/// were queued: fewer than asked when the kernel refuses submissions until the CQ overflow
/// backlog is reaped (`EBUSY`).
fn arm(ring: &mut IoUring, fds: &[i32], streams: &[usize]) -> io::Result<usize> {
    for (done, &i) in streams.iter().enumerate() {
        let e = poll_entry(fds[i], i);
        loop {
            // SAFETY: a PollAdd entry references no user memory (only an fd that outlives
            // the ring: the streams are closed after the consumers are joined).
            let pushed = unsafe { ring.submission().push(&e) };
            if pushed.is_ok() {
                break;
            }
            match ring.submit() {
                Ok(_) => {}
                // CQ overflow backlog: completions must be reaped first; the caller does.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return Ok(done),
                Err(e) => return Err(e),
            }
        }
    }
    Ok(streams.len())
}

impl BackendRun for UringRun<'_> {
    fn consumer(&self, index: usize) -> io::Result<Box<dyn ConsumerLoop + '_>> {
        use std::os::fd::AsRawFd;
        let fds: Vec<i32> = self.spec.read_fds.iter().map(|f| f.as_raw_fd()).collect();
        let owned: Vec<usize> = (index..fds.len()).step_by(self.spec.consumers).collect();
        let mut ring = self.backend.build(owned.len())?;
        if arm(&mut ring, &fds, &owned)? < owned.len() {
            return Err(io::Error::other("could not arm every poll"));
        }
        ring.submit()?;
        Ok(Box::new(UringLoop {
            ring,
            fds,
            rearm: Vec::new(),
            overflow_seen: 0,
        }))
    }
}

/// One consumer's ring.
struct UringLoop {
    ring: IoUring,
    fds: Vec<i32>,
    rearm: Vec<usize>,
    overflow_seen: u32,
}

impl ConsumerLoop for UringLoop {
    fn run(&mut self, ctx: &mut ConsumerCtx<'_>) -> io::Result<()> {
        let t = ctx.wait_timeout();
        let ts = types::Timespec::new()
            .sec(t.as_secs())
            .nsec(t.subsec_nanos());
        let args = types::SubmitArgs::new().timespec(&ts);
        let batch = ctx.batch();
        let Self {
            ring,
            fds,
            rearm,
            overflow_seen,
        } = self;
        while !ctx.should_stop() {
            if !rearm.is_empty() {
                // Polls that could not be queued stay in `rearm` for the next round.
                let todo = std::mem::take(rearm);
                let done = arm(ring, fds, &todo)?;
                rearm.extend_from_slice(&todo[done..]);
            }
            match ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
                    ) => {}
                Err(e) => return Err(e),
            }
            ctx.count_wait();
            let mut cq = ring.completion();
            for cqe in cq.by_ref().take(batch) {
                let i = cqe.user_data() as usize;
                if cqe.result() >= 0 {
                    ctx.read_event(i);
                }
                if !cqueue::more(cqe.flags()) {
                    rearm.push(i);
                    ctx.count_rearm();
                }
            }
            let dropped = cq.overflow();
            if dropped != *overflow_seen {
                ctx.count_lost(dropped.wrapping_sub(*overflow_seen) as u64);
                *overflow_seen = dropped;
            }
        }
        Ok(())
    }
}

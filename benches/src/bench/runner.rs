//! One run: one backend, one cell, fresh streams, a measured window.

use std::thread;
use std::time::{Duration, Instant};

use super::backend::{Backend, RunSpec};
use super::consumer::{ConsumerMode, RunShared, PHASE_GO, PHASE_STOP};
use super::metrics::{RunResult, UsageOf, WriterReport};
use super::spawn::{consumer_body, fork_consumers, reap, ConsumerSetup};
use super::streams::Streams;
use super::workload::{run_writer, Cell, WriterPlan};

/// Longest single blocking wait of a consumer: how late the stop signal may be seen.
pub const WAIT_TIMEOUT: Duration = Duration::from_millis(50);
/// Longest time consumers may take to set up (9000 streams registered, fork, ...).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest time anybody waits for the window to open.
const GATE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest time consumer processes get to exit after the stop signal.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of a run that are the same for every backend.
#[derive(Debug, Clone, Copy)]
pub struct RunParams {
    /// Measured seconds.
    pub seconds: f64,
    /// Notifications per wait.
    pub batch: usize,
    /// Writer plan (seed, pacing).
    pub writer: WriterPlan,
}

/// Raises the stop signal when dropped, so that no early return leaves consumers waiting.
struct StopOnDrop<'a>(&'a RunShared);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.set_phase(PHASE_STOP);
    }
}

/// Runs `backend` once in `cell`. `Err` says what failed; the streams and every consumer
/// are gone either way.
pub fn run_once(backend: &dyn Backend, cell: &Cell, p: &RunParams) -> Result<RunResult, String> {
    let streams = Streams::create(cell.kind, cell.streams)
        .map_err(|e| format!("creating {} {} streams: {e}", cell.streams, cell.kind))?;
    let shared =
        RunShared::new(cell.consumers, cell.streams).map_err(|e| format!("shared memory: {e}"))?;
    let spec = RunSpec {
        kind: cell.kind,
        read_fds: &streams.read,
        consumers: cell.consumers,
        mode: cell.mode,
        batch: p.batch,
        wait_timeout: WAIT_TIMEOUT,
    };
    let run = backend.setup(&spec).map_err(|e| format!("setup: {e}"))?;
    let setup = ConsumerSetup {
        run: &*run,
        shared: &shared,
        fds: &streams.read,
        consumers: cell.consumers,
        batch: p.batch,
        wait_timeout: WAIT_TIMEOUT,
        paced: p.writer.paced.is_some(),
        gate_timeout: GATE_TIMEOUT,
    };
    let driven = match cell.mode {
        ConsumerMode::Threads => thread::scope(|s| {
            let setup = &setup;
            let handles: Vec<_> = (0..cell.consumers)
                .map(|i| s.spawn(move || consumer_body(setup, i, UsageOf::Thread)))
                .collect();
            let r = drive(setup, &streams, p);
            for h in handles {
                // `consumer_body` catches panics, so join cannot fail in practice.
                let _ = h.join();
            }
            r
        }),
        ConsumerMode::Processes => {
            let pids = fork_consumers(&setup).map_err(|e| format!("fork: {e}"))?;
            let r = drive(&setup, &streams, p);
            let reaped = reap(&pids, REAP_TIMEOUT);
            r.and_then(|w| reaped.map(|()| w))
        }
    };
    let helper = run.teardown().map_err(|e| format!("teardown: {e}"));
    let (writer, seconds) = driven?;
    let helper = helper?;
    let (counters, usage, latency) = shared.collect()?;
    drop(streams);
    Ok(RunResult {
        seconds,
        writer,
        counters,
        usage: usage + helper.usage,
        helper: helper.usage,
        latency,
    })
}

/// Waits for the consumers, starts the backend and the writer, opens the window for
/// `p.seconds`, closes it. Returns the writer's report and the window's length.
fn drive(
    setup: &ConsumerSetup<'_>,
    streams: &Streams,
    p: &RunParams,
) -> Result<(WriterReport, f64), String> {
    let _stop = StopOnDrop(setup.shared);
    setup.shared.wait_ready(READY_TIMEOUT)?;
    setup.run.start().map_err(|e| format!("start: {e}"))?;
    thread::scope(|s| {
        let writer = s.spawn(|| {
            run_writer(
                &streams.write,
                setup.shared.phase(),
                &setup.shared.stamps,
                &p.writer,
                GATE_TIMEOUT,
            )
        });
        let t0 = Instant::now();
        setup.shared.set_phase(PHASE_GO);
        thread::sleep(Duration::from_secs_f64(p.seconds));
        setup.shared.set_phase(PHASE_STOP);
        let seconds = t0.elapsed().as_secs_f64();
        setup.run.stopping();
        let w = writer
            .join()
            .map_err(|_| "writer thread panicked".to_string())?;
        Ok((w, seconds))
    })
}

#[cfg(test)]
mod tests {
    use super::{run_once, RunParams};
    use crate::bench::backends;
    use crate::bench::consumer::ConsumerMode;
    use crate::bench::streams::StreamKind;
    use crate::bench::workload::{Cell, WriterPlan};

    /// One short run of every backend, as threads and as forked processes: each must
    /// consume events, and a process's counts must come back through shared memory.
    #[test]
    fn every_backend_consumes_events_as_threads_and_as_processes() {
        let p = RunParams {
            seconds: 0.1,
            batch: 64,
            writer: WriterPlan {
                seed: 7,
                paced: None,
            },
        };
        for mode in [ConsumerMode::Threads, ConsumerMode::Processes] {
            let cell = Cell {
                kind: StreamKind::Pipe,
                streams: 32,
                consumers: 2,
                mode,
            };
            for b in backends() {
                if let Err(why) = b.check(&cell) {
                    eprintln!("{} skipped: {why}", b.name());
                    continue;
                }
                let r = run_once(&*b, &cell, &p)
                    .unwrap_or_else(|e| panic!("{} {mode:?}: {e}", b.name()));
                assert!(r.counters.events > 0, "{} {mode:?}: no events", b.name());
                assert!(r.writer.writes >= r.counters.events, "{}", b.name());
                assert!(r.usage.cpu_ns > 0, "{} {mode:?}: no CPU time", b.name());
                assert_eq!(r.counters.read_errors, 0, "{}", b.name());
            }
        }
    }

    #[test]
    fn paced_runs_measure_latency() {
        let p = RunParams {
            seconds: 0.1,
            batch: 64,
            writer: WriterPlan {
                seed: 7,
                paced: Some(5000.0),
            },
        };
        let cell = Cell {
            kind: StreamKind::Unix,
            streams: 16,
            consumers: 1,
            mode: ConsumerMode::Threads,
        };
        let all = backends();
        let et = all.iter().find(|b| b.name() == "epoll-et").unwrap();
        let r = run_once(&**et, &cell, &p).unwrap();
        let d = r.derived();
        assert!(r.latency.count() > 0);
        assert!(
            d.writes_per_s < 10_000.0,
            "pacing ignored: {}",
            d.writes_per_s
        );
        let (p50, p99) = (d.p50_ns.unwrap(), d.p99_ns.unwrap());
        assert!(p50 > 0.0 && p50 <= p99);
    }
}

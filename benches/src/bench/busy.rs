//! The no-notification ceiling, `epoll_bench -f`: read every stream round-robin,
//! nonblocking, never sleeping. With several consumers each sweeps its own share of the
//! streams (`i % consumers`), so no stream is read by two consumers.

use std::io;

use super::backend::{Backend, BackendRun, ConsumerLoop, RunSpec};
use super::consumer::ConsumerCtx;

/// The busy sweep backend (`busy`).
#[derive(Debug, Clone, Copy)]
pub struct BusySweep;

impl Backend for BusySweep {
    fn name(&self) -> &str {
        "busy"
    }

    fn describe(&self) -> String {
        "no notification: nonblocking read of every stream round-robin (epoll_bench -f), \
         streams partitioned i % consumers; the practical ceiling with one consumer (with \
         more spinning consumers than idle cores it starves the writer)"
            .into()
    }

    fn setup<'a>(&'a self, _spec: &RunSpec<'a>) -> io::Result<Box<dyn BackendRun + 'a>> {
        Ok(Box::new(BusyRun))
    }
}

/// A busy sweep run: no state.
struct BusyRun;

impl BackendRun for BusyRun {
    fn consumer(&self, _index: usize) -> io::Result<Box<dyn ConsumerLoop + '_>> {
        Ok(Box::new(BusyLoop))
    }
}

/// One sweeping consumer.
struct BusyLoop;

impl ConsumerLoop for BusyLoop {
    fn run(&mut self, ctx: &mut ConsumerCtx<'_>) -> io::Result<()> {
        let own: Vec<usize> = ctx.owned_streams().collect();
        while !ctx.should_stop() {
            // One sweep counts as one "wait": it is the unit of work between two looks at
            // every stream.
            ctx.count_wait();
            for &i in &own {
                ctx.read_event(i);
            }
        }
        Ok(())
    }
}

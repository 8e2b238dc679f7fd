//! epoll rivals: level-triggered, `EPOLLET`, `EPOLLONESHOT` with re-arm, and the
//! multi-consumer set-ups people use.
//!
//! | name | epoll fds | interest |
//! |---|---|---|
//! | `epoll-lt` | one, shared by all consumers | `EPOLLIN` |
//! | `epoll-et` | one, shared | `EPOLLIN \| EPOLLET` (the original benchmark's set-up) |
//! | `epoll-oneshot` | one, shared | `EPOLLIN \| EPOLLONESHOT`, re-armed by `EPOLL_CTL_MOD` after the read |
//! | `epoll-excl` | one per consumer, each with every stream | `EPOLLIN \| EPOLLEXCLUSIVE` (level-triggered: `EPOLLEXCLUSIVE` is refused with `EPOLLONESHOT`) |
//! | `epoll-et-shard` | one per consumer, streams partitioned `i % consumers` | `EPOLLIN \| EPOLLET` |
//!
//! With one consumer the first three are the plain single-threaded loops; the last two only
//! differ from them with several consumers, so they are skipped for one.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::buffer::spare_capacity;
use rustix::event::epoll::{self, CreateFlags, Event, EventData, EventFlags};
use rustix::io::Errno;

use super::backend::{Backend, BackendRun, ConsumerLoop, RunSpec};
use super::consumer::ConsumerCtx;
use super::workload::Cell;

/// How notification is triggered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Level-triggered (the default).
    Level,
    /// `EPOLLET`.
    Edge,
    /// `EPOLLONESHOT`, re-armed with `EPOLL_CTL_MOD` after each read.
    OneShot,
}

/// How consumers share epoll instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// One epoll fd for everybody.
    Shared,
    /// One epoll fd per consumer, each watching every stream with `EPOLLEXCLUSIVE`.
    Exclusive,
    /// One epoll fd per consumer, each watching its own share of the streams.
    Sharded,
}

/// An epoll configuration under test.
#[derive(Debug, Clone, Copy)]
pub struct EpollBackend {
    name: &'static str,
    trigger: Trigger,
    sharing: Sharing,
}

/// The epoll backends, in report order.
pub fn backends() -> Vec<Box<dyn Backend>> {
    let b = |name, trigger, sharing| -> Box<dyn Backend> {
        Box::new(EpollBackend {
            name,
            trigger,
            sharing,
        })
    };
    vec![
        b("epoll-lt", Trigger::Level, Sharing::Shared),
        b("epoll-et", Trigger::Edge, Sharing::Shared),
        b("epoll-oneshot", Trigger::OneShot, Sharing::Shared),
        b("epoll-excl", Trigger::Level, Sharing::Exclusive),
        b("epoll-et-shard", Trigger::Edge, Sharing::Sharded),
    ]
}

impl EpollBackend {
    fn interest(&self) -> EventFlags {
        let mut f = EventFlags::IN;
        match self.trigger {
            Trigger::Level => {}
            Trigger::Edge => f |= EventFlags::ET,
            Trigger::OneShot => f |= EventFlags::ONESHOT,
        }
        if self.sharing == Sharing::Exclusive {
            f |= EventFlags::EXCLUSIVE;
        }
        f
    }

    fn flag_names(&self) -> String {
        let mut s = String::from("EPOLLIN");
        match self.trigger {
            Trigger::Level => {}
            Trigger::Edge => s.push_str("|EPOLLET"),
            Trigger::OneShot => s.push_str("|EPOLLONESHOT"),
        }
        if self.sharing == Sharing::Exclusive {
            s.push_str("|EPOLLEXCLUSIVE");
        }
        s
    }
}

/// Creates an epoll fd watching `streams` with `interest`; the event data is the stream index.
pub(super) fn epoll_with(
    fds: &[OwnedFd],
    streams: impl Iterator<Item = usize>,
    interest: EventFlags,
) -> io::Result<OwnedFd> {
    let ep = epoll::create(CreateFlags::CLOEXEC)?;
    for i in streams {
        epoll::add(&ep, &fds[i], EventData::new_u64(i as u64), interest)?;
    }
    Ok(ep)
}

impl Backend for EpollBackend {
    fn name(&self) -> &str {
        self.name
    }

    fn describe(&self) -> String {
        let sharing = match self.sharing {
            Sharing::Shared => "one epoll fd shared by all consumers",
            Sharing::Exclusive => "one epoll fd per consumer, every stream in each",
            Sharing::Sharded => "one epoll fd per consumer, streams partitioned i % consumers",
        };
        let rearm = if self.trigger == Trigger::OneShot {
            ", EPOLL_CTL_MOD re-arm after each read"
        } else {
            ""
        };
        format!("{}; {sharing}{rearm}", self.flag_names())
    }

    fn check(&self, cell: &Cell) -> Result<(), String> {
        if self.sharing != Sharing::Shared && cell.consumers < 2 {
            return Err("same as the shared set-up with one consumer".into());
        }
        Ok(())
    }

    fn setup<'a>(&'a self, spec: &RunSpec<'a>) -> io::Result<Box<dyn BackendRun + 'a>> {
        let shared = match self.sharing {
            Sharing::Shared => Some(epoll_with(
                spec.read_fds,
                0..spec.read_fds.len(),
                self.interest(),
            )?),
            Sharing::Exclusive | Sharing::Sharded => None,
        };
        Ok(Box::new(EpollRun {
            backend: self,
            spec: *spec,
            shared,
        }))
    }
}

/// One run of an [`EpollBackend`].
struct EpollRun<'a> {
    backend: &'a EpollBackend,
    spec: RunSpec<'a>,
    /// The shared epoll fd (`Sharing::Shared`), inherited by forked consumers.
    shared: Option<OwnedFd>,
}

impl BackendRun for EpollRun<'_> {
    fn consumer(&self, index: usize) -> io::Result<Box<dyn ConsumerLoop + '_>> {
        let fds = self.spec.read_fds;
        let n = fds.len();
        let c = self.spec.consumers;
        let own = match self.backend.sharing {
            Sharing::Shared => None,
            Sharing::Exclusive => Some(epoll_with(fds, 0..n, self.backend.interest())?),
            Sharing::Sharded => Some(epoll_with(
                fds,
                (index..n).step_by(c),
                self.backend.interest(),
            )?),
        };
        Ok(Box::new(EpollLoop {
            run: self,
            own,
            events: Vec::with_capacity(self.spec.batch),
        }))
    }
}

/// One consumer of an [`EpollRun`].
struct EpollLoop<'r> {
    run: &'r EpollRun<'r>,
    own: Option<OwnedFd>,
    events: Vec<Event>,
}

impl ConsumerLoop for EpollLoop<'_> {
    fn run(&mut self, ctx: &mut ConsumerCtx<'_>) -> io::Result<()> {
        let ep = match (&self.own, &self.run.shared) {
            (Some(fd), _) | (None, Some(fd)) => fd.as_fd(),
            (None, None) => return Err(io::Error::other("epoll fd missing")),
        };
        let timeout = rustix::event::Timespec::try_from(ctx.wait_timeout())
            .map_err(|_| io::Error::other("bad wait timeout"))?;
        let oneshot = self.run.backend.trigger == Trigger::OneShot;
        let interest = self.run.backend.interest();
        while !ctx.should_stop() {
            self.events.clear();
            match epoll::wait(ep, spare_capacity(&mut self.events), Some(&timeout)) {
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
            ctx.count_wait();
            for ev in self.events.iter() {
                let i = ev.data.u64() as usize;
                ctx.read_event(i);
                if oneshot {
                    epoll::modify(ep, ctx.fd(i), EventData::new_u64(i as u64), interest)?;
                }
            }
        }
        Ok(())
    }
}

//! `kevent-procs`: N pre-forked worker processes. An fd belongs to a process, so a
//! connection accepted in one process can only be served there; what the processes can
//! share is the *listener*. Hence:
//!
//! * the parent binds the listening socket, makes the shared queue, registers the
//!   listener in it (`ACCEPT`, level-triggered), serves the queue on a Unix socket
//!   ([`Queue::listen`]) and starts the workers — this same program, `exec`ed, never a
//!   bare `fork` of a process that has threads — which inherit the listening socket
//!   under the same fd number. Then it only watches them;
//! * each worker [`connect`](Queue::connect)s to the shared queue and makes a queue of
//!   its own for its connections. Its accepting thread sleeps on the shared queue: a
//!   connection wakes one sleeper in one process (wake-one across processes: no
//!   thundering herd), which accepts and registers the connection in its own queue;
//!   its serving thread serves that queue, as a `kevent-threads` worker does.
//!
//! The accepting thread sleeps in a wait rather than polling both queues from one
//! thread, so a new connection is taken at once; the cost is that a busy process still
//! accepts (new connections are spread by who sleeps, not by who is idle), as with
//! `EPOLLEXCLUSIVE`. Workers die with the parent (`PR_SET_PDEATHSIG`).

use std::env;
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::thread;
use std::time::Duration;

use kevent::{Interest, Queue, Source, Trigger};
use rustix::io::{fcntl_setfd, FdFlags};
use rustix::process::{getppid, set_parent_process_death_signal, Pid, Signal};

use super::kevent_worker::{self, accept_into, LISTENER};
use super::stall::StallClock;
use super::table::ConnTable;
use super::{listener, Config};

/// What the parent tells a worker process (the hidden `--child` argument):
/// `FD:INDEX:PARENT_PID:SOCKET_PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSpec {
    /// The inherited listening socket's fd number.
    pub fd: RawFd,
    /// Which worker this is (worker 0 follows `--stall`).
    pub index: usize,
    /// The parent's pid, to notice a parent that died before we asked to die with it.
    pub parent: i32,
    /// The shared queue's socket.
    pub socket: PathBuf,
}

impl ChildSpec {
    /// Parses the `--child` argument.
    pub fn parse(s: &str) -> Result<ChildSpec, String> {
        let bad = || format!("--child {s}: expected FD:INDEX:PARENT_PID:SOCKET_PATH");
        let mut parts = s.splitn(4, ':');
        let mut num = || {
            parts
                .next()
                .and_then(|p| p.parse::<i64>().ok())
                .ok_or_else(bad)
        };
        let (fd, index, parent) = (num()?, num()?, num()?);
        let socket = parts.next().ok_or_else(bad)?.into();
        Ok(ChildSpec {
            fd: fd as RawFd,
            index: index as usize,
            parent: parent as i32,
            socket,
        })
    }

    fn to_arg(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.fd,
            self.index,
            self.parent,
            self.socket.display()
        )
    }
}

/// The parent: runs until a worker process exits (then stops the others and fails).
pub fn run(cfg: &Config, args: &[String]) -> io::Result<()> {
    let listener = listener::bind(cfg.addr, false)?;
    let queue = Queue::builder().capacity(64).build()?;
    queue.add(
        &Source::socket(&listener, Interest::ACCEPT),
        LISTENER,
        Trigger::Level,
    )?;
    let socket = env::temp_dir().join(format!("kevent-httpd-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&socket);
    queue.listen(&socket)?;
    // The workers inherit the listening socket under the same number.
    fcntl_setfd(&listener, FdFlags::empty())?;
    let exe = env::current_exe()?;
    let mut children: Vec<Child> = Vec::new();
    for index in 0..cfg.workers {
        let spec = ChildSpec {
            fd: listener.as_raw_fd(),
            index,
            parent: std::process::id() as i32,
            socket: socket.clone(),
        };
        let child = Command::new(&exe)
            .args(args)
            .arg("--child")
            .arg(spec.to_arg())
            .spawn();
        match child {
            Ok(c) => children.push(c),
            Err(e) => {
                stop(&mut children);
                return Err(e);
            }
        }
    }
    listener::announce(&listener)?;
    loop {
        for (i, c) in children.iter_mut().enumerate() {
            if let Some(status) = c.try_wait()? {
                let err = io::Error::other(format!("worker process {i} exited: {status}"));
                stop(&mut children);
                return Err(err);
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn stop(children: &mut [Child]) {
    for c in children.iter_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A worker process: accepts from the shared queue into its own, and serves its own.
pub fn child(cfg: &Config, spec: &ChildSpec) -> io::Result<()> {
    set_parent_process_death_signal(Some(Signal::KILL))?;
    if getppid() != Pid::from_raw(spec.parent) {
        return Err(io::Error::other(
            "the parent died before the worker started",
        ));
    }
    // SAFETY: the parent passes the number of its listening socket, which it made
    // inheritable (cleared FD_CLOEXEC) for this exec; nothing else in this process opened
    // or owns that fd, so this `OwnedFd` is its only owner.
    let fd = unsafe { OwnedFd::from_raw_fd(spec.fd) };
    fcntl_setfd(&fd, FdFlags::CLOEXEC)?;
    let listener = TcpListener::from(fd);
    let shared = Queue::connect(&spec.socket)?;
    let own = kevent_worker::builder(cfg.ring, cfg.lease).build()?;
    let table = ConnTable::new();
    let trigger = cfg.trigger;
    let clock = StallClock::new(cfg.stall.filter(|_| spec.index == 0));
    thread::scope(|s| {
        s.spawn(|| {
            let e = accept_loop(&shared, &listener, &own, &table, trigger).unwrap_err();
            exit_failed(&e)
        });
        // Serves for ever; an error ends the whole process (the other thread too).
        let e = kevent_worker::run(&own, &table, None, trigger, cfg.batch, clock).unwrap_err();
        exit_failed(&e)
    })
}

fn exit_failed(e: &io::Error) -> ! {
    eprintln!("kevent-httpd worker process {}: {e}", std::process::id());
    std::process::exit(1)
}

/// The accepting thread: sleeps on the shared queue, accepts into the own one. Returns
/// only on an error.
fn accept_loop(
    shared: &Queue,
    listener: &TcpListener,
    own: &Queue,
    table: &ConnTable,
    trigger: Trigger,
) -> io::Result<std::convert::Infallible> {
    loop {
        let batch = match shared.wait(1, None) {
            Ok(b) => b,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        for ev in &batch {
            if ev.token() == LISTENER {
                accept_into(listener, own, table, trigger)?;
            }
        }
        batch.commit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_child_argument_round_trips() {
        let spec = ChildSpec {
            fd: 3,
            index: 1,
            parent: 42,
            socket: "/tmp/a:b.sock".into(),
        };
        assert_eq!(ChildSpec::parse(&spec.to_arg()), Ok(spec));
        assert!(ChildSpec::parse("3:1").is_err());
    }
}

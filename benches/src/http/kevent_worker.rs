//! The work of a kevent worker, shared by both kevent back-ends: accept connections into
//! a queue, and serve the events of connections a queue delivers.
//!
//! A connection is one `KEVENT_SOCKET` kevent asking for `READABLE`; while a response is
//! partly written it is switched to `WRITABLE` and back (`modify`), and it is removed
//! before its socket closes. Its token finds it in the [`ConnTable`].
//!
//! Level-triggered gives a worker its connection exclusively: a kevent has one event
//! outstanding, and a level one is reported again only after the batch that holds it is
//! committed. Edge-triggered (`kevent-httpd`'s default, see [`run`] for why) may hand the
//! next edge to another worker while the first still serves the connection; the slot's
//! lock then makes the second wait, and it reads whatever arrived after the first one's
//! last read.

use std::convert::Infallible;
use std::io;
use std::net::TcpListener;
use std::time::Duration;

use kevent::{Builder, Event, Interest, Queue, Source, Token, Trigger};

use super::conn::{Conn, Step};
use super::listener::{self, ACCEPT_BATCH};
use super::stall::StallClock;
use super::table::ConnTable;

/// The listening socket's token (a connection's never has all bits set: its generation
/// would have to be `u32::MAX` on fd `u32::MAX`).
pub const LISTENER: Token = Token(u64::MAX);

/// The ring's size: `asked` if not 0, else an entry for every connection the process may
/// hold (the fd limit, rounded up to a power of two), so a ready connection never waits
/// in the producer's backlog.
///
/// Slots are reused in ring order, so a worker that holds a batch pins the ring from
/// that batch on: once the others have gone a whole ring ahead, the ring is full and
/// nothing is published until the holder commits (or its lease runs out). A worker that
/// may stall for `t` needs a ring of more than `t` × the event rate (200 ms at 150,000
/// events/s: 30,000 entries), which `--ring` gives.
pub fn ring_capacity(asked: usize) -> usize {
    if asked != 0 {
        return asked;
    }
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(1 << 16)
        .clamp(1024, 1 << 20);
    (limit as usize).next_power_of_two()
}

/// The builder of a worker's queue: `ring` entries (see [`ring_capacity`]), and
/// `lease` both as the lease and as the reap interval if given.
pub fn builder(ring: usize, lease: Option<Duration>) -> Builder {
    let b = Queue::builder().capacity(ring_capacity(ring));
    match lease {
        Some(l) => b.lease(l).reap_interval(l),
        None => b,
    }
}

/// Accepts up to [`ACCEPT_BATCH`] connections (until `WouldBlock`) and registers each in
/// `queue`.
pub fn accept_into(
    listener: &TcpListener,
    queue: &Queue,
    table: &ConnTable,
    trigger: Trigger,
) -> io::Result<()> {
    for _ in 0..ACCEPT_BATCH {
        let stream = match listener::accept(listener) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if listener::is_transient(&e) => continue,
            Err(e) => return Err(e),
        };
        let source = Source::socket(&stream, Interest::READABLE);
        let token = table.insert(Conn::new(stream))?;
        // Registered after it is in the table: its first event finds it there.
        if let Err(e) = queue.add(&source, token, trigger) {
            eprintln!("kevent-httpd: {e}; closing the connection");
            if let Some(mut slot) = table.lock(token) {
                slot.close();
            }
        }
    }
    Ok(())
}

/// Serves one event of a connection: reads and answers, or goes on writing; switches
/// its interest when that changes; removes and closes it when it is done.
pub fn serve(queue: &Queue, table: &ConnTable, ev: &Event, trigger: Trigger) {
    let Some(mut slot) = table.lock(ev.token()) else {
        return; // closed while this event waited for its lock
    };
    // While it waits to write, only writability is asked for; a hang-up or an error
    // then shows as writable too, and the write says which.
    let step = if slot.writing {
        slot.conn().on_writable()
    } else {
        slot.conn().on_readable()
    };
    let want = match step {
        Step::Read => Interest::READABLE,
        Step::Write => Interest::WRITABLE,
        Step::Close => {
            let source = Source::socket(slot.conn().stream(), Interest::READABLE);
            if let Err(e) = queue.remove(&source) {
                eprintln!("kevent-httpd: {e}");
            }
            slot.close();
            return;
        }
    };
    let writing = want == Interest::WRITABLE;
    if writing != slot.writing {
        let source = Source::socket(slot.conn().stream(), want);
        match queue.modify(&source, ev.token(), trigger) {
            Ok(()) => slot.writing = writing,
            Err(e) => {
                eprintln!("kevent-httpd: {e}; closing the connection");
                let _ = queue.remove(&source);
                slot.close();
            }
        }
    }
}

/// A worker of a queue: takes up to `batch` events at a time and serves them —
/// connections, and the listener's `ACCEPT` if `listener` is given — for ever: it
/// returns only on an error.
///
/// When it commits depends on the trigger. Level-triggered, the commit is the
/// acknowledgement (a connection still readable after it is reported again), so the
/// batch is committed after its events are served. Edge-triggered, an event is a
/// notification and the state is in the socket, so the events are copied out and the
/// batch committed at once, before they are served: the ring releases entries in ring
/// order, and a kevent is reported again only once its entry is released, so a worker
/// that holds a batch while it serves (or while it is stopped) keeps every kevent
/// committed after that batch from being reported — to every worker. Committing first
/// leaves a stopped worker holding only the connections it took.
pub fn run(
    queue: &Queue,
    table: &ConnTable,
    listener: Option<&TcpListener>,
    trigger: Trigger,
    batch: usize,
    mut stall: StallClock,
) -> io::Result<Infallible> {
    let mut taken: Vec<Event> = Vec::with_capacity(batch);
    loop {
        let events = match queue.wait(batch, None) {
            Ok(b) => b,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let commit_first = trigger == Trigger::Edge;
        taken.clear();
        taken.extend(events.iter());
        if commit_first {
            events.commit();
            stall.check();
            serve_all(queue, table, listener, trigger, &taken)?;
        } else {
            stall.check();
            serve_all(queue, table, listener, trigger, &taken)?;
            events.commit();
        }
    }
}

fn serve_all(
    queue: &Queue,
    table: &ConnTable,
    listener: Option<&TcpListener>,
    trigger: Trigger,
    events: &[Event],
) -> io::Result<()> {
    for ev in events {
        if ev.token() == LISTENER {
            if let Some(l) = listener {
                accept_into(l, queue, table, trigger)?;
            }
        } else {
            serve(queue, table, ev, trigger);
        }
    }
    Ok(())
}

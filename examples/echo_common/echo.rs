//! The echo server's event handling, shared by `tcp_server.rs` (threads calling
//! `Queue::wait`) and `tokio_echo.rs` (tasks awaiting `AsyncQueue::wait`): only the way
//! events are waited for differs.
//!
//! The rules a kevent server follows, each marked `Rule` below:
//! * every socket is non-blocking, and is read (or accepted) until `WouldBlock`;
//! * kevents are level-triggered: a kevent has one event outstanding until its batch
//!   commits, so two threads never handle the same connection at once, and a source still
//!   ready after the commit is reported again;
//! * at end of file (or an error), the connection is removed from the queue *before* the
//!   socket is dropped: a closed fd number can be reused by the next `accept`.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use kevent::{Event, Interest, Queue, Source, Token, Trigger};

/// The listening socket's token.
pub const LISTENER: Token = Token(0);
/// A user event that tells the workers to stop (each passes it on to the next).
pub const STOP: Token = Token(u64::MAX);

/// One client connection.
struct Conn {
    stream: TcpStream,
    /// Bytes read but not yet written back (the client was not reading).
    out: Vec<u8>,
    /// The kevent's interest now: WRITABLE is in it only while `out` is not empty.
    interest: Interest,
    /// The client closed its side: close ours once `out` is written.
    eof: bool,
}

/// The server: a listener and its connections, registered in one queue.
pub struct Echo {
    listener: TcpListener,
    conns: Mutex<HashMap<u64, Arc<Mutex<Conn>>>>,
    next_token: AtomicU64,
    /// Connections accepted, connections closed, bytes echoed, and how many times output
    /// had to wait for WRITABLE (the client was not reading fast enough).
    pub accepted: AtomicU64,
    pub closed: AtomicU64,
    pub echoed: AtomicU64,
    pub waited: AtomicU64,
}

/// What a worker should do after an event.
#[derive(PartialEq, Eq)]
pub enum Next {
    Continue,
    Stop,
}

impl Echo {
    /// Listens on `addr` and registers the listener (and the stop event) in `queue`.
    pub fn bind(addr: &str, queue: &Queue) -> io::Result<Echo> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?; // Rule: non-blocking
        queue.add(
            &Source::socket(&listener, Interest::ACCEPT),
            LISTENER,
            Trigger::Level,
        )?;
        queue.add(&Source::user(STOP.0), STOP, Trigger::Edge)?;
        Ok(Echo {
            listener,
            conns: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
            accepted: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            echoed: AtomicU64::new(0),
            waited: AtomicU64::new(0),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    /// Asks the workers to stop: the first to take the stop event passes it on.
    pub fn stop(queue: &Queue) -> io::Result<()> {
        Ok(queue.ready(&Source::user(STOP.0))?)
    }

    /// Handles one event taken from `queue`.
    pub fn handle(&self, queue: &Queue, event: &Event) -> io::Result<Next> {
        match event.token() {
            STOP => {
                Echo::stop(queue)?; // pass it on to the next worker
                Ok(Next::Stop)
            }
            LISTENER => {
                self.accept(queue)?;
                Ok(Next::Continue)
            }
            Token(t) => {
                let conn = self.conns.lock().unwrap().get(&t).cloned();
                if let Some(conn) = conn {
                    self.serve(queue, t, &mut conn.lock().unwrap(), event)?;
                }
                Ok(Next::Continue)
            }
        }
    }

    /// Rule: accept until `WouldBlock`.
    fn accept(&self, queue: &Queue) -> io::Result<()> {
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // The connection died before we took it (ECONNABORTED): take the next.
                Err(e) if e.kind() == ErrorKind::ConnectionAborted => continue,
                Err(e) => return Err(e),
            };
            stream.set_nonblocking(true)?;
            stream.set_nodelay(true)?;
            let token = self.next_token.fetch_add(1, Ordering::Relaxed);
            let conn = Conn {
                stream,
                out: Vec::new(),
                interest: Interest::READABLE,
                eof: false,
            };
            let source = Source::socket(&conn.stream, Interest::READABLE);
            // In the map before it is in the queue: its first event may come at once,
            // to another worker.
            self.conns
                .lock()
                .unwrap()
                .insert(token, Arc::new(Mutex::new(conn)));
            queue.add(&source, Token(token), Trigger::Level)?;
            self.accepted.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn serve(&self, queue: &Queue, token: u64, conn: &mut Conn, event: &Event) -> io::Result<()> {
        let mut broken = false;
        if event.is_readable() && !conn.eof {
            // Rule: read until WouldBlock (or EOF).
            let mut buf = [0u8; 16 * 1024];
            loop {
                match conn.stream.read(&mut buf) {
                    Ok(0) => {
                        conn.eof = true;
                        break;
                    }
                    Ok(n) => conn.out.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => {
                        broken = true; // ECONNRESET and the like
                        break;
                    }
                }
            }
        }
        // Echo what is pending, until WouldBlock.
        while !conn.out.is_empty() && !broken {
            match conn.stream.write(&conn.out) {
                Ok(n) => {
                    conn.out.drain(..n);
                    self.echoed.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => broken = true,
            }
        }
        if broken || (conn.eof && conn.out.is_empty()) {
            // Rule: remove before the socket is dropped.
            queue.remove(&Source::socket(&conn.stream, Interest::READABLE))?;
            self.conns.lock().unwrap().remove(&token); // drops the socket (when we are done)
            self.closed.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        // Ask for WRITABLE only while output waits; after EOF for nothing else.
        let interest = match (conn.eof, conn.out.is_empty()) {
            (true, _) => Interest::WRITABLE,
            (false, false) => Interest::READABLE | Interest::WRITABLE,
            (false, true) => Interest::READABLE,
        };
        if interest != conn.interest {
            queue.modify(
                &Source::socket(&conn.stream, interest),
                Token(token),
                Trigger::Level,
            )?;
            if interest.contains(Interest::WRITABLE) && !conn.interest.contains(Interest::WRITABLE)
            {
                self.waited.fetch_add(1, Ordering::Relaxed);
            }
            conn.interest = interest;
        }
        Ok(())
    }
}

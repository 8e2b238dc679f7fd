//! [`Conn`]: one connection of a readiness-driven back-end (the kevent and epoll ones):
//! read what is there, answer every complete request, write until done or `WouldBlock`.
//!
//! The back-end says *when* (an event said readable or writable); this says *what*, and
//! answers with a [`Step`]: wait for input, wait for room to write, or close.
//!
//! Reads stop at `WouldBlock` or at a short read: a read that did not fill the buffer
//! emptied the socket, and data arriving after it is a new edge (epoll and kevent alike
//! report it), so the extra `read` that would only say `EAGAIN` is skipped — what nginx
//! (`ngx_unix_recv`) and tokio (`PollEvented::poll_read`) do too.

use std::io::{self, Read, Write};
use std::net::TcpStream;

use super::page;
use super::parse::{parse, Parsed};

/// What the connection waits for after an event was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Everything answered: wait until it is readable.
    Read,
    /// A response is partly written: wait until it is writable.
    Write,
    /// Done (the client closed, asked to close, sent garbage, or failed): remove the
    /// connection from the notification set, then drop it.
    Close,
}

/// How much one `read` takes.
const READ_CHUNK: usize = 4096;

/// A connection: its socket, the input not yet parsed, the output not yet written.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    closing: bool,
}

impl Conn {
    /// A connection on a non-blocking socket.
    pub fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            input: Vec::new(),
            output: Vec::new(),
            written: 0,
            closing: false,
        }
    }

    /// The socket.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Whether a response is partly written.
    pub fn has_output(&self) -> bool {
        self.written < self.output.len()
    }

    /// The socket is readable (or closed, or failed): reads what is there, answers every
    /// complete request, writes the answers.
    pub fn on_readable(&mut self) -> Step {
        let mut eof = false;
        loop {
            let mut chunk = [0u8; READ_CHUNK];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    self.input.extend_from_slice(&chunk[..n]);
                    if n < READ_CHUNK {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Step::Close,
            }
        }
        self.answer();
        if eof {
            // The client is gone (or half-closed): send what we owe, then close.
            let _ = self.flush();
            return Step::Close;
        }
        self.after_flush()
    }

    /// The socket is writable: writes what is left of the responses.
    pub fn on_writable(&mut self) -> Step {
        self.after_flush()
    }

    /// Answers every complete request in the input.
    fn answer(&mut self) {
        let mut used = 0;
        while !self.closing {
            match parse(&self.input[used..]) {
                Parsed::Incomplete => break,
                Parsed::Get { len, keep_alive } => {
                    used += len;
                    self.output.extend_from_slice(page::response(keep_alive));
                    self.closing = !keep_alive;
                }
                Parsed::Bad => {
                    self.output.extend_from_slice(page::bad_request());
                    self.closing = true;
                }
            }
        }
        self.input.drain(..used);
    }

    fn after_flush(&mut self) -> Step {
        match self.flush() {
            Err(_) => Step::Close,
            Ok(()) if self.has_output() => Step::Write,
            Ok(()) if self.closing => Step::Close,
            Ok(()) => Step::Read,
        }
    }

    /// Writes until the output is gone or the socket is full.
    fn flush(&mut self) -> io::Result<()> {
        while self.has_output() {
            match self.stream.write(&self.output[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.output.clear();
        self.written = 0;
        Ok(())
    }
}

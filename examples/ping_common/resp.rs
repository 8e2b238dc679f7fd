//! Just enough RESP for `PING`. Shared by `ping_kevent.rs` and `ping_epoll.rs`.

use std::os::fd::OwnedFd;

use rustix::io::Errno;
use rustix::net::SendFlags;

/// Bytes read per `read(2)`.
pub const READ_SIZE: usize = 16 * 1024;
/// A request this long without being complete is refused.
const MAX_REQUEST: usize = 1024 * 1024;

/// What the event loop should do with a connection next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Keep the interest as it is.
    Keep,
    /// A reply is only partly written: wait for writability (and stop reading).
    WantWrite,
    /// The pending reply is written: wait for readability again.
    WantRead,
    /// EOF, error, or protocol error: close.
    Close,
}

/// One client connection: unparsed input and unsent output.
pub struct Conn {
    pub fd: OwnedFd,
    input: Vec<u8>,
    output: Vec<u8>,
    sent: usize,
}

enum Flush {
    Done,
    Pending,
    Failed,
}

impl Conn {
    pub fn new(fd: OwnedFd) -> Self {
        Conn {
            fd,
            input: Vec::new(),
            output: Vec::new(),
            sent: 0,
        }
    }

    /// Whether a reply is waiting for the socket to become writable.
    pub fn want_write(&self) -> bool {
        self.sent < self.output.len()
    }

    /// Reads once, answers every complete request, writes the replies.
    pub fn on_readable(&mut self, scratch: &mut [u8], pings: &mut u64) -> Step {
        let n = match rustix::io::read(&self.fd, &mut *scratch) {
            Ok(0) => return Step::Close,
            Ok(n) => n,
            Err(Errno::AGAIN | Errno::INTR) => return Step::Keep,
            Err(_) => return Step::Close,
        };
        let parsed = if self.input.is_empty() {
            // The usual case: parse straight from the read buffer.
            answer(&scratch[..n], &mut self.output, pings)
                .map(|used| self.input.extend_from_slice(&scratch[used..n]))
        } else {
            self.input.extend_from_slice(&scratch[..n]);
            answer(&self.input, &mut self.output, pings).map(|used| {
                self.input.drain(..used);
            })
        };
        let refuse = match parsed {
            Ok(()) if self.input.len() <= MAX_REQUEST => None,
            Ok(()) => Some("request too large"),
            Err(msg) => Some(msg),
        };
        if let Some(msg) = refuse {
            self.output.extend_from_slice(b"-ERR Protocol error: ");
            self.output.extend_from_slice(msg.as_bytes());
            self.output.extend_from_slice(b"\r\n");
            let _ = self.flush(); // best effort
            return Step::Close;
        }
        match self.flush() {
            Flush::Done => Step::Keep,
            Flush::Pending => Step::WantWrite,
            Flush::Failed => Step::Close,
        }
    }

    /// Writes more of the pending reply.
    pub fn on_writable(&mut self) -> Step {
        match self.flush() {
            Flush::Done => Step::WantRead,
            Flush::Pending => Step::Keep,
            Flush::Failed => Step::Close,
        }
    }

    fn flush(&mut self) -> Flush {
        while self.sent < self.output.len() {
            // NOSIGNAL: a peer that has gone away is an error here, not a SIGPIPE.
            match rustix::net::send(&self.fd, &self.output[self.sent..], SendFlags::NOSIGNAL) {
                Ok(k) => self.sent += k,
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => return Flush::Pending,
                Err(_) => return Flush::Failed,
            }
        }
        self.output.clear();
        self.sent = 0;
        Flush::Done
    }
}

enum Cmd {
    Ping,
    Empty,
    Other,
}

/// Answers every complete request at the front of `input` (appending to `output`);
/// returns how many bytes they took. An incomplete request is left for later.
pub fn answer(input: &[u8], output: &mut Vec<u8>, pings: &mut u64) -> Result<usize, &'static str> {
    let mut pos = 0;
    while let Some((used, cmd)) = parse(&input[pos..])? {
        pos += used;
        match cmd {
            Cmd::Ping => {
                output.extend_from_slice(b"+PONG\r\n");
                *pings += 1;
            }
            Cmd::Empty => {}
            Cmd::Other => output.extend_from_slice(b"-ERR unknown command\r\n"),
        }
    }
    Ok(pos)
}

/// The line at the front of `buf` without its `\r\n` (or `\n`), and the bytes it
/// takes with the terminator; `None` if it is not complete yet.
fn line(buf: &[u8]) -> Option<(&[u8], usize)> {
    let nl = buf.iter().position(|&b| b == b'\n')?;
    let text = &buf[..nl];
    Some((text.strip_suffix(b"\r").unwrap_or(text), nl + 1))
}

fn number(text: &[u8]) -> Option<i64> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// One request at the front of `buf`: `None` if incomplete.
fn parse(buf: &[u8]) -> Result<Option<(usize, Cmd)>, &'static str> {
    if buf.is_empty() {
        return Ok(None);
    }
    let classify = |name: &[u8]| {
        if name.eq_ignore_ascii_case(b"PING") {
            Cmd::Ping
        } else {
            Cmd::Other
        }
    };
    if buf[0] != b'*' {
        // Inline: one line, the command is its first word.
        let Some((text, used)) = line(buf) else {
            return Ok(None);
        };
        let cmd = match text
            .split(|b| b.is_ascii_whitespace())
            .find(|w| !w.is_empty())
        {
            None => Cmd::Empty,
            Some(word) => classify(word),
        };
        return Ok(Some((used, cmd)));
    }
    // A RESP array of bulk strings: *N\r\n then N times $LEN\r\nDATA\r\n.
    let Some((header, mut used)) = line(buf) else {
        return Ok(None);
    };
    let count = number(&header[1..]).ok_or("invalid multibulk length")?;
    if count > 1024 * 1024 {
        return Err("invalid multibulk length");
    }
    let mut name: Option<&[u8]> = None;
    for _ in 0..count.max(0) {
        let Some((bulk, taken)) = line(&buf[used..]) else {
            return Ok(None);
        };
        if bulk.first() != Some(&b'$') {
            return Err("expected '$'");
        }
        let len = number(&bulk[1..])
            .and_then(|n| usize::try_from(n).ok())
            .ok_or("invalid bulk length")?;
        used += taken;
        if buf.len() < used + len + 2 {
            return Ok(None);
        }
        if &buf[used + len..used + len + 2] != b"\r\n" {
            return Err("bulk string not followed by CRLF");
        }
        name.get_or_insert(&buf[used..used + len]);
        used += len + 2;
    }
    Ok(Some((used, name.map_or(Cmd::Empty, classify))))
}

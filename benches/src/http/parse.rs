//! The request parser every back-end shares: finds one complete request at the front of
//! a buffer and says whether the connection stays open after its response.
//!
//! Enough HTTP/1.x for a benchmark client, and strict where it matters: a request is
//! complete at its blank line (`\r\n\r\n`); only `GET` without a body is served; HTTP/1.1
//! keeps the connection unless `Connection: close`, HTTP/1.0 closes it unless
//! `Connection: keep-alive` (what `ab` without `-k` sends: a connection per request).

/// What [`parse`] found at the front of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// No complete request yet: read more.
    Incomplete,
    /// A GET of `len` bytes (consume them); `keep_alive`: the connection stays open.
    Get {
        /// Length of the request, headers and blank line included.
        len: usize,
        /// Whether the client keeps the connection after the response.
        keep_alive: bool,
    },
    /// Not a request this server serves: answer 400 and close.
    Bad,
}

/// Requests longer than this (headers included) are [`Parsed::Bad`].
pub const MAX_REQUEST: usize = 8192;

/// Parses the request at the front of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() >= MAX_REQUEST {
            Parsed::Bad
        } else {
            Parsed::Incomplete
        };
    };
    let head = &buf[..end];
    let mut lines = head.split(|&b| b == b'\n').map(trim_cr);
    let request_line = lines.next().unwrap_or_default();
    let mut words = request_line.split(|&b| b == b' ');
    let (Some(method), Some(_target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Parsed::Bad;
    };
    let mut keep_alive = match version {
        b"HTTP/1.1" => true,
        b"HTTP/1.0" => false,
        _ => return Parsed::Bad,
    };
    if method != b"GET" {
        return Parsed::Bad;
    }
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Parsed::Bad;
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"connection") {
            if value.eq_ignore_ascii_case(b"close") {
                keep_alive = false;
            } else if value.eq_ignore_ascii_case(b"keep-alive") {
                keep_alive = true;
            }
        } else if name.eq_ignore_ascii_case(b"content-length") && value != b"0"
            || name.eq_ignore_ascii_case(b"transfer-encoding")
        {
            // A GET with a body: not something this server reads.
            return Parsed::Bad;
        }
    }
    Parsed::Get {
        len: end + 4,
        keep_alive,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_request_keeps_the_connection() {
        let req = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";
        assert_eq!(
            parse(req),
            Parsed::Get {
                len: req.len(),
                keep_alive: true
            }
        );
    }

    #[test]
    fn ab_request_closes_it() {
        let req = b"GET / HTTP/1.0\r\nHost: localhost\r\nUser-Agent: ApacheBench/2.3\r\nAccept: */*\r\n\r\n";
        assert_eq!(
            parse(req),
            Parsed::Get {
                len: req.len(),
                keep_alive: false
            }
        );
        let ka = b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n";
        assert!(matches!(
            parse(ka),
            Parsed::Get {
                keep_alive: true,
                ..
            }
        ));
        let close = b"GET / HTTP/1.1\r\nconnection: close\r\n\r\n";
        assert!(matches!(
            parse(close),
            Parsed::Get {
                keep_alive: false,
                ..
            }
        ));
    }

    #[test]
    fn a_partial_request_waits_and_pipelined_ones_are_taken_one_at_a_time() {
        let two = b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        assert_eq!(parse(&two[..10]), Parsed::Incomplete);
        assert_eq!(
            parse(two),
            Parsed::Get {
                len: 19,
                keep_alive: true
            }
        );
        assert!(matches!(parse(&two[19..]), Parsed::Get { len: 19, .. }));
    }

    #[test]
    fn other_methods_versions_and_bodies_are_bad() {
        assert_eq!(parse(b"POST / HTTP/1.1\r\n\r\n"), Parsed::Bad);
        assert_eq!(parse(b"GET / HTTP/2.0\r\n\r\n"), Parsed::Bad);
        assert_eq!(parse(b"GET /\r\n\r\n"), Parsed::Bad);
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n"),
            Parsed::Bad
        );
        assert_eq!(parse(&[b'a'; MAX_REQUEST]), Parsed::Bad);
    }
}

//! The request parser every back-end shares: finds one complete request at the front of
//! a buffer and says whether the connection stays open after its response.
//!
//! The request line and the headers are `httparse`'s; what this server makes of them is
//! here, strict where it matters: a request is complete at its blank line; only `GET`
//! without a body is served, in at most [`MAX_REQUEST`] bytes and [`MAX_HEADERS`]
//! headers; HTTP/1.1 keeps the connection unless `Connection: close`, HTTP/1.0 closes it
//! unless `Connection: keep-alive` (what `ab` without `-k` sends: a connection per
//! request).

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

/// Most header lines a request may have; more is [`Parsed::Bad`] (a benchmark client
/// sends two to six).
pub const MAX_HEADERS: usize = 64;

/// Parses the request at the front of `buf` (with `httparse`).
pub fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST => return Parsed::Incomplete,
        Ok(httparse::Status::Partial) | Err(_) => return Parsed::Bad,
    };
    if len > MAX_REQUEST || req.method != Some("GET") {
        return Parsed::Bad;
    }
    // httparse takes only HTTP/1.x: 0 is 1.0, 1 is 1.1.
    let mut keep_alive = req.version == Some(1);
    for h in req.headers.iter() {
        let value = h.value.trim_ascii();
        if h.name.eq_ignore_ascii_case("connection") {
            if value.eq_ignore_ascii_case(b"close") {
                keep_alive = false;
            } else if value.eq_ignore_ascii_case(b"keep-alive") {
                keep_alive = true;
            }
        } else if h.name.eq_ignore_ascii_case("content-length") && value != b"0"
            || h.name.eq_ignore_ascii_case("transfer-encoding")
        {
            // A GET with a body: not something this server reads.
            return Parsed::Bad;
        }
    }
    Parsed::Get { len, keep_alive }
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
        assert_eq!(parse(b"GET / HTTP/1.1\r\nno colon\r\n\r\n"), Parsed::Bad);
    }

    #[test]
    fn too_long_or_too_many_headers_are_bad() {
        let mut req = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..MAX_HEADERS {
            req.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
        }
        let at_most = [&req[..], b"\r\n"].concat();
        assert!(matches!(parse(&at_most), Parsed::Get { .. }));
        req.extend_from_slice(b"X-more: 1\r\n\r\n");
        assert_eq!(parse(&req), Parsed::Bad);
        // Not complete within MAX_REQUEST bytes, though a blank line follows.
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_REQUEST));
        assert_eq!(parse(long.as_bytes()), Parsed::Bad);
        assert_eq!(
            parse(&long.as_bytes()[..MAX_REQUEST - 1]),
            Parsed::Incomplete
        );
    }
}

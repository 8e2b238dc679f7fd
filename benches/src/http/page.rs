//! The one page every back-end serves: a 699-byte HTML body (the size of the page in the
//! kevent author's lighttpd benchmark, small enough that bandwidth never limits), with
//! the two responses that carry it — keep-alive and close — built once.

use std::sync::OnceLock;

/// The length of the page's body in bytes, as in the seed's benchmark.
pub const BODY_LEN: usize = 699;

/// The body: fixed HTML padded with a repeated line to exactly [`BODY_LEN`] bytes. It
/// has no `'`, `"`, `$`, `\` or `;`, so `benches/http/run.sh` can hand the same bytes to
/// nginx's `return 200 '...'` unescaped.
pub fn body() -> &'static [u8] {
    static BODY: OnceLock<Vec<u8>> = OnceLock::new();
    BODY.get_or_init(|| {
        let head = "<html>\n<head><title>kevent-httpd</title></head>\n<body>\n<h1>It works</h1>\n";
        let tail = "</body>\n</html>\n";
        let line = "<p>kevent user-space ring, 699 bytes of page so bandwidth never limits</p>\n";
        let mut page = String::from(head);
        while page.len() + line.len() + tail.len() <= BODY_LEN {
            page.push_str(line);
        }
        while page.len() + tail.len() < BODY_LEN {
            page.push('.');
        }
        page.push_str(tail);
        assert_eq!(page.len(), BODY_LEN);
        page.into_bytes()
    })
}

/// The full response to a GET: status line, headers, body. `keep_alive` chooses the
/// `Connection:` header (`keep-alive`, or `close` after which the server closes).
pub fn response(keep_alive: bool) -> &'static [u8] {
    static KEEP: OnceLock<Vec<u8>> = OnceLock::new();
    static CLOSE: OnceLock<Vec<u8>> = OnceLock::new();
    let (cell, connection) = if keep_alive {
        (&KEEP, "keep-alive")
    } else {
        (&CLOSE, "close")
    };
    cell.get_or_init(|| {
        let mut r = format!(
            "HTTP/1.1 200 OK\r\nServer: kevent-httpd\r\nContent-Type: text/html\r\n\
             Content-Length: {}\r\nConnection: {connection}\r\n\r\n",
            BODY_LEN
        )
        .into_bytes();
        r.extend_from_slice(body());
        r
    })
}

/// The answer to a request that is not a GET this server understands; the connection
/// is closed after it.
pub fn bad_request() -> &'static [u8] {
    b"HTTP/1.1 400 Bad Request\r\nServer: kevent-httpd\r\nContent-Length: 0\r\n\
      Connection: close\r\n\r\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_699_bytes_of_plain_text_nginx_can_quote() {
        assert_eq!(body().len(), BODY_LEN);
        assert!(!body().iter().any(|b| b"'\"$\\;".contains(b)));
    }

    #[test]
    fn responses_end_with_the_body_and_name_their_connection() {
        for keep in [true, false] {
            let r = response(keep);
            assert!(r.ends_with(body()));
            let head = std::str::from_utf8(&r[..r.len() - BODY_LEN]).unwrap();
            assert!(head.contains("Content-Length: 699\r\n"));
            assert_eq!(head.contains("Connection: keep-alive"), keep);
        }
    }
}

//! `kevent-httpd`, every back-end: started on an ephemeral port, it answers keep-alive
//! GETs on one connection, pipelined GETs, a connection per request (50 clients at once),
//! and a bad request, each with the exact bytes of `kevent_bench::http::page`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kevent_bench::http::{page, Backend};

/// A server process, killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(backend: Backend, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kevent-httpd"))
            .args(["--backend", backend.name(), "--workers", "2", "--port", "0"])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start kevent-httpd");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("kevent-httpd: listening on ")
            .unwrap_or_else(|| panic!("{}: unexpected first line {line:?}", backend.name()))
            .parse()
            .unwrap();
        Server { child, addr }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // kevent-procs leaves its queue's socket file when killed.
        let _ = std::fs::remove_file(
            std::env::temp_dir().join(format!("kevent-httpd-{}.sock", self.child.id())),
        );
    }
}

fn read_exact_response(s: &mut TcpStream, expected: &[u8]) {
    let mut got = vec![0; expected.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expected)
    );
}

fn keep_alive_then_close(server: &Server) {
    let mut s = server.connect();
    for i in 0..3 {
        write!(s, "GET /{i} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
        read_exact_response(&mut s, page::response(true));
    }
    // Two pipelined in one write: two answers, in order.
    s.write_all(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    let expected = [page::response(true), page::response(false)].concat();
    assert_eq!(rest.len(), expected.len());
    assert_eq!(rest, expected, "the server answers both, then closes");
}

fn connection_per_request(server: &Server, clients: usize) {
    let answers: Vec<Vec<u8>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                scope.spawn(|| {
                    let mut s = server.connect();
                    s.write_all(b"GET / HTTP/1.0\r\nUser-Agent: test\r\n\r\n")
                        .unwrap();
                    let mut all = Vec::new();
                    s.read_to_end(&mut all).unwrap();
                    all
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(answers.len(), clients);
    let exact = answers
        .iter()
        .filter(|a| a.as_slice() == page::response(false))
        .count();
    assert_eq!(
        exact, clients,
        "every client gets exactly one full response"
    );
}

fn bad_request_is_answered_and_closed(server: &Server) {
    let mut s = server.connect();
    s.write_all(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    assert_eq!(all, page::bad_request());
}

fn serves(backend: Backend, extra: &[&str]) {
    let server = Server::start(backend, extra);
    keep_alive_then_close(&server);
    connection_per_request(&server, 50);
    bad_request_is_answered_and_closed(&server);
    // Still serving after all that.
    keep_alive_then_close(&server);
}

#[test]
fn kevent_threads_serves_keep_alive_and_close() {
    serves(Backend::KeventThreads, &[]);
}

#[test]
fn kevent_threads_level_triggered_serves_keep_alive_and_close() {
    serves(Backend::KeventThreads, &["--trigger", "level"]);
}

#[test]
fn kevent_procs_level_triggered_serves_keep_alive_and_close() {
    serves(Backend::KeventProcs, &["--trigger", "level"]);
}

#[test]
fn kevent_procs_serves_keep_alive_and_close() {
    serves(Backend::KeventProcs, &[]);
}

#[test]
fn epoll_reuseport_serves_keep_alive_and_close() {
    serves(Backend::EpollReuseport, &[]);
}

#[test]
fn epoll_exclusive_serves_keep_alive_and_close() {
    serves(Backend::EpollExclusive, &[]);
}

#[test]
fn tokio_serves_keep_alive_and_close() {
    serves(Backend::Tokio, &[]);
}

#[test]
fn every_backend_has_a_test_and_a_name() {
    assert_eq!(Backend::ALL.len(), 5);
    for b in Backend::ALL {
        assert_eq!(Backend::from_name(b.name()), Some(b));
    }
}

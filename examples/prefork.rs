//! A pre-forked echo server on `kevent::Loop`: several worker processes, each with a loop
//! of its own, drive the handler of one listening socket in a queue they share
//! (`Loop::attach_queue`); each connection is accepted by exactly one worker, which
//! serves it on its own loop (an fd belongs to the process that accepted it).
//!
//! The parent binds the listener, registers it in a queue it serves on a Unix socket
//! (`Queue::listen`) and starts the workers by running this program again (never a bare
//! `fork` of a process that has threads); they inherit the listener under the same fd
//! number and `Queue::connect` to the shared queue. A worker stops when its stdin
//! reaches end of file (the parent closes it on SIGINT or SIGTERM, or at the end of the
//! self-test), and prints how many connections it took.
//!
//! ```sh
//! cargo run --release --example prefork                  # serve on 127.0.0.1:7000
//! cargo run --release --example prefork -- --self-test   # clients, checks, exit code
//! ```

use std::env;
use std::io::{self, BufRead, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kevent::{FdHandler, Interest, Loop, Queue, Source, Token, Trigger};

const WORKERS: usize = 3;
const CLIENTS: usize = 48;
const MESSAGES: usize = 20;
const LISTENER: Token = Token(1);

fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("--worker") => worker(&args[1..]),
        Some("--self-test") => parent(true),
        None => parent(false),
        Some(other) => Err(io::Error::other(format!(
            "unknown argument {other}; usage: prefork [--self-test]"
        ))),
    };
    if let Err(e) = result {
        eprintln!("prefork: {e}");
        std::process::exit(1);
    }
}

/// The parent: binds, shares the listener's queue, starts the workers; then either
/// waits for Ctrl-C or runs the clients and checks every echo.
fn parent(self_test: bool) -> io::Result<()> {
    let addr = if self_test {
        "127.0.0.1:0"
    } else {
        "127.0.0.1:7000"
    };
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let shared = Queue::new()?;
    let accept = Source::socket(&listener, Interest::ACCEPT);
    shared.add(&accept, LISTENER, Trigger::Level)?;
    let path = env::temp_dir().join(format!("kevent-prefork-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    shared.listen(&path)?;
    // The workers inherit the listener under the same number.
    rustix::io::fcntl_setfd(&listener, rustix::io::FdFlags::empty())?;
    let exe = env::current_exe()?;
    let mut workers: Vec<Child> = Vec::new();
    for i in 0..WORKERS {
        let child = Command::new(&exe)
            .arg("--worker")
            .arg(i.to_string())
            .arg(listener.as_raw_fd().to_string())
            .arg(&path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        workers.push(child);
    }
    let local = listener.local_addr()?;
    println!("prefork: {WORKERS} workers serving {local}");
    if !self_test {
        return serve_until_signal(&mut workers, &path);
    }
    let started = Instant::now();
    let echoed = run_clients(local)?;
    // End every worker (end of file on its stdin) and collect what each accepted.
    let mut accepted = Vec::new();
    for mut w in workers {
        drop(w.stdin.take());
        let mut line = String::new();
        io::BufReader::new(w.stdout.take().expect("piped")).read_line(&mut line)?;
        let status = w.wait()?;
        if !status.success() {
            return Err(io::Error::other(format!("a worker failed: {status}")));
        }
        let n: u64 = line
            .trim()
            .parse()
            .map_err(|_| io::Error::other(line.clone()))?;
        accepted.push(n);
    }
    let total: u64 = accepted.iter().sum();
    if total != CLIENTS as u64 {
        return Err(io::Error::other(format!(
            "{total} connections accepted for {CLIENTS} clients: {accepted:?}"
        )));
    }
    println!(
        "self-test passed: {CLIENTS} clients x {MESSAGES} messages, {echoed} bytes echoed, \
         each connection accepted once (per worker: {accepted:?}), {:.0} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

/// Serves until SIGINT or SIGTERM (or a worker exits), then ends the workers and removes
/// the socket file.
fn serve_until_signal(workers: &mut [Child], path: &std::path::Path) -> io::Result<()> {
    static STOP: AtomicBool = AtomicBool::new(false);
    extern "C" fn on_signal(_: libc::c_int) {
        STOP.store(true, Ordering::Relaxed);
    }
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installs a handler that only stores to an atomic (async-signal-safe).
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    let mut failed = None;
    while !STOP.load(Ordering::Relaxed) && failed.is_none() {
        for w in workers.iter_mut() {
            if let Some(status) = w.try_wait()? {
                failed = Some(io::Error::other(format!("a worker exited: {status}")));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for w in workers.iter_mut() {
        drop(w.stdin.take()); // end of file: the worker stops
        let _ = w.wait();
    }
    let _ = std::fs::remove_file(path);
    failed.map_or(Ok(()), Err)
}

/// Every client sends its messages one at a time and checks each echo byte for byte.
fn run_clients(addr: std::net::SocketAddr) -> io::Result<u64> {
    let threads: Vec<_> = (0..CLIENTS)
        .map(|c| {
            std::thread::spawn(move || -> io::Result<u64> {
                let mut s = TcpStream::connect(addr)?;
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                let mut bytes = 0;
                for m in 0..MESSAGES {
                    let msg = format!("client {c} message {m} {}\n", "x".repeat(c * 7 + m));
                    s.write_all(msg.as_bytes())?;
                    let mut back = vec![0u8; msg.len()];
                    s.read_exact(&mut back)?;
                    if back != msg.as_bytes() {
                        return Err(io::Error::other(format!("client {c}: wrong echo")));
                    }
                    bytes += back.len() as u64;
                }
                Ok(bytes)
            })
        })
        .collect();
    let mut total = 0;
    for t in threads {
        total += t
            .join()
            .map_err(|_| io::Error::other("a client panicked"))??;
    }
    Ok(total)
}

/// A worker: its own loop; the shared queue attached (the listener's events); each
/// accepted connection a handler on its own loop.
fn worker(args: &[String]) -> io::Result<()> {
    let [index, fd, path] = args else {
        return Err(io::Error::other("--worker INDEX FD PATH"));
    };
    // Die with the parent.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
    let fd: i32 = fd.parse().map_err(|_| io::Error::other("bad fd"))?;
    // SAFETY: the parent passed this fd number open across exec (its listener, with
    // CLOEXEC cleared), and nothing else in this process owns it.
    let listener = Arc::new(TcpListener::from(unsafe { OwnedFd::from_raw_fd(fd) }));
    let shared = Arc::new(Queue::connect(path)?);
    let lp = Loop::new()?;
    let accepted = Arc::new(AtomicU64::new(0));
    let (l, n, who) = (listener.clone(), accepted.clone(), index.clone());
    lp.attach_queue(shared, move |lp, _event| loop {
        // Level-triggered: take what is there; the next connection is another event.
        match l.accept() {
            Ok((conn, _)) => {
                n.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = serve(lp, conn) {
                    eprintln!("prefork worker {who}: {e}");
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) => {
                eprintln!("prefork worker {who}: accept: {e}");
                return;
            }
        }
    })?;
    // Stop at end of file on stdin.
    let done = Arc::new(AtomicBool::new(false));
    let stdin = Arc::new(io::stdin());
    let (d, input) = (done.clone(), stdin.clone());
    lp.set_fd_handler(
        &*stdin,
        FdHandler::new().read(move |lp| {
            let mut buf = [0u8; 64];
            if matches!(input.lock().read(&mut buf), Ok(0) | Err(_)) {
                let _ = lp.remove_fd_handler(&*input);
                d.store(true, Ordering::Relaxed);
            }
        }),
    )?;
    while !done.load(Ordering::Relaxed) {
        lp.poll(true);
    }
    if let Some(e) = lp.take_error() {
        return Err(io::Error::other(format!("worker {index}: {e}")));
    }
    println!("{}", accepted.load(Ordering::Relaxed));
    Ok(())
}

/// Serves one connection on this worker's loop: echoes until end of file, then removes
/// the handler *before* the socket is closed (its number is reused by the next accept).
fn serve(lp: &Loop, conn: TcpStream) -> io::Result<()> {
    conn.set_nonblocking(true)?;
    let conn = Arc::new(conn);
    let c = conn.clone();
    lp.set_fd_handler(
        &*conn,
        FdHandler::new().read(move |lp| {
            let mut buf = [0u8; 4096];
            loop {
                match (&*c).read(&mut buf) {
                    Ok(0) => break,
                    // A client here waits for each echo before it sends again, so the
                    // socket's buffer takes it whole; one that does not read its echoes
                    // is dropped (a server that waits for WRITABLE instead:
                    // examples/tcp_server.rs).
                    Ok(n) => {
                        if (&*c).write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                    Err(_) => break,
                }
            }
            let _ = lp.remove_fd_handler(&*c); // EOF or error: done with it
        }),
    )
    .map_err(io::Error::from)
}

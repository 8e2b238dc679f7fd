//! What every command of the `kevent` tool shares: its error style and exit codes, its
//! writes to stdout, the watch on stdout's reader. No command's code depends on
//! another's through here.

use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::atomic::Ordering;

/// Exit code of a bad command line.
pub const EXIT_USAGE: u8 = 2;
/// Exit code of a failure at run time.
pub const EXIT_FAILURE: u8 = 1;

/// `kevent: <command>: <message>` (`kevent: <message>` at the top level).
pub(crate) fn error_line(command: &str, message: &str) -> String {
    if command.is_empty() {
        format!("kevent: {message}")
    } else {
        format!("kevent: {command}: {message}")
    }
}

/// Prints `message` in the error style and where the usage is to stderr; exit code 2.
pub(crate) fn usage_error(command: &str, message: &str) -> ExitCode {
    let help = match command {
        "" | "help" => "kevent --help".to_string(),
        c => format!("kevent {c} --help"),
    };
    let _ = writeln!(
        io::stderr(),
        "{}\nRun `{help}` for usage.",
        error_line(command, message)
    );
    ExitCode::from(EXIT_USAGE)
}

/// Prints `message` in the error style to stderr; exit code 1.
pub(crate) fn failure(command: &str, message: &str) -> ExitCode {
    let _ = writeln!(io::stderr(), "{}", error_line(command, message));
    ExitCode::from(EXIT_FAILURE)
}

/// Writes `text` to stdout and flushes it.
pub(crate) fn write_stdout(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// True for the error of writing into a pipe whose reader has gone (`| head -1`).
pub(crate) fn is_broken_pipe(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
}

/// The exit code after writing stdout failed with `e`: a closed pipe is a quiet success
/// (the reader has all it wanted), anything else a failure of `command`.
pub(crate) fn output_failed(command: &str, e: &io::Error) -> ExitCode {
    if is_broken_pipe(e) {
        ExitCode::SUCCESS
    } else {
        failure(command, &format!("writing to stdout: {e}"))
    }
}

/// Writes `text` to stdout; the exit code of `command` that printed it.
pub(crate) fn print_stdout(command: &str, text: &str) -> ExitCode {
    match write_stdout(text) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => output_failed(command, &e),
    }
}

/// States of the [`ReaderWatch`].
const WATCH_ARMED: u8 = 1;
const WATCH_FIRED: u8 = 2;
const WATCH_DISARMED: u8 = 3;

/// Who ends the process when the reader of stdout goes: the watch (`WATCH_FIRED`) or,
/// once its output is being written, the command itself (`WATCH_DISARMED`).
static WATCH: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// The clean-up the watch runs before the process ends ([`ReaderWatch::start`]).
static BEFORE_EXIT: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// The line the watch writes to stderr when it stops the command.
static STOP_LINE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// A long run that writes to a pipe (`kevent bench | head -3`) stops as soon as the
/// reader of the pipe goes, not at its next write, which may be minutes away: a thread
/// waits in `poll(2)` on stdout for `POLLERR` (a pipe whose read end is closed) or
/// `POLLHUP` (a socket whose peer is gone), then runs the command's clean-up (`bench`
/// kills and reaps its consumer processes, as on SIGINT) and ends the process with 0,
/// the exit code of a closed stdout. Stdout that is not a pipe or a socket (a terminal,
/// a file) is not watched.
///
/// The thread is started, and about to wait in `poll`, before `start` returns: it
/// takes no lock and allocates nothing from then on, so that the command may still
/// `fork` (its children do not inherit the thread). Once the command writes its final output, [`disarm`] it: a
/// reader that goes after reading it must not cut the writing of files short.
///
/// [`disarm`]: ReaderWatch::disarm
pub(crate) struct ReaderWatch(());

impl ReaderWatch {
    /// Starts watching stdout for `command` (at most once per process); `before_exit`
    /// runs on the watch's thread before the process ends, and must be
    /// async-signal-safe (the process's other threads run on meanwhile). `None` if
    /// stdout is not a pipe or a socket, or the thread cannot be started (then a
    /// closed reader is found at the next write, as without the watch).
    pub(crate) fn start(command: &str, before_exit: fn()) -> Option<ReaderWatch> {
        let stat = rustix::fs::fstat(rustix::stdio::stdout()).ok()?;
        let kind = rustix::fs::FileType::from_raw_mode(stat.st_mode);
        if !matches!(
            kind,
            rustix::fs::FileType::Fifo | rustix::fs::FileType::Socket
        ) {
            return None;
        }
        if WATCH
            .compare_exchange(0, WATCH_ARMED, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return None;
        }
        let _ = BEFORE_EXIT.set(before_exit);
        // On a line of its own: progress may have written half a line.
        let _ = STOP_LINE.set(format!(
            "\n{}\n",
            error_line(
                command,
                "the reader of stdout has gone: stopped (exit code 0)"
            )
        ));
        // Not a channel: its last user frees it, and a `free` on the watch's thread
        // could hold the allocator's lock just when the command forks.
        static POLLING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        std::thread::Builder::new()
            .name("stdout-watch".into())
            .spawn(|| {
                // Signals are for the command's threads: SIGINT and SIGTERM handlers
                // (`kevent bench`'s) must not run here while the command holds them
                // back around a fork.
                // SAFETY: a zeroed `sigset_t` is valid to initialise with
                // `sigemptyset`; the set and the null old-set pointer are valid
                // arguments of `pthread_sigmask`.
                unsafe {
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    libc::sigaddset(&mut set, libc::SIGINT);
                    libc::sigaddset(&mut set, libc::SIGTERM);
                    libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                }
                POLLING.store(true, Ordering::SeqCst);
                watch_stdout();
            })
            .ok()?;
        while !POLLING.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        Some(ReaderWatch(()))
    }

    /// The command writes its final output now: the watch no longer ends the process.
    /// If it has already begun to, this waits for the end.
    pub(crate) fn disarm(self) {
        if WATCH
            .compare_exchange(
                WATCH_ARMED,
                WATCH_DISARMED,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_err()
        {
            loop {
                std::thread::park();
            }
        }
    }

    /// The command found the reader gone itself (a write failed with `EPIPE`): ends the
    /// process as the watch would (clean-up, line, exit code 0).
    pub(crate) fn reader_gone(&self) -> ! {
        stop();
        // Another thread is stopping the process.
        loop {
            std::thread::park();
        }
    }
}

/// The watch's thread: waits until stdout reports an error or a hang-up, then stops.
fn watch_stdout() {
    let gone = rustix::event::PollFlags::ERR | rustix::event::PollFlags::HUP;
    let stdout = rustix::stdio::stdout();
    loop {
        // No events asked for: POLLERR, POLLHUP and POLLNVAL are reported anyway.
        let mut fds = [rustix::event::PollFd::new(
            &stdout,
            rustix::event::PollFlags::empty(),
        )];
        match rustix::event::poll(&mut fds, None) {
            Ok(_) if fds[0].revents().intersects(gone) => break,
            // POLLNVAL: stdout was closed under us; nothing to watch.
            Ok(_) if fds[0].revents().contains(rustix::event::PollFlags::NVAL) => return,
            Ok(_) | Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return,
        }
    }
    stop();
}

/// Clean-up, the stop line on stderr, `_exit(0)`; only the first caller does it.
fn stop() {
    if WATCH
        .compare_exchange(WATCH_ARMED, WATCH_FIRED, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        return;
    }
    if let Some(before_exit) = BEFORE_EXIT.get() {
        before_exit();
    }
    if let Some(line) = STOP_LINE.get() {
        // A raw write: no lock of std's stderr, which another thread may hold.
        let _ = rustix::io::write(rustix::stdio::stderr(), line.as_bytes());
    }
    // SAFETY: `_exit` ends the process at once, without running destructors or atexit
    // handlers (the other threads are mid-run); always sound to call.
    unsafe { libc::_exit(0) };
}

//! What every command of the `kevent` tool shares: its error style and exit codes, its
//! writes to stdout. No command's code depends on another's through
//! here.

use std::io::{self, Write};
use std::process::ExitCode;

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

//! The `kevent` command line: `kevent stat` (a live view of a ring), `kevent demo`
//! (events flowing through a queue), `kevent bench` (the benchmark harness),
//! `kevent loop-bench` (the event loop's benchmark), `kevent completions SHELL`.
//!
//! Parsed by clap ([`Cli`], one subcommand per command, each command's options in its
//! own module). Every command reports errors in one style, `kevent: <command>:
//! <message>` on stderr — clap's errors are rendered so too ([`usage_message`]) — and
//! exits with 2 for a bad command line (then a pointer to the help follows) and 1 for a
//! failure at run time. A closed stdout (`kevent bench --list | head -1`) ends a
//! command quietly with 0, as there is nobody left to tell.

use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory as _, Parser, Subcommand};

pub mod demo;
pub mod out;
pub mod stat;

use out::{print_stdout, usage_error};
pub use out::{EXIT_FAILURE, EXIT_USAGE};

/// What `kevent --help` says above the commands.
const ABOUT: &str = "kevent — a user-space Linux kevent: a shared-memory event ring";

/// What `kevent --help` says below the options.
const AFTER_HELP: &str = "\
Errors go to stderr as `kevent: <command>: <message>`. Exit codes: 0 success (also when
stdout is closed early, e.g. piped into `head`), 1 failure at run time, 2 bad command
line, 128+N killed by signal N (SIGINT and SIGTERM clean up first: `bench` reaps its
consumer processes, `demo` its workers and its socket).";

/// The help of a command that describes itself (`before_help`) in more words than its
/// line in `kevent --help` (its `about`, left out here). Not clap's `long_about`: with
/// one, `--help` would put every option's text on the line under its name.
const DETAILED: &str = "{before-help}{usage-heading} {usage}\n\n{all-args}{after-help}";

/// The `kevent` command line.
#[derive(Debug, Parser)]
#[command(
    name = "kevent",
    about = ABOUT,
    after_help = AFTER_HELP,
    override_usage = "kevent <COMMAND> [ARGS]\n       kevent --version",
    disable_help_subcommand = true,
    disable_version_flag = true,
    // One `-h, --help` for every command, without clap's long help of its own (see
    // DETAILED).
    disable_help_flag = true,
    // `--seconds 1 --seconds 2` means 2, as it always did.
    args_override_self = true
)]
pub struct Cli {
    /// the version
    #[arg(short = 'V', long)]
    version: bool,
    /// this text
    #[arg(
        short,
        long,
        global = true,
        action = clap::ArgAction::Help,
        display_order = 1000
    )]
    help: Option<bool>,
    #[command(subcommand)]
    command: Option<Command>,
}

/// A command and its options.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// live view of a queue's ring: positions, backlog, sleepers, consumers, counters
    #[command(
        override_usage = "kevent stat <pid|socket-path> [--watch [SECS]] [--json]",
        before_help = stat::LONG_ABOUT,
        help_template = DETAILED
    )]
    Stat(stat::StatArgs),
    /// events flowing from N pipes to worker processes or threads, exactly accounted
    #[command(
        override_usage = "kevent demo [--pipes N] [--workers N] [--seconds S] [--threads] [--edge]",
        before_help = demo::LONG_ABOUT,
        help_template = DETAILED
    )]
    Demo(demo::DemoArgs),
    /// the benchmark harness: every notification backend in rotation
    #[command(
        override_usage = "kevent bench [OPTIONS]",
        before_help = crate::bench::args::LONG_ABOUT,
        help_template = DETAILED,
        after_help = crate::bench::args::AFTER_HELP
    )]
    Bench(Box<crate::bench::args::BenchArgs>),
    /// kevent::Loop against QEMU-style loops and tokio
    #[command(
        override_usage = "kevent loop-bench [OPTIONS]",
        before_help = crate::loopbench::LONG_ABOUT,
        help_template = DETAILED,
        after_help = "Progress goes to stderr; the report to stdout."
    )]
    LoopBench(crate::loopbench::LoopBenchArgs),
    /// this text, or the help of COMMAND (also `kevent COMMAND --help`)
    #[command(override_usage = "kevent help [COMMAND]")]
    Help {
        /// a command
        #[arg(value_name = "COMMAND")]
        command: Option<String>,
    },
    /// a completion script for SHELL, e.g. `kevent completions bash > kevent.bash`
    #[command(override_usage = "kevent completions <SHELL>")]
    Completions {
        /// bash, elvish, fish, powershell or zsh
        #[arg(value_name = "SHELL", value_parser = shell)]
        shell: clap_complete::Shell,
    },
}

fn shell(v: &str) -> Result<clap_complete::Shell, String> {
    v.parse()
        .map_err(|_| format!("{v:?} is not bash, elvish, fish, powershell or zsh"))
}

/// What a command line asks for.
#[derive(Debug)]
pub enum Parsed {
    /// Run a command.
    Run(Command),
    /// Print this (a help text, the version) to stdout; `.0` is the command it is of.
    Show(String, String),
}

/// A bad command line: `kevent: <command>: <message>`, exit code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError {
    /// The command ("" at the top level).
    pub command: String,
    /// What is wrong.
    pub message: String,
}

/// The commands, as typed.
const COMMANDS: [&str; 6] = ["stat", "demo", "bench", "loop-bench", "help", "completions"];

/// Parses a command line (without the program name).
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Parsed, UsageError> {
    let args: Vec<String> = args.into_iter().collect();
    // The command the arguments are of, for the error line: the first argument if it
    // names one (clap takes no option before the command but `--version` and `--help`).
    let command = args
        .first()
        .filter(|a| COMMANDS.contains(&a.as_str()))
        .cloned()
        .unwrap_or_default();
    let usage = |message: String| UsageError {
        command: command.clone(),
        message,
    };
    let mut cli =
        match Cli::try_parse_from(std::iter::once("kevent").chain(args.iter().map(String::as_str)))
        {
            Ok(cli) => cli,
            Err(e) if e.kind() == ErrorKind::DisplayHelp => {
                let text = e.render().to_string();
                return Ok(Parsed::Show(command, format!("{}\n", text.trim_end())));
            }
            Err(e) => return Err(usage(usage_message(&e))),
        };
    if let Some(Command::Stat(a)) = &mut cli.command {
        a.watch_inline = args.iter().any(|a| a.starts_with("--watch="));
    }
    match (cli.version, cli.command) {
        (true, None) => Ok(Parsed::Show(
            String::new(),
            format!("kevent {} (kevent-bench)\n", env!("CARGO_PKG_VERSION")),
        )),
        // `kevent --version stat`: which one was meant?
        (true, Some(_)) => Err(usage(format!(
            "unexpected argument {:?} after --version",
            args.iter()
                .find(|a| !matches!(a.as_str(), "-V" | "--version"))
                .map_or("", String::as_str)
        ))),
        (false, None) => Err(usage("no command given".into())),
        // The very text of `kevent --help`, `kevent COMMAND --help`.
        (false, Some(Command::Help { command })) => {
            let command = command.unwrap_or_default();
            if !command.is_empty() && !COMMANDS.contains(&command.as_str()) {
                return Err(usage(format!("unknown command {command:?}")));
            }
            help_of(&command)
                .map(|text| Parsed::Show("help".into(), text))
                .ok_or_else(|| usage(format!("no help for {command:?}")))
        }
        (false, Some(c)) => Ok(Parsed::Run(c)),
    }
}

/// The message of a clap error, in the tool's words: `unknown option "--frob"`,
/// `--rounds: must be 1..=1000` (the value parser's own message after the option's
/// name), `--pipes needs a value`; clap's own sentence where there is no better one.
pub fn usage_message(e: &clap::Error) -> String {
    let text = |kind: ContextKind| -> Option<String> {
        match e.get(kind)? {
            ContextValue::String(s) => Some(s.clone()),
            ContextValue::Strings(v) => Some(v.join(", ")),
            ContextValue::StyledStr(s) => Some(s.to_string()),
            ContextValue::StyledStrs(v) => Some(
                v.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            ContextValue::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    // `--rounds <N>` names the option `--rounds`.
    let option = || {
        text(ContextKind::InvalidArg)
            .map(|a| a.split(' ').next().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    let suggestion =
        |kind: ContextKind| text(kind).map_or(String::new(), |s| format!("; did you mean {s:?}?"));
    let message = match e.kind() {
        ErrorKind::InvalidSubcommand => text(ContextKind::InvalidSubcommand).map(|c| {
            format!(
                "unknown command {c:?}{}",
                suggestion(ContextKind::SuggestedSubcommand)
            )
        }),
        ErrorKind::UnknownArgument => text(ContextKind::InvalidArg).map(|a| {
            let what = if a.starts_with('-') {
                "unknown option"
            } else {
                "unexpected argument"
            };
            format!("{what} {a:?}{}", suggestion(ContextKind::SuggestedArg))
        }),
        ErrorKind::ValueValidation => {
            std::error::Error::source(e).map(|why| format!("{}: {why}", option()))
        }
        ErrorKind::InvalidValue if text(ContextKind::InvalidValue).as_deref() == Some("") => {
            Some(format!("{} needs a value", option()))
        }
        ErrorKind::MissingRequiredArgument => {
            text(ContextKind::InvalidArg).map(|a| format!("missing {a}"))
        }
        ErrorKind::MissingSubcommand => Some("no command given".into()),
        _ => None,
    };
    message.unwrap_or_else(|| {
        // clap's first line, without its `error: `.
        let rendered = e.render().to_string();
        let first = rendered.lines().next().unwrap_or_default();
        first.strip_prefix("error: ").unwrap_or(first).to_string()
    })
}

/// The process's arguments, without the program name, to [`run`].
pub fn main() -> ExitCode {
    run(std::env::args().skip(1).collect())
}

/// Runs the command line `args` (without the program name) and returns the exit code:
/// 0 success, 1 failure, 2 bad arguments.
pub fn run(args: Vec<String>) -> ExitCode {
    let command = match parse(args) {
        Ok(Parsed::Run(c)) => c,
        Ok(Parsed::Show(command, text)) => return print_stdout(&command, &text),
        Err(e) => return usage_error(&e.command, &e.message),
    };
    match command {
        Command::Stat(a) => stat::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Bench(a) => crate::bench::run(*a),
        Command::LoopBench(a) => crate::loopbench::run(a),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "kevent", &mut script);
            print_stdout("completions", &String::from_utf8_lossy(&script))
        }
        Command::Help { .. } => unreachable!("parse answers help itself"),
    }
}

/// The help text of `command` as `kevent COMMAND --help` prints it (`kevent --help` for
/// ""), the long one; `None` for an unknown command.
pub fn help_of(command: &str) -> Option<String> {
    let args: Vec<String> = [command, "--help"]
        .into_iter()
        .filter(|a| !a.is_empty())
        .map(String::from)
        .collect();
    match parse(args) {
        Ok(Parsed::Show(_, text)) => Some(text),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{parse, Parsed, UsageError};

    fn err(args: &[&str]) -> UsageError {
        parse(args.iter().map(|s| s.to_string())).unwrap_err()
    }

    #[test]
    fn clap_errors_read_in_the_tools_words() {
        let cases: [(&[&str], &str, &str); 8] = [
            (&[], "", "no command given"),
            (&["frob"], "", "unknown command \"frob\""),
            (&["stat", "--frob"], "stat", "unknown option \"--frob\""),
            (&["demo", "extra"], "demo", "unexpected argument \"extra\""),
            (
                &["bench", "--rounds", "0"],
                "bench",
                "--rounds: must be 1..=1000",
            ),
            (&["demo", "--workers"], "demo", "--workers needs a value"),
            (&["completions"], "completions", "missing <SHELL>"),
            (
                &["--version", "stat"],
                "",
                "unexpected argument \"stat\" after --version",
            ),
        ];
        for (args, command, message) in cases {
            let e = err(args);
            assert_eq!(
                (e.command.as_str(), e.message.as_str()),
                (command, message),
                "{args:?}"
            );
        }
        assert!(err(&["bench", "--secnds", "1"])
            .message
            .contains("did you mean \"--seconds\""));
    }

    #[test]
    fn help_and_version_are_shown_not_run() {
        for args in [
            &["--help"][..],
            &["-h"],
            &["help"],
            &["help", "bench"],
            &["-V"],
        ] {
            let p = parse(args.iter().map(|s| s.to_string()));
            assert!(matches!(p, Ok(Parsed::Show(..))), "{args:?}: {p:?}");
        }
    }
}

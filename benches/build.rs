//! The commit the `kevent` tool is built from, for the `commit:` line of every report
//! (`KEVENT_COMMIT`, read by `bench::sysinfo`).
//!
//! Taken at build time from the source tree's own git checkout: `git rev-parse --short
//! HEAD`, with `-dirty` when the files that go into the build differ from it. Never a
//! guess: a tree that is not itself a git checkout (a `git archive` or package export,
//! even one unpacked inside another repository) says `unknown (built outside a git
//! checkout)`, and a checkout git cannot read says why. Cargo runs this again when HEAD
//! moves (a commit, a checkout), when the ref it points to moves, when the index
//! changes, and when a source file changes (for `-dirty`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// What goes into the tool, relative to the workspace root: what `-dirty` looks at.
const SOURCES: [&str; 10] = [
    "Cargo.toml",
    "Cargo.lock",
    "src",
    "ring/Cargo.toml",
    "ring/src",
    "syscalls-sim/Cargo.toml",
    "syscalls-sim/src",
    "benches/Cargo.toml",
    "benches/build.rs",
    "benches/src",
];

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest
        .parent()
        .expect("benches/ is in the workspace")
        .to_path_buf();
    println!("cargo:rerun-if-changed=build.rs");
    let commit = match commit(&root) {
        Ok(c) => c,
        Err(why) => format!("unknown ({why})"),
    };
    println!("cargo:rustc-env=KEVENT_COMMIT={commit}");
}

/// `git -C root ARGS`: its stdout, trimmed; `Err` with git's complaint.
fn git(root: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["--no-optional-locks"])
        .args(args)
        .output()
        .map_err(|e| format!("git: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(err.lines().next().unwrap_or("git failed").to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A path git names (`--git-path`, relative to `root` unless absolute).
fn git_path(root: &Path, name: &str) -> Option<PathBuf> {
    let p = PathBuf::from(git(root, &["rev-parse", "--git-path", name]).ok()?);
    Some(if p.is_absolute() { p } else { root.join(p) })
}

fn commit(root: &Path) -> Result<String, String> {
    let outside = || "built outside a git checkout".to_string();
    if !root.join(".git").exists() {
        return Err(outside());
    }
    // `.git` may be a directory or, in a worktree, a file naming one; either way the
    // checkout's top must be this very tree, not a repository around it.
    let top = git(root, &["rev-parse", "--show-toplevel"])?;
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same(Path::new(&top), root) {
        return Err(outside());
    }
    // Rebuild when HEAD moves: HEAD itself (a checkout), the branch it names (a commit),
    // packed refs (a `git gc` or a fetch may move the branch there), the index.
    let mut watched = vec!["HEAD".to_string(), "packed-refs".into(), "index".into()];
    if let Ok(branch) = git(root, &["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for name in &watched {
        if let Some(p) = git_path(root, name).filter(|p| p.exists()) {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    }
    for s in SOURCES {
        println!("cargo:rerun-if-changed={}", root.join(s).display());
    }
    let head = git(root, &["rev-parse", "--short", "HEAD"])?;
    // Untracked files count: a new module goes into the build as much as a changed one.
    let mut status = vec!["status", "--porcelain", "--"];
    status.extend(SOURCES);
    let dirty = !git(root, &status)?.is_empty();
    Ok(if dirty { format!("{head}-dirty") } else { head })
}

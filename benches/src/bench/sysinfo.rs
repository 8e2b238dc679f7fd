//! The machine, kernel and source version printed with every result.

use std::ffi::CStr;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where and on what a benchmark ran.
#[derive(Debug, Clone)]
pub struct SysInfo {
    /// CPU model name from `/proc/cpuinfo`.
    pub cpu: String,
    /// Online CPUs available to us.
    pub nproc: usize,
    /// `uname -srvm`.
    pub kernel: String,
    /// The commit the tool was built from (`git rev-parse --short HEAD` at build time,
    /// `-dirty` if its sources differed from it), or `unknown (why)`: see `build.rs`.
    pub commit: String,
    /// Start time, UTC, ISO 8601.
    pub date: String,
}

impl SysInfo {
    /// Gathers the information (never fails: unknown parts say "unknown").
    pub fn gather() -> SysInfo {
        SysInfo {
            cpu: cpu_model().unwrap_or_else(|| "unknown".into()),
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel: kernel().unwrap_or_else(|| "unknown".into()),
            commit: COMMIT.to_string(),
            date: utc_now(),
        }
    }
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

fn kernel() -> Option<String> {
    // SAFETY: `utsname` is plain old data, valid when zeroed.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable `struct utsname`.
    if unsafe { libc::uname(&mut u) } != 0 {
        return None;
    }
    let field = |f: &[libc::c_char]| {
        // SAFETY: the kernel NUL-terminates every utsname field within its array.
        unsafe { CStr::from_ptr(f.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    };
    Some(format!(
        "{} {} {} {}",
        field(&u.sysname),
        field(&u.release),
        field(&u.version),
        field(&u.machine)
    ))
}

/// The commit of the build (`build.rs`).
pub const COMMIT: &str = env!("KEVENT_COMMIT");

/// Now as `YYYY-MM-DD hh:mm:ss UTC` (civil-from-days, H. Hinnant's algorithm).
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_commit_is_a_hash_or_says_why_it_is_unknown() {
        let c = super::COMMIT;
        let hash = c.strip_suffix("-dirty").unwrap_or(c);
        assert!(
            (hash.len() >= 7 && hash.chars().all(|x| x.is_ascii_hexdigit()))
                || (c.starts_with("unknown (") && c.ends_with(')')),
            "{c}"
        );
    }

    #[test]
    fn utc_date_has_iso_shape() {
        let d = super::utc_now();
        assert_eq!(d.len(), 23, "{d}");
        assert!(d.ends_with(" UTC"));
    }
}

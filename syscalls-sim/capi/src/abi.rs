//! `kevent_abi()` (ext): the library's own ABI as a table of (name, value) — every
//! `KEVENT_*` constant as `kevent-syscalls` defines it, and the `sizeof`/`offsetof` of
//! every struct `kevent.h` declares, as the Rust side lays it out. `tests/c/layout.c`
//! compares each with what the header gives the C compiler, so the hand-written header
//! cannot drift from the Rust code; a test below checks that the table names every
//! constant of `kevent-syscalls`' `abi.rs`.

use std::mem::{offset_of, size_of};
use std::os::raw::c_char;

use kevent_ring::Ukevent;
use kevent_syscalls::abi::*;

use crate::timeout::TIMEOUT_INFINITE_SEC;
use crate::view::KeventRing;

/// `struct kevent_abi_entry`.
#[repr(C)]
pub struct KeventAbiEntry {
    /// A NUL-terminated, static name.
    pub name: *const c_char,
    /// Its value (a negative constant as its two's complement).
    pub value: u64,
}

// SAFETY: `name` points to a static, immutable string: sharing it between threads is
// sharing a `&'static str`.
unsafe impl Sync for KeventAbiEntry {}

const fn entry(name: &'static str, value: u64) -> KeventAbiEntry {
    KeventAbiEntry {
        name: name.as_ptr().cast(),
        value,
    }
}

/// The table: constants named as themselves, then layout facts as `sizeof(...)` and
/// `offsetof(...)`.
macro_rules! table {
    (constants: $($c:ident),* ; layout: $(($n:literal, $v:expr)),* $(,)?) => {
        [
            $(entry(concat!(stringify!($c), "\0"), $c as u64),)*
            $(entry(concat!($n, "\0"), $v as u64),)*
        ]
    };
}

/// `KEVENT_MAX_RING_SIZE` (ext): the largest ring.
const KEVENT_MAX_RING_SIZE: u32 = kevent_ring::layout::MAX_CAPACITY;
/// `KEVENT_TIMEOUT_INFINITE_SEC` (ext).
const KEVENT_TIMEOUT_INFINITE_SEC: i64 = TIMEOUT_INFINITE_SEC;

/// Every entry. `struct kevent_id` is `Ukevent::id` (a `u64` the C side also reads as
/// `raw[2]`); `ptr` shares `user`'s place.
static TABLE: [KeventAbiEntry; 69] = table! {
    constants:
        KEVENT_CTL_ADD, KEVENT_CTL_REMOVE, KEVENT_CTL_MODIFY, KEVENT_CTL_READY,
        KEVENT_SOCKET, KEVENT_INODE, KEVENT_TIMER, KEVENT_POLL, KEVENT_NAIO, KEVENT_AIO,
        KEVENT_PIPE, KEVENT_SIGNAL, KEVENT_POSIX_TIMER, KEVENT_USER, KEVENT_MAX,
        KEVENT_REQ_ONESHOT, KEVENT_REQ_WAKEUP_ALL, KEVENT_REQ_ET, KEVENT_REQ_LAST_CHECK,
        KEVENT_REQ_ALWAYS_QUEUE, KEVENT_REQ_ALL,
        KEVENT_RET_BROKEN, KEVENT_RET_DONE, KEVENT_RET_COPY_FAILED, KEVENT_RET_REDELIVERED,
        KEVENT_SOCKET_RECV, KEVENT_SOCKET_ACCEPT, KEVENT_SOCKET_SEND, KEVENT_PIPE_READ,
        KEVENT_PIPE_WRITE, KEVENT_TIMER_FIRED, KEVENT_TIMER_ONCE, KEVENT_TIMER_ABSTIME,
        KEVENT_INODE_CREATE, KEVENT_INODE_REMOVE, KEVENT_SIGNAL_DELIVERY,
        KEVENT_SIGNAL_NOMASK, KEVENT_USER_READY,
        KEVENT_POLL_POLLIN, KEVENT_POLL_POLLPRI, KEVENT_POLL_POLLOUT, KEVENT_POLL_POLLERR,
        KEVENT_POLL_POLLHUP, KEVENT_POLL_POLLRDHUP,
        KEVENT_FLAGS_ABSTIME, KEVENT_MAX_EVENTS, KEVENT_DEFAULT_RING,
        KEVENT_MAX_RING_SIZE, KEVENT_TIMEOUT_INFINITE_SEC;
    layout:
        ("sizeof(struct kevent_id)", size_of::<u64>()),
        ("offsetof(struct kevent_id, raw)", 0),
        ("offsetof(struct kevent_id, raw_u64)", 0),
        ("sizeof(struct ukevent)", size_of::<Ukevent>()),
        ("offsetof(struct ukevent, id)", offset_of!(Ukevent, id)),
        ("offsetof(struct ukevent, type)", offset_of!(Ukevent, type_)),
        ("offsetof(struct ukevent, event)", offset_of!(Ukevent, event)),
        ("offsetof(struct ukevent, req_flags)", offset_of!(Ukevent, req_flags)),
        ("offsetof(struct ukevent, ret_flags)", offset_of!(Ukevent, ret_flags)),
        ("offsetof(struct ukevent, ret_data)", offset_of!(Ukevent, ret_data)),
        ("offsetof(struct ukevent, user)", offset_of!(Ukevent, user)),
        ("offsetof(struct ukevent, ptr)", offset_of!(Ukevent, user)),
        ("sizeof(struct kevent_ring)", size_of::<KeventRing>()),
        ("offsetof(struct kevent_ring, ring_kidx)", offset_of!(KeventRing, ring_kidx)),
        ("offsetof(struct kevent_ring, ring_over)", offset_of!(KeventRing, ring_over)),
        ("offsetof(struct kevent_ring, event)", offset_of!(KeventRing, event)),
        ("sizeof(struct kevent_abi_entry)", size_of::<KeventAbiEntry>()),
        ("offsetof(struct kevent_abi_entry, name)", offset_of!(KeventAbiEntry, name)),
        ("offsetof(struct kevent_abi_entry, value)", offset_of!(KeventAbiEntry, value)),
        ("sizeof(struct timespec)", size_of::<libc::timespec>()),
};

/// `kevent_abi(count)` (ext): see `kevent.h`. Stores the number of entries in `*count`
/// (unless `count` is NULL) and returns the table, which lives as long as the library.
///
/// # Safety
/// `count` is NULL or points to a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn kevent_abi(count: *mut usize) -> *const KeventAbiEntry {
    if !count.is_null() {
        // SAFETY: non-NULL and writable: the caller's promise.
        unsafe { count.write(TABLE.len()) };
    }
    TABLE.as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn names() -> Vec<String> {
        TABLE
            .iter()
            .map(|e| {
                // SAFETY: every name is a static NUL-terminated string (`entry`).
                unsafe { CStr::from_ptr(e.name) }
                    .to_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn the_table_names_every_constant_of_the_rust_abi() {
        let abi = include_str!("../../src/abi.rs");
        let names = names();
        let mut seen = 0;
        for line in abi.lines() {
            let Some(rest) = line.trim_start().strip_prefix("pub const ") else {
                continue;
            };
            let name = rest.split(':').next().unwrap().trim();
            assert!(
                names.iter().any(|n| n == name),
                "{name} is not in kevent_abi()"
            );
            seen += 1;
        }
        assert!(seen >= 45, "abi.rs parsed wrongly: {seen} constants");
    }

    #[test]
    fn names_are_unique_and_values_are_the_rust_ones() {
        let names = names();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        let value = |n: &str| TABLE[names.iter().position(|x| x == n).unwrap()].value;
        assert_eq!(value("KEVENT_SIGNAL_NOMASK"), 1 << 63);
        assert_eq!(value("KEVENT_TIMEOUT_INFINITE_SEC"), u64::MAX);
        assert_eq!(value("sizeof(struct ukevent)"), 40);
        assert_eq!(value("offsetof(struct kevent_ring, event)"), 8);
    }
}

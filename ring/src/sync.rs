//! The one place the ring takes its atomics from.
//!
//! Under `--cfg loom` every atomic, fence and spin hint comes from `loom`, so the
//! protocol (`producer.rs`, `consumer.rs`, `wake/`) is model-checked
//! exactly as it is compiled for real use. Loom atomics cannot live in mmap'd memory, so
//! under loom only the heap-backed ring (`Ring::heap`) exists: `memfd.rs` is not
//! compiled.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};

/// A CPU hint inside a spin loop (under loom: a scheduler yield, so models terminate).
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    core::hint::spin_loop();
}

//! kevent: a user-space reimplementation of Linux kevent (placeholder root; the safe API lands with issue 6).

pub mod bench;

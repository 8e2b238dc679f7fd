//! The benchmark harness behind `kevent bench` (being written).

//! Per-thread totals of bytes received and sent through [`recv`](super::recv),
//! [`send`](super::send) and [`send_vectored`](super::send_vectored), and of connections taken
//! by [`accept`](super::accept): plain thread-local cells, read by the reactor of the thread
//! for its statistics. No unsafe code.

use std::cell::Cell;

thread_local! {
    static READ: Cell<u64> = const { Cell::new(0) };
    static WRITTEN: Cell<u64> = const { Cell::new(0) };
    static ACCEPTED: Cell<u64> = const { Cell::new(0) };
}

pub(super) fn add_read(n: usize) {
    READ.with(|c| c.set(c.get().wrapping_add(n as u64)));
}

pub(super) fn add_written(n: usize) {
    WRITTEN.with(|c| c.set(c.get().wrapping_add(n as u64)));
}

pub(super) fn add_accepted() {
    ACCEPTED.with(|c| c.set(c.get().wrapping_add(1)));
}

/// This thread's totals so far: (bytes read, bytes written, connections accepted).
pub(crate) fn io_totals() -> (u64, u64, u64) {
    (
        READ.with(Cell::get),
        WRITTEN.with(Cell::get),
        ACCEPTED.with(Cell::get),
    )
}

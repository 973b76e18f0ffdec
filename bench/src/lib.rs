//! Shared pieces of the benchmark binaries: thin syscall wrappers (the load generator and the
//! raw epoll server are written straight on them), a tiny flag parser, and readers for another
//! process's CPU time and resident memory.
//!
//! Nothing here is part of torsion; see `bench/README.md` for the harness as a whole.

pub mod args;
pub mod procinfo;
pub mod sys;

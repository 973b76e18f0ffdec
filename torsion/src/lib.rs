//! # torsion
//!
//! Twisted's event-driven networking model in Rust: a reactor (one event loop per thread, with
//! select, poll and epoll backends chosen at run time), transports, protocols and factories,
//! Deferreds, and a testing kit that runs protocols without sockets or sleeps.
//!
//! Start with [`Reactor`].
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod defer;
pub mod error;
pub mod task;
pub mod testing;
pub mod time;

pub use defer::{Deferred, Failure};
pub use error::{Error, Reason};
pub use time::{DelayedCall, DelayedCallError, ReactorTime};

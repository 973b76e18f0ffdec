//! # torsion
//!
//! Twisted's event-driven networking model in Rust: a reactor (one event loop per thread, with
//! select, poll, epoll and io_uring backends chosen at run time; on io_uring, TCP runs on
//! completions), transports, protocols and factories, Deferreds, and a testing kit that runs
//! protocols without sockets or sleeps.
//!
//! Start with [`Reactor`]. Coming from Twisted: [`twisted`] maps Twisted's names to torsion's.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod defer;
pub mod endpoints;
pub mod error;
mod flow;
pub mod interfaces;
pub mod process;
pub mod protocols;
pub mod service;
pub mod stdio;
pub mod task;
pub mod testing;
pub mod time;
pub mod twisted;

pub use defer::{Deferred, Failure};
pub use error::{ConnectError, Error, Reason};
pub use time::{DelayedCall, DelayedCallError, ReactorTime};

pub mod poller;
pub mod protocol;
pub mod reactor;
mod sys;
pub mod tcp;
pub mod udp;
pub mod unix;

pub use interfaces::{
    Address, ClientFactory, Connector, Consumer, Context, HalfClose, ListeningPort, Producer,
    Protocol, ProtocolFactory, ReactorTcp, TcpOptions, Transport, TransportImpl,
};
pub use interfaces::{PeerCredentials, ReactorUnix, UnixTransport};
pub use poller::Backend;
pub use protocol::Factory;
pub use reactor::{FileDescriptor, Handle, Reactor, Readiness, Registration, Task};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

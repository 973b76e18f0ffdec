//! The testing kit: a fake clock, and helpers that run one test against every backend.
//!
//! Protocols and time-driven code are tested here without sockets and without sleeping.

mod clock;

pub use clock::Clock;

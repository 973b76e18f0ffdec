//! Ready-made protocols and protocol wrappers, Twisted's `twisted.protocols`: [`basic`] framing
//! (lines, length prefixes, netstrings) and [`policies`] (timeouts, throttling, limits).

pub mod basic;
pub mod policies;

//! # poetry
//!
//! The "Get Poetry Now!" programs of Dave Peticolas's twisted-intro tutorial, on torsion:
//!
//! * [`server`]: the slow poetry server, which sends a poem a few bytes at a time;
//! * [`client`]: the client that fetches poems from several servers at once, in each of the
//!   tutorial's styles (blocking, select(), protocols on the reactor, Deferreds, async/await);
//! * [`demo`]: three slow servers and two clients in one process, to show in seconds why the
//!   asynchronous client is faster;
//! * [`poems`]: the tutorial's four public-domain poems, embedded.
//!
//! The `poetry` binary is the command line over these (`poetry serve`, `poetry get`,
//! `poetry demo`).
#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod address;
pub mod client;
pub mod demo;
pub mod poems;
pub mod progress;
pub mod proxy;
pub mod server;
pub mod sys;
pub mod timedelta;
pub mod transform;

pub use address::Address;
pub use client::{get_poetry, Download, Fetched, GetOptions, Model};
pub use server::{PoetryServer, ServeOptions};

//! The async example of the README: an async main on the reactor (Twisted's `task.react`).
//!
//! Run with `cargo run -p torsion --example deferred_async`; with the argument `fail` the main
//! function fails, and the process prints the failure and exits non-zero.

use std::process::ExitCode;
use std::time::Duration;
use torsion::{defer::Failure, task};

fn main() -> ExitCode {
    let fail = std::env::args().nth(1).as_deref() == Some("fail");
    task::react(move |reactor| async move {
        let greeting = task::defer_later(&reactor, Duration::from_millis(10), || {
            Ok("hello from the reactor")
        })
        .await?;
        println!("{greeting}");
        if fail {
            return Err(Failure::msg("main was asked to fail"));
        }
        Ok(())
    })
}

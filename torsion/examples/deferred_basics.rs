//! The Deferred example of the README: a typed callback/errback chain.
//!
//! Run with `cargo run -p torsion --example deferred_basics`.

use torsion::defer::{Deferred, Failure};

/// Something that will have a price later (here: fired by hand below).
fn price_of(_item: &str) -> (Deferred<u32>, torsion::defer::Resolver<u32>) {
    Deferred::new()
}

fn main() {
    let (price, fire) = price_of("apples");
    let label = price
        .add_callback(|cents| Ok(cents * 2)) // u32 -> u32
        .add_callback(|cents| {
            if cents > 10_000 {
                Err(Failure::msg("too expensive")) // goes to the next errback
            } else {
                Ok(format!("{}.{:02} EUR", cents / 100, cents % 100)) // u32 -> String
            }
        })
        .add_errback(|f: Failure| Ok(format!("no price ({})", f.message())));

    fire.callback(1_234).unwrap(); // the chain runs now
    let text = label.try_result().expect("fired").expect("recovered");
    assert_eq!(text, "24.68 EUR");
    println!("{text}");
}

//! The Deferred client (`twisted-client-4`): `get_poetry` returns a Deferred that fires with
//! the poem (or fails); the main code adds `got_poem`/`poem_failed` to each and gathers them
//! in a DeferredList whose callback stops the reactor.

use std::rc::Rc;

use torsion::defer::{DeferredList, Failure, Resolver};
use torsion::{Context, Deferred, Factory, Protocol, Reactor, Reason};

use super::limits::Limited;
use super::{Collector, GetOptions};
use crate::Address;

/// Accumulates the poem and fires the Deferred with it when the server closes.
struct PoetryProtocol {
    poem: Vec<u8>,
    poem_received: Resolver<Vec<u8>>,
    on_bytes: Rc<dyn Fn(usize)>,
}

impl Protocol for PoetryProtocol {
    fn data_received(&mut self, _: &mut Context<'_>, data: &[u8]) {
        self.poem.extend_from_slice(data);
        (self.on_bytes)(data.len());
    }

    fn connection_lost(&mut self, _cx: &mut Context<'_>, reason: Reason) {
        let _ = if reason.is_clean() {
            self.poem_received.callback(std::mem::take(&mut self.poem))
        } else {
            self.poem_received.errback(Failure::new(reason))
        };
    }
}

/// Downloads a poem from `address`: a Deferred that fires with the poem, or fails with the
/// connection's [`Reason`] (the tutorial's `get_poetry(host, port)`), within `opts`'s connect
/// timeout and [`Limits`](super::Limits). `on_bytes` sees each chunk's size as it arrives.
pub fn get_poetry(
    reactor: &Reactor,
    address: &Address,
    opts: &GetOptions,
    on_bytes: Rc<dyn Fn(usize)>,
) -> Deferred<Vec<u8>> {
    let (d, fire) = Deferred::new();
    let factory = Factory::with_state(fire, move |resolver, _| PoetryProtocol {
        poem: Vec::new(),
        poem_received: (**resolver).clone(),
        on_bytes: on_bytes.clone(),
    })
    .on_client_connection_failed(|resolver, _, reason| {
        let _ = resolver.errback(Failure::new(reason));
    });
    let factory = Limited::factory(factory, opts.limits);
    reactor.connect_tcp(&address.host, address.port, factory, opts.timeout);
    d
}

pub(super) fn start(
    reactor: &Reactor,
    tasks: &[Address],
    opts: &GetOptions,
    collector: &Rc<Collector>,
) {
    let poems = tasks.iter().enumerate().map(|(task, address)| {
        let c = collector.clone();
        let on_bytes: Rc<dyn Fn(usize)> = Rc::new(move |n| c.bytes(task, n));
        let (got, failed) = (collector.clone(), collector.clone());
        let (r, o) = (reactor.clone(), opts.clone());
        get_poetry(reactor, address, opts, on_bytes)
            .add_callback_deferred(move |poem| super::maybe_transform(&r, &o, task, poem))
            .add_callbacks(
                move |poem| {
                    got.record(task, Ok(poem)); // got_poem
                    Ok(())
                },
                move |err: Failure| {
                    failed.record(task, Err(torsion::error::Chain(err.error()).to_string())); // poem_failed
                    Ok(())
                },
            )
    });
    let r = reactor.clone();
    let all = DeferredList::new(poems.collect::<Vec<_>>())
        .into_deferred()
        .map(move |_| {
            let _ = r.stop();
        });
    // Nothing fails past the errbacks above; the list fires once every poem is in.
    drop(all);
}

//! The Twisted client (`twisted-client-1`): a protocol per connection accumulates the poem;
//! a client factory per task reports a failed connection. The last download to finish stops
//! the reactor.

use std::rc::Rc;

use torsion::{Context, Factory, Protocol, Reactor, Reason};

use super::limits::Limited;
use super::{Collector, GetOptions};
use crate::Address;

/// One connection's protocol: the poem so far (Twisted's `PoetryProtocol`).
struct PoetryProtocol {
    task: usize,
    poem: Vec<u8>,
    collector: Rc<Collector>,
}

impl Protocol for PoetryProtocol {
    fn data_received(&mut self, _: &mut Context<'_>, data: &[u8]) {
        self.poem.extend_from_slice(data);
        self.collector.bytes(self.task, data.len());
    }

    fn connection_lost(&mut self, _cx: &mut Context<'_>, reason: Reason) {
        let poem = std::mem::take(&mut self.poem);
        let result = if reason.is_clean() {
            Ok(poem)
        } else {
            Err(torsion::error::Chain(&reason).to_string())
        };
        self.collector.done(self.task, result);
    }
}

pub(super) fn start(
    reactor: &Reactor,
    tasks: &[Address],
    opts: &GetOptions,
    collector: &Rc<Collector>,
) {
    for (task, address) in tasks.iter().enumerate() {
        let factory = Factory::with_state(collector.clone(), move |collector, _| PoetryProtocol {
            task,
            poem: Vec::new(),
            collector: (**collector).clone(),
        })
        .on_client_connection_failed(move |collector, _, reason| {
            collector.done(task, Err(torsion::error::Chain(&reason).to_string()));
        });
        let factory = Limited::factory(factory, opts.limits);
        reactor.connect_tcp(&address.host, address.port, factory, opts.timeout);
    }
}

//! The async client (the tutorial's `inlineCallbacks` version, as async/await): one `async`
//! function per poem awaits a Deferred for each chunk from a [`DeferredQueue`] that its
//! protocol fills; the main future awaits every download, then stops the reactor.

use std::rc::Rc;

use torsion::defer::{ensure_deferred, DeferredQueue, Failure};
use torsion::{Factory, Protocol, Reactor, Reason, Transport};

use super::{Collector, GetOptions};
use crate::Address;

/// What the protocol hands the download's future.
enum Chunk {
    Data(Vec<u8>),
    End(Reason),
}

/// Puts each chunk into the queue, then the end of the stream.
struct Feeder(DeferredQueue<Chunk>);

impl Protocol for Feeder {
    fn data_received(&mut self, _: &Transport, data: &[u8]) {
        let _ = self.0.put(Chunk::Data(data.to_vec()));
    }

    fn connection_lost(&mut self, reason: Reason) {
        let _ = self.0.put(Chunk::End(reason));
    }
}

/// Downloads one poem: connect, then await chunks until the server closes.
async fn get_poetry(
    reactor: Reactor,
    address: Address,
    opts: GetOptions,
    task: usize,
    collector: Rc<Collector>,
) -> Result<Vec<u8>, Failure> {
    let chunks = DeferredQueue::new();
    let factory = Factory::with_state(chunks.clone(), |q, _| Feeder((**q).clone()))
        .on_client_connection_failed(|q, _, reason| {
            let _ = q.put(Chunk::End(reason));
        });
    reactor.connect_tcp(&address.host, address.port, factory, opts.timeout);
    let mut poem = Vec::new();
    loop {
        match chunks.get().map_err(Failure::new)?.await? {
            Chunk::Data(bytes) => {
                collector.bytes(task, bytes.len());
                poem.extend_from_slice(&bytes);
            }
            Chunk::End(reason) if reason.is_clean() => return Ok(poem),
            Chunk::End(reason) => return Err(Failure::new(reason)),
        }
    }
}

pub(super) fn start(
    reactor: &Reactor,
    tasks: &[Address],
    opts: &GetOptions,
    collector: &Rc<Collector>,
) {
    let downloads: Vec<_> = tasks
        .iter()
        .enumerate()
        .map(|(task, address)| {
            let download = get_poetry(
                reactor.clone(),
                address.clone(),
                opts.clone(),
                task,
                collector.clone(),
            );
            let collector = collector.clone();
            ensure_deferred(reactor, async move {
                let poem = download.await.map_err(|f| f.message());
                collector.record(task, poem);
                Ok(())
            })
        })
        .collect();
    let r = reactor.clone();
    reactor.spawn_local(async move {
        for download in downloads {
            let _ = download.await;
        }
        let _ = r.stop();
    });
}

//! The async client (the tutorial's `inlineCallbacks` version, as async/await): one `async`
//! function per poem awaits a Deferred for each chunk from a [`DeferredQueue`] that its
//! protocol fills; the main future awaits every download, then stops the reactor.

use std::rc::Rc;

use torsion::defer::{ensure_deferred, DeferredQueue, Failure};
use torsion::{Context, Factory, Protocol, Reactor, Reason};

use super::limits::Limited;
use super::{Collector, GetOptions};
use crate::Address;

/// What the protocol hands the download's future.
enum Chunk {
    Data(Vec<u8>),
    /// The end of the stream: clean, or why not (a lost connection or a failed connect).
    End(Result<(), Failure>),
}

/// Puts each chunk into the queue, then the end of the stream.
struct Feeder(DeferredQueue<Chunk>);

impl Protocol for Feeder {
    fn data_received(&mut self, _: &mut Context<'_>, data: &[u8]) {
        let _ = self.0.put(Chunk::Data(data.to_vec()));
    }

    fn connection_lost(&mut self, _: &mut Context<'_>, reason: Reason) {
        let end = if reason.is_clean() {
            Ok(())
        } else {
            Err(Failure::new(reason))
        };
        let _ = self.0.put(Chunk::End(end));
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
            let _ = q.put(Chunk::End(Err(Failure::new(reason))));
        });
    let factory = Limited::factory(factory, opts.limits);
    reactor.connect_tcp(&address.host, address.port, factory, opts.timeout);
    let mut poem = Vec::new();
    loop {
        match chunks.get().map_err(Failure::new)?.await? {
            Chunk::Data(bytes) => {
                collector.bytes(task, bytes.len());
                poem.extend_from_slice(&bytes);
            }
            Chunk::End(end) => return end.map(|()| poem),
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
            let (r, o) = (reactor.clone(), opts.clone());
            ensure_deferred(reactor, async move {
                let poem = match download.await {
                    Ok(poem) => super::maybe_transform(&r, &o, task, poem).await,
                    Err(f) => Err(f),
                }
                .map_err(|f| torsion::error::Chain(f.error()).to_string());
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

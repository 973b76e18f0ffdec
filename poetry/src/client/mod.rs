//! The "Get Poetry Now!" client, in the tutorial's successive styles ([`Model`]).
//!
//! Every model downloads the same poems from the same servers and reports them the way the
//! tutorial's program of that style did:
//!
//! * [`Model::Blocking`] (`blocking-client/get-poetry.py`): one poem after the other, with
//!   blocking sockets. Prints `Task N: get poetry from: ADDR` before each download and
//!   `Task N: got LEN bytes of poetry from ADDR in 0:00:03.072771` after it.
//! * [`Model::Select`] (`async-client/get-poetry.py`, the article's select() loop): non-blocking
//!   sockets read when the reactor reports them readable (`add_reader`), no protocols.
//! * [`Model::Reactor`] (`twisted-client-1`): a [`Protocol`](torsion::Protocol) per connection
//!   and a client factory per task; the last one to finish stops the reactor.
//! * [`Model::Deferred`] (`twisted-client-3`/`4`): `get_poetry` returns a
//!   [`Deferred`](torsion::Deferred) per poem, with `got_poem`/`poem_failed` callbacks, gathered
//!   in a [`DeferredList`](torsion::defer::DeferredList).
//! * [`Model::Async`] (the tutorial's `inlineCallbacks` client): an `async` function per poem
//!   awaiting a Deferred per chunk; the main future awaits them all.
//!
//! The non-blocking models print `Task N: LEN bytes of poetry` for each poem once all are in.
//! Every model ends with `Got K poems in ELAPSED` (K counts the poems received) and prints
//! `Poem failed: ...` on stderr for a download that failed, going on with the others.
//! Poems are kept as bytes and never decoded piecewise, so a multi-byte character split across
//! two chunks arrives intact.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use crate::timedelta::format_timedelta;
use torsion::Reactor;

use crate::progress::Progress;
use crate::transform::{transform_poem, Transform};
use crate::Address;

mod asynchronous;
mod blocking;
mod deferred;
mod limits;
mod protocol;
mod select;

pub use limits::Limits;

/// The client's style: the tutorial's successive versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Model {
    /// Blocking sockets, one poem after the other.
    Blocking,
    /// The article's select() loop: raw sockets on the reactor.
    Select,
    /// Protocols and client factories on the reactor (the fastest; the default).
    #[default]
    Reactor,
    /// A Deferred per poem, gathered with a DeferredList.
    Deferred,
    /// async/await on the reactor, awaiting Deferreds.
    Async,
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Model::Blocking => "blocking",
            Model::Select => "select",
            Model::Reactor => "reactor",
            Model::Deferred => "deferred",
            Model::Async => "async",
        })
    }
}

/// How to run the client.
#[derive(Debug, Clone)]
pub struct GetOptions {
    /// The style of client.
    pub model: Model,
    /// Connections per address (default 1).
    pub repeat: usize,
    /// Print the poems after the report.
    pub show: bool,
    /// Live progress bars on stderr (the CLI turns them on when stdout is a terminal).
    pub progress: bool,
    /// Give up connecting after this long (default 30 s, as Twisted's `connectTCP`).
    pub timeout: Duration,
    /// What one download may cost: a silent server fails it after an idle timeout, an endless
    /// one past a maximum size.
    pub limits: Limits,
    /// Send each poem to a transformation server (the tutorial's client 7.0); the Deferred and
    /// async models only.
    pub transform: Option<TransformOptions>,
}

/// Where and how to transform the poems (`poetry get --transform`).
#[derive(Debug, Clone)]
pub struct TransformOptions {
    /// The transformation server.
    pub server: Address,
    /// The transform to ask for.
    pub transform: Transform,
}

impl Default for GetOptions {
    fn default() -> Self {
        GetOptions {
            model: Model::default(),
            repeat: 1,
            show: false,
            progress: false,
            timeout: Duration::from_secs(30),
            limits: Limits::default(),
            transform: None,
        }
    }
}

/// One download's outcome.
#[derive(Debug, Clone)]
pub struct Download {
    /// The task number (from 1, in argument order; repeats of an address are consecutive).
    pub task: usize,
    /// Where the poem came from.
    pub address: Address,
    /// The poem's bytes, or why it failed.
    pub poem: Result<Vec<u8>, String>,
    /// For the blocking model, how long this download took; for the others, how long after
    /// the start it finished.
    pub elapsed: Duration,
}

/// What a client run got.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The model that ran.
    pub model: Model,
    /// Every task, in task order.
    pub downloads: Vec<Download>,
    /// The time printed in `Got K poems in ...`: the wall time, or for the blocking model the
    /// sum of the downloads' times (as the original).
    pub elapsed: Duration,
}

impl Fetched {
    /// Poems received.
    pub fn poems(&self) -> usize {
        self.downloads.iter().filter(|d| d.poem.is_ok()).count()
    }

    /// Downloads that failed.
    pub fn failures(&self) -> usize {
        self.downloads.len() - self.poems()
    }
}

/// The tasks: `repeat` of each address, in argument order.
fn tasks(addresses: &[Address], repeat: usize) -> Vec<Address> {
    addresses
        .iter()
        .flat_map(|a| std::iter::repeat_n(a, repeat.max(1)))
        .cloned()
        .collect()
}

fn failed_line(task: usize, address: &Address, why: &str) -> String {
    format!("Poem failed: Task {task} from {address}: {why}")
}

/// Downloads a poem from each address (`repeat` times) in the style of `opts.model`, printing
/// the report on `out` and failures on stderr.
///
/// # Errors
/// Writing to `out` failed, or the reactor could not be created or run.
pub fn get_poetry(
    addresses: &[Address],
    opts: &GetOptions,
    out: &mut dyn Write,
) -> io::Result<Fetched> {
    if opts.transform.is_some() && !matches!(opts.model, Model::Deferred | Model::Async) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "--transform needs --model deferred or --model async (not {})",
                opts.model
            ),
        ));
    }
    let tasks = tasks(addresses, opts.repeat);
    let labels: Vec<String> = tasks.iter().map(Address::to_string).collect();
    let progress = Progress::new(opts.progress, &labels);
    if opts.model == Model::Blocking {
        return blocking::run(&tasks, opts, progress, out);
    }
    let start = Instant::now();
    let reactor = Reactor::new().map_err(io::Error::other)?;
    let collector = Collector::new(&reactor, &tasks, progress);
    let collector = std::rc::Rc::new(collector);
    match opts.model {
        Model::Blocking => unreachable!("handled above"),
        Model::Select => select::start(&reactor, &tasks, opts, &collector)?,
        Model::Reactor => protocol::start(&reactor, &tasks, opts, &collector),
        Model::Deferred => deferred::start(&reactor, &tasks, opts, &collector),
        Model::Async => asynchronous::start(&reactor, &tasks, opts, &collector),
    }
    if collector.remaining.get() > 0 {
        reactor.run().map_err(io::Error::other)?;
    }
    let elapsed = start.elapsed();
    collector.progress.clear();
    let downloads = collector.take_downloads(start);
    let fetched = Fetched {
        model: opts.model,
        downloads,
        elapsed,
    };
    for d in &fetched.downloads {
        if let Ok(poem) = &d.poem {
            writeln!(out, "Task {}: {} bytes of poetry", d.task, poem.len())?;
            if opts.show {
                show(out, poem)?;
            }
        }
    }
    writeln!(
        out,
        "Got {} poems in {}",
        fetched.poems(),
        format_timedelta(elapsed)
    )?;
    out.flush()?;
    Ok(fetched)
}

/// Downloads one poem from `address` on `reactor`, within `opts`'s connect timeout and limits:
/// a Deferred that fires with the poem or fails (what the proxy fetches upstream with).
pub fn fetch_poem(
    reactor: &Reactor,
    address: &Address,
    opts: &GetOptions,
) -> torsion::Deferred<Vec<u8>> {
    deferred::get_poetry(reactor, address, opts, std::rc::Rc::new(|_| {}))
}

/// With `opts.transform`, the poem transformed by the server, or the original poem (and a line
/// on stderr) when the transform fails (the tutorial's client 7.0). Without, the poem.
pub(crate) fn maybe_transform(
    reactor: &Reactor,
    opts: &GetOptions,
    task: usize,
    poem: Vec<u8>,
) -> torsion::Deferred<Vec<u8>> {
    let Some(t) = &opts.transform else {
        return torsion::Deferred::succeed(poem);
    };
    let transform = t.transform;
    transform_poem(
        reactor,
        &t.server,
        transform,
        &poem,
        opts.timeout,
        opts.limits.max_poem,
    )
    .add_errback(move |why| {
        eprintln!(
            "Task {}: {transform} failed ({}); keeping the original poem.",
            task + 1,
            torsion::error::Chain(why.error())
        );
        Ok(poem)
    })
}

/// Prints a poem exactly as received (its bytes, no decoding), ending with a newline.
fn show(out: &mut dyn Write, poem: &[u8]) -> io::Result<()> {
    out.write_all(poem)?;
    if !poem.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// A task's outcome and the time it came.
type Finished = (Result<Vec<u8>, String>, Instant);

/// Where the reactor-based models put their results; the last one in stops the reactor.
pub(crate) struct Collector {
    reactor: Reactor,
    addresses: Vec<Address>,
    /// By task: the poem (or why not) and when it finished.
    results: RefCell<Vec<Option<Finished>>>,
    remaining: Cell<usize>,
    progress: Progress,
}

impl Collector {
    fn new(reactor: &Reactor, tasks: &[Address], progress: Progress) -> Collector {
        Collector {
            reactor: reactor.clone(),
            addresses: tasks.to_vec(),
            results: RefCell::new(vec![None; tasks.len()]),
            remaining: Cell::new(tasks.len()),
            progress,
        }
    }

    /// Task `task` (0-based) received `n` more bytes.
    pub(crate) fn bytes(&self, task: usize, n: usize) {
        self.progress.add(task, n);
    }

    /// Task `task` (0-based) is over; stops the reactor if it was the last one.
    pub(crate) fn done(&self, task: usize, poem: Result<Vec<u8>, String>) {
        self.record(task, poem);
        if self.remaining.get() == 0 {
            let _ = self.reactor.stop();
        }
    }

    /// Task `task` (0-based) is over. A failure is reported on stderr at once.
    pub(crate) fn record(&self, task: usize, poem: Result<Vec<u8>, String>) {
        if self.results.borrow()[task].is_some() {
            return;
        }
        if let Err(why) = &poem {
            eprintln!("{}", failed_line(task + 1, &self.addresses[task], why));
        }
        self.progress.finish(task, poem.is_ok());
        self.results.borrow_mut()[task] = Some((poem, Instant::now()));
        self.remaining.set(self.remaining.get() - 1);
    }

    fn take_downloads(&self, start: Instant) -> Vec<Download> {
        let results = std::mem::take(&mut *self.results.borrow_mut());
        results
            .into_iter()
            .zip(&self.addresses)
            .enumerate()
            .map(|(i, (r, address))| {
                let (poem, at) =
                    r.unwrap_or_else(|| (Err("never finished".to_string()), Instant::now()));
                Download {
                    task: i + 1,
                    address: address.clone(),
                    poem,
                    elapsed: at - start,
                }
            })
            .collect()
    }
}

//! The demo (`poetry demo`): the article's point in seconds.
//!
//! Three slow poetry servers start in this process (on a thread of their own, with their own
//! reactor) on free ports, serving the bundled poems. The blocking client fetches the three
//! poems one after the other; then the reactor client fetches them all at once. Each poem is
//! sent in the same number of chunks, so each download takes about as long, and the blocking
//! client's time is about three times the reactor client's.

use std::io::{self, Write};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::timedelta::format_timedelta;
use torsion::{Handle, Reactor};

use crate::client::{get_poetry, Fetched, GetOptions, Model};
use crate::poems::{Poem, ECSTASY, FASCINATION, SCIENCE};
use crate::server::{PoetryServer, ServeOptions};
use crate::Address;

/// The demo's settings.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The servers' pause between chunks (default 0.1 s).
    pub delay: Duration,
    /// Chunks per poem (default 20): a download takes about `chunks × delay` (2 s).
    pub chunks: usize,
    /// Progress bars on stderr while the clients run.
    pub progress: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            delay: Duration::from_millis(100),
            chunks: 20,
            progress: false,
        }
    }
}

/// What the demo measured.
#[derive(Debug, Clone)]
pub struct DemoResult {
    /// The blocking client's run.
    pub blocking: Fetched,
    /// The reactor client's run.
    pub reactor: Fetched,
}

impl DemoResult {
    /// How many times faster the reactor client was.
    pub fn speedup(&self) -> f64 {
        self.blocking.elapsed.as_secs_f64() / self.reactor.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The demo's poems, in the tutorial's order (its servers on ports 10000, 10001, 10002).
pub const POEMS: [Poem; 3] = [ECSTASY, FASCINATION, SCIENCE];

/// Servers on their own thread and reactor; stopped when dropped.
struct Servers {
    handle: Handle,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for Servers {
    fn drop(&mut self) {
        let _ = self.handle.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the three servers; returns them with their ports and chunk sizes.
fn start_servers(opts: &DemoOptions) -> io::Result<(Servers, Vec<(u16, usize)>)> {
    let (tx, rx) = mpsc::channel();
    let (delay, chunks) = (opts.delay, opts.chunks.max(1));
    let thread = thread::Builder::new()
        .name("poetry-servers".into())
        .spawn(move || {
            let started = (|| {
                let reactor = Reactor::new()?;
                let mut ports = Vec::new();
                let mut servers = Vec::new();
                for poem in POEMS {
                    let num_bytes = poem.text.len().div_ceil(chunks);
                    let opts = ServeOptions {
                        delay,
                        num_bytes,
                        ..ServeOptions::default()
                    };
                    let server = PoetryServer::listen(&reactor, "127.0.0.1:0", poem.text, opts)?;
                    ports.push((server.port(), num_bytes));
                    servers.push(server);
                }
                Ok::<_, torsion::Error>((reactor, ports, servers))
            })();
            match started {
                Ok((reactor, ports, _servers)) => {
                    let _ = tx.send(Ok((reactor.handle(), ports)));
                    if let Err(e) = reactor.run() {
                        eprintln!("poetry demo: the servers' reactor failed: {e}");
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        })?;
    match rx.recv() {
        Ok(Ok((handle, ports))) => Ok((
            Servers {
                handle,
                thread: Some(thread),
            },
            ports,
        )),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(io::Error::other(e))
        }
        Err(_) => {
            let _ = thread.join();
            Err(io::Error::other("the servers' thread died"))
        }
    }
}

/// Runs the demo, printing on `out`.
///
/// # Errors
/// The servers could not start, a client failed to run, a poem did not arrive, or writing to
/// `out` failed.
pub fn run(opts: &DemoOptions, out: &mut dyn Write) -> io::Result<DemoResult> {
    let (servers, ports) = start_servers(opts)?;
    writeln!(
        out,
        "Get Poetry Now! Three slow poetry servers, started in this process:"
    )?;
    for (poem, (port, num_bytes)) in POEMS.iter().zip(&ports) {
        writeln!(
            out,
            "Serving {} on port {port}. ({}: {} bytes, {num_bytes} bytes every {} s)",
            poem.file,
            poem.title,
            poem.text.len(),
            opts.delay.as_secs_f64()
        )?;
    }
    let addresses: Vec<Address> = ports.iter().map(|(p, _)| Address::local(*p)).collect();
    let args: Vec<String> = ports.iter().map(|(p, _)| p.to_string()).collect();
    let args = args.join(" ");

    let fetch = |model: Model, intro: &str, out: &mut dyn Write| -> io::Result<Fetched> {
        writeln!(out, "\n{intro}")?;
        writeln!(out, "$ poetry get --model {model} {args}")?;
        let client = GetOptions {
            model,
            progress: opts.progress,
            ..GetOptions::default()
        };
        let fetched = get_poetry(&addresses, &client, out)?;
        if fetched.failures() > 0 {
            return Err(io::Error::other(format!(
                "the {model} client got {} of {} poems",
                fetched.poems(),
                addresses.len()
            )));
        }
        Ok(fetched)
    };
    let blocking = fetch(
        Model::Blocking,
        "The blocking client fetches one poem after the other:",
        out,
    )?;
    let reactor = fetch(
        Model::Reactor,
        "The reactor client fetches all three at once:",
        out,
    )?;
    drop(servers);
    let result = DemoResult { blocking, reactor };
    let verdict = if result.speedup() >= 1.05 {
        format!(
            "The reactor client was {:.1}x faster: it waits for all three servers at once \
             instead of one after the other.",
            result.speedup()
        )
    } else {
        format!(
            "The reactor client was not faster this time ({:.2}x): with delays this short, \
             waiting for the servers is not what takes the time.",
            result.speedup()
        )
    };
    writeln!(
        out,
        "\nBlocking: {}. Reactor: {}. {verdict}",
        format_timedelta(result.blocking.elapsed),
        format_timedelta(result.reactor.elapsed),
    )?;
    out.flush()?;
    Ok(result)
}

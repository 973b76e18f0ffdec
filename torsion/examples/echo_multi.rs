//! An echo server with one reactor per core: each reactor listens on its own SO_REUSEPORT
//! socket for the same address, and the kernel spreads the clients among them.
//!
//! ```text
//! cargo run --example echo_multi -- [--port 8000] [--reactors N] [--pin] [--backend NAME] [-v]
//! ```
//!
//! Ctrl-C (or SIGTERM) stops every reactor; each prints its statistics on stderr as it stops.

use std::rc::Rc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use torsion::reactor::multi::{run_per_core, MultiOptions, MAX_REACTORS};
use torsion::reactor::{Phase, SystemEvent};
use torsion::tcp::ListenOptions;
use torsion::{Backend, Context, Factory, Protocol};

struct Echo;

impl Protocol for Echo {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        // Flow control, as in the single-reactor echo example.
        let t = cx.transport();
        t.register_producer(Rc::new(t.clone()), true)
            .expect("no producer is registered yet");
    }

    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        cx.transport().write(data);
    }
}

fn main() {
    let mut port = 8000u16;
    let mut opts = MultiOptions::default();
    let mut verbose = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => {
                let p = args
                    .next()
                    .unwrap_or_else(|| usage("--port takes a number"));
                port = p
                    .parse()
                    .unwrap_or_else(|_| usage(&format!("--port: {p:?} is not a port (0-65535)")));
            }
            "--reactors" => {
                let n = args
                    .next()
                    .unwrap_or_else(|| usage("--reactors takes a number"));
                opts.reactors = n
                    .parse()
                    .ok()
                    .filter(|&n| (1..=MAX_REACTORS).contains(&n))
                    .unwrap_or_else(|| {
                        usage(&format!(
                            "--reactors: {n:?} is not a number from 1 to {MAX_REACTORS}"
                        ))
                    });
            }
            "--pin" => opts.pin = true,
            "--backend" => {
                let b = args
                    .next()
                    .unwrap_or_else(|| usage("--backend takes a name"));
                opts.backend = Some(
                    b.parse::<Backend>()
                        .unwrap_or_else(|e| usage(&e.to_string())),
                );
            }
            "-v" | "--verbose" => verbose = true,
            _ => usage(&format!("unexpected argument {a:?}")),
        }
    }
    let level = if verbose {
        tracing::Level::DEBUG
    } else {
        tracing::Level::WARN
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .init();
    // The first reactor binds (port 0 picks a free one); the others bind the port it got.
    let bound = Arc::new(AtomicU16::new(port));
    let served = run_per_core(opts, move |reactor, peers| {
        let listen = ListenOptions {
            reuse_port: true,
            backlog: 4096,
            ..ListenOptions::default()
        };
        let at = ("127.0.0.1", bound.load(Ordering::SeqCst));
        let listening = reactor.listen_tcp_with(at, Factory::for_protocol(|| Echo), listen)?;
        bound.store(listening.port(), Ordering::SeqCst);
        if peers.index() + 1 == peers.len() {
            println!(
                "Echo server on {} ({} reactors, {}).",
                listening.address(),
                peers.len(),
                reactor.poller_name()
            );
        }
        reactor.set_time_accounting(true);
        let index = peers.index();
        reactor.add_system_event_trigger(Phase::After, SystemEvent::Shutdown, move |r| {
            eprintln!("echo_multi: reactor {index}: {}", r.stats());
        });
        Ok(())
    });
    if let Err(e) = served {
        eprintln!("echo_multi: error: {e}");
        std::process::exit(1);
    }
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "echo_multi: {msg}\nusage: echo_multi [--port N] [--reactors N] [--pin] \
         [--backend select|poll|epoll|io_uring] [-v]"
    );
    std::process::exit(2)
}

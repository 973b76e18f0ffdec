//! An echo server: every byte a client sends comes back.
//!
//! ```text
//! cargo run --example echo -- [--port 8000] [--backend select|poll|epoll|io_uring] [-v]
//! cargo run --example echo -- --listen tcp:8000:interface=0.0.0.0:backlog=100
//! ```
//!
//! Where to listen is an endpoint string (Twisted's `serverFromString`); `--port N` is short
//! for `--listen tcp:N:interface=127.0.0.1`. When it stops (Ctrl-C, SIGTERM) it prints the
//! reactor's statistics on stderr.

use std::rc::Rc;

use torsion::endpoints::server_from_string;
use torsion::{Backend, Context, Factory, Protocol, Reactor};

struct Echo;

impl Protocol for Echo {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        // Flow control: the transport is the producer of what it echoes, so it stops reading
        // while its write buffer is above the high-water mark (a client that sends and never
        // reads cannot grow the server's memory).
        let t = cx.transport();
        t.register_producer(Rc::new(t.clone()), true)
            .expect("no producer is registered yet");
    }

    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        cx.transport().write(data);
    }
}

fn main() {
    let mut listen = "tcp:8000:interface=127.0.0.1".to_string();
    let mut backend = None;
    let mut verbose = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => {
                let p = args
                    .next()
                    .unwrap_or_else(|| usage("--port takes a number"));
                let port: u16 = p
                    .parse()
                    .unwrap_or_else(|_| usage(&format!("--port: {p:?} is not a port (0-65535)")));
                listen = format!("tcp:{port}:interface=127.0.0.1");
            }
            "--listen" => {
                listen = args
                    .next()
                    .unwrap_or_else(|| usage("--listen takes an endpoint (tcp:PORT)"));
            }
            "--backend" => {
                let b = args
                    .next()
                    .unwrap_or_else(|| usage("--backend takes a name"));
                backend = Some(
                    b.parse::<Backend>()
                        .unwrap_or_else(|e| usage(&e.to_string())),
                );
            }
            "-v" | "--verbose" => verbose = true,
            _ => usage(&format!("unexpected argument {a:?}")),
        }
    }
    log_to_stderr(verbose);
    if let Err(e) = serve(&listen, backend) {
        eprintln!("echo: error: {e}");
        std::process::exit(1);
    }
}

fn serve(listen: &str, backend: Option<Backend>) -> Result<(), torsion::Error> {
    let reactor = match backend {
        Some(b) => Reactor::with_backend(b)?,
        None => Reactor::new()?,
    };
    let endpoint =
        server_from_string(&reactor, listen).unwrap_or_else(|e| usage(&format!("--listen: {e}")));
    let name = reactor.poller_name();
    let _ = endpoint
        .listen(Rc::new(Factory::for_protocol(|| Echo)))
        .add_callbacks(
            move |port| {
                println!("Echo server on {} ({name} reactor).", port.address());
                Ok(())
            },
            |failure| {
                eprintln!("echo: error: {}", failure.message());
                std::process::exit(1)
            },
        );
    reactor.set_time_accounting(true);
    let ran = reactor.run();
    eprintln!("echo: reactor statistics: {}", reactor.stats());
    ran
}

/// torsion's warnings and errors (and everything with `-v`) go to stderr.
fn log_to_stderr(verbose: bool) {
    let level = if verbose {
        tracing::Level::DEBUG
    } else {
        tracing::Level::WARN
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .init();
}

fn usage(msg: &str) -> ! {
    eprintln!("echo: {msg}\nusage: echo [--port N | --listen ENDPOINT] [--backend select|poll|epoll|io_uring] [-v]");
    std::process::exit(2)
}

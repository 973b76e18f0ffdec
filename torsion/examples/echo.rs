//! An echo server: every byte a client sends comes back.
//!
//! ```text
//! cargo run --example echo -- [--port 8000] [--backend select|poll|epoll|io_uring] [-v]
//! ```
//!
//! When it stops (Ctrl-C, SIGTERM) it prints the reactor's statistics on stderr.

use std::rc::Rc;

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
    let mut port = 8000u16;
    let mut backend = None;
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
    if let Err(e) = serve(port, backend) {
        eprintln!("echo: error: {e}");
        std::process::exit(1);
    }
}

fn serve(port: u16, backend: Option<Backend>) -> Result<(), torsion::Error> {
    let reactor = match backend {
        Some(b) => Reactor::with_backend(b)?,
        None => Reactor::new()?,
    };
    let listening = reactor.listen_tcp(("127.0.0.1", port), Factory::for_protocol(|| Echo))?;
    println!(
        "Echo server on {} ({} reactor).",
        listening.address(),
        reactor.poller_name()
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
    eprintln!("echo: {msg}\nusage: echo [--port N] [--backend select|poll|epoll|io_uring] [-v]");
    std::process::exit(2)
}

//! An echo server: every byte a client sends comes back.
//!
//! ```text
//! cargo run --example echo -- [--port 8000] [--backend select|poll|epoll]
//! ```

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
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--port", Some(p)) => {
                port = p.parse().unwrap_or_else(|_| usage("--port takes a number"))
            }
            ("--backend", Some(b)) => {
                backend = Some(
                    b.parse::<Backend>()
                        .unwrap_or_else(|e| usage(&e.to_string())),
                )
            }
            _ => usage(&format!("unexpected argument {a:?}")),
        }
    }
    let reactor = match backend {
        Some(b) => Reactor::with_backend(b),
        None => Reactor::new(),
    }
    .unwrap_or_else(|e| usage(&e.to_string()));
    let listening = reactor
        .listen_tcp(("127.0.0.1", port), Factory::for_protocol(|| Echo))
        .unwrap_or_else(|e| usage(&format!("cannot listen on port {port}: {e}")));
    println!(
        "Echo server on {} ({} reactor).",
        listening.address(),
        reactor.poller_name()
    );
    if let Err(e) = reactor.run() {
        usage(&e.to_string());
    }
}

fn usage(msg: &str) -> ! {
    eprintln!("echo: {msg}\nusage: echo [--port N] [--backend select|poll|epoll]");
    std::process::exit(2)
}

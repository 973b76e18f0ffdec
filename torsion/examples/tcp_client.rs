//! A TCP client: sends a message, prints the reply, and stops when the server closes.
//! Connection failures (refused, timed out, host not found) arrive at the client factory.
//!
//! ```text
//! cargo run --example echo &                       # a server to talk to
//! cargo run --example tcp_client -- localhost 8000 "hello, world"
//! ```

use std::time::Duration;

use torsion::{Context, Factory, Protocol, Reactor, Reason};

struct Client {
    message: String,
    reply: Vec<u8>,
}

impl Protocol for Client {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        let t = cx.transport();
        println!("Connected to {} from {}.", t.peer(), t.host());
        t.write(self.message.as_bytes());
    }

    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        let t = cx.transport();
        self.reply.extend_from_slice(data);
        if self.reply.len() >= self.message.len() {
            t.lose_connection();
        }
    }

    fn connection_lost(&mut self, _cx: &mut Context<'_>, reason: Reason) {
        println!("Reply: {}", String::from_utf8_lossy(&self.reply));
        println!("Connection closed: {reason}.");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() > 3 || args.iter().any(|a| a.starts_with('-')) {
        usage("unexpected arguments");
    }
    let host = args.first().map_or("127.0.0.1", String::as_str);
    let port = match args.get(1) {
        Some(p) => p
            .parse()
            .unwrap_or_else(|_| usage(&format!("{p:?} is not a port (0-65535)"))),
        None => 8000,
    };
    let message = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "hello, world".into());
    // torsion's warnings and errors go to stderr.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .init();
    match talk(host, port, message) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("tcp_client: error: {e}");
            std::process::exit(1);
        }
    }
}

fn usage(msg: &str) -> ! {
    eprintln!("tcp_client: {msg}\nusage: tcp_client [HOST [PORT [MESSAGE]]]");
    std::process::exit(2)
}

/// Sends `message`, prints the reply; `Ok(false)` when the connection failed.
fn talk(host: &str, port: u16, message: String) -> Result<bool, torsion::Error> {
    let reactor = Reactor::new()?;
    let failed = std::rc::Rc::new(std::cell::Cell::new(false));
    let (r1, r2, f) = (reactor.clone(), reactor.clone(), failed.clone());
    let factory = Factory::for_protocol(move || Client {
        message: message.clone(),
        reply: Vec::new(),
    })
    .on_client_connection_failed(move |_, _, reason| {
        eprintln!("Connection failed: {reason}.");
        f.set(true);
        let _ = r1.stop();
    })
    // One connection, then stop.
    .on_client_connection_lost(move |_, _, _| {
        let _ = r2.stop();
    });
    reactor.connect_tcp(host, port, factory, Duration::from_secs(10));
    reactor.run()?;
    Ok(!failed.get())
}

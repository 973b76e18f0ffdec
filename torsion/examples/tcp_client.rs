//! A TCP client: sends a message, prints the reply, and stops when the server closes.
//! Written as `async` code over an endpoint (Twisted's `TCP4ClientEndpoint` and
//! `connectProtocol`): the connect is awaited, and its failure (refused, timed out, host not
//! found) is the awaited result.
//!
//! ```text
//! cargo run --example echo &                       # a server to talk to
//! cargo run --example tcp_client -- localhost 8000 "hello, world"
//! ```

use std::time::Duration;

use torsion::defer::Resolver;
use torsion::endpoints::{connect_protocol, TcpClientEndpoint};
use torsion::{Context, Deferred, Protocol, Reactor, Reason};

struct Client {
    message: String,
    reply: Vec<u8>,
    /// Fired when the connection is closed.
    closed: Option<Resolver<()>>,
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
        if let Some(closed) = self.closed.take() {
            let _ = closed.callback(());
        }
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
    let endpoint = TcpClientEndpoint::new(&reactor, host, port).timeout(Duration::from_secs(10));
    let (closed, on_closed) = Deferred::new();
    let client = Client {
        message,
        reply: Vec::new(),
        closed: Some(on_closed),
    };
    let talked = reactor.run_until_complete(async move {
        match connect_protocol(&endpoint, client).await {
            Err(failure) => {
                eprintln!("Connection failed: {}.", failure.message());
                Ok(false)
            }
            Ok(_connected) => closed.await.map(|()| true),
        }
    });
    talked.map_err(|f| torsion::Error::Io(std::io::Error::other(f.to_string())))
}

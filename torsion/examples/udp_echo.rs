//! A UDP echo server: every datagram comes back to its sender, whole.
//!
//! ```text
//! cargo run --example udp_echo -- [--bind 127.0.0.1:8000] [--backend select|poll|epoll]
//! ```
//!
//! It prints `UDP echo listening on ADDR` first (with the real port when port 0 was asked
//! for), then serves until interrupted (Ctrl-C stops the reactor gracefully). Try it with
//! `nc -u 127.0.0.1 8000`.

use std::io::Write;

use torsion::udp::{DatagramContext, DatagramError, DatagramProtocol};
use torsion::{Address, Backend, Reactor};

struct Echo;

impl DatagramProtocol for Echo {
    fn datagram_received(&mut self, cx: &mut DatagramContext<'_>, data: &[u8], from: &Address) {
        match cx.transport().write_to(data, from) {
            Ok(()) => {}
            // UDP does not buffer: a full send buffer drops the echo (and counts it).
            Err(DatagramError::WouldBlock) => {}
            Err(e) => eprintln!("udp_echo: cannot answer {from}: {e}"),
        }
    }
}

fn usage(msg: &str) -> ! {
    eprintln!("udp_echo: {msg}");
    eprintln!("usage: udp_echo [--bind ADDR:PORT] [--backend select|poll|epoll]");
    std::process::exit(2);
}

fn main() {
    let mut bind = "127.0.0.1:8000".to_string();
    let mut backend = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bind" => {
                bind = args
                    .next()
                    .unwrap_or_else(|| usage("--bind takes an address"))
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
            _ => usage(&format!("unexpected argument {a:?}")),
        }
    }
    let bind: std::net::SocketAddr = bind
        .parse()
        .unwrap_or_else(|_| usage(&format!("--bind: {bind:?} is not an IP address and port")));
    if let Err(e) = serve(bind, backend) {
        eprintln!("udp_echo: error: {e}");
        std::process::exit(1);
    }
}

fn serve(bind: std::net::SocketAddr, backend: Option<Backend>) -> Result<(), torsion::Error> {
    let reactor = match backend {
        Some(b) => Reactor::with_backend(b)?,
        None => Reactor::new()?,
    };
    let port = reactor.listen_udp(bind, Echo)?;
    println!("UDP echo listening on {}", port.host());
    let _ = std::io::stdout().flush();
    reactor.run()?;
    let s = port.stats();
    eprintln!(
        "udp_echo: {} datagrams echoed, {} dropped on a full send buffer",
        s.sent, s.send_dropped
    );
    Ok(())
}

//! A multicast sender and receiver pair.
//!
//! ```text
//! cargo run --example multicast -- receive [--group 239.255.0.1] [--port 0] [--interface 127.0.0.1] [--count N]
//! cargo run --example multicast -- send --port PORT [--group 239.255.0.1] [--interface 127.0.0.1] [--ttl 1] MESSAGE...
//! ```
//!
//! The receiver joins the group on the interface (the loopback interface by default, so the
//! pair works on one machine with no network), prints `receiving GROUP on 0.0.0.0:PORT` and
//! then one line per datagram, `FROM: TEXT`, and exits after `--count` datagrams (default:
//! never). The sender sends each MESSAGE as one datagram to GROUP:PORT through the interface,
//! with loopback on so that receivers on this host hear it, and exits.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use torsion::udp::{DatagramContext, DatagramOptions, DatagramProtocol, Interface};
use torsion::{Address, Reactor};

struct Receiver {
    left: Option<u64>,
}

impl DatagramProtocol for Receiver {
    fn datagram_received(&mut self, cx: &mut DatagramContext<'_>, data: &[u8], from: &Address) {
        println!("{from}: {}", String::from_utf8_lossy(data));
        let _ = std::io::stdout().flush();
        if let Some(n) = &mut self.left {
            *n = n.saturating_sub(1);
            if *n == 0 {
                cx.transport().stop_listening();
                let _ = cx.reactor().stop();
            }
        }
    }
}

/// The sender's protocol: it only sends (from `send` below), and ignores anything sent to it.
struct Quiet;

impl DatagramProtocol for Quiet {
    fn datagram_received(&mut self, _: &mut DatagramContext<'_>, _: &[u8], _: &Address) {}
}

fn usage(msg: &str) -> ! {
    eprintln!("multicast: {msg}");
    eprintln!("usage: multicast receive [--group G] [--port P] [--interface A] [--count N]");
    eprintln!("       multicast send --port P [--group G] [--interface A] [--ttl T] MESSAGE...");
    std::process::exit(2);
}

fn parse<T: std::str::FromStr>(flag: &str, v: Option<String>) -> T {
    let v = v.unwrap_or_else(|| usage(&format!("{flag} takes a value")));
    v.parse()
        .unwrap_or_else(|_| usage(&format!("{flag}: {v:?} is not valid")))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| usage("say receive or send"));
    let mut group: Ipv4Addr = "239.255.0.1".parse().unwrap();
    let mut port: Option<u16> = None;
    let mut iface = Ipv4Addr::LOCALHOST;
    let mut count: Option<u64> = None;
    let mut ttl: u8 = 1;
    let mut messages = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--group" => group = parse("--group", args.next()),
            "--port" => port = Some(parse("--port", args.next())),
            "--interface" => iface = parse("--interface", args.next()),
            "--count" => count = Some(parse("--count", args.next())),
            "--ttl" => ttl = parse("--ttl", args.next()),
            s if s.starts_with("--") => usage(&format!("unknown option {s}")),
            _ => messages.push(a),
        }
    }
    if !group.is_multicast() {
        usage(&format!("--group: {group} is not a multicast address"));
    }
    if count == Some(0) {
        usage("--count must be at least 1");
    }
    let result = match mode.as_str() {
        "receive" => receive(group, port.unwrap_or(0), iface, count),
        "send" => {
            let port = port.unwrap_or_else(|| usage("send needs --port"));
            if port == 0 {
                usage("--port must not be 0 for send");
            }
            if messages.is_empty() {
                usage("send needs at least one MESSAGE");
            }
            send(group, port, iface, ttl, messages)
        }
        other => usage(&format!("unknown mode {other:?}")),
    };
    if let Err(e) = result {
        eprintln!("multicast: error: {e}");
        std::process::exit(1);
    }
}

fn receive(
    group: Ipv4Addr,
    port: u16,
    iface: Ipv4Addr,
    count: Option<u64>,
) -> Result<(), Box<dyn std::error::Error>> {
    let reactor = Reactor::new()?;
    // Several receivers on one host may share the port (Twisted's listenMultiple).
    let opts = DatagramOptions {
        reuse_addr: true,
        ..Default::default()
    };
    let t = reactor.listen_udp_with(
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
        Receiver { left: count },
        opts,
    )?;
    t.join_group(IpAddr::V4(group), Interface::Addr(iface))?;
    println!("receiving {group} on {}", t.host());
    std::io::stdout().flush()?;
    reactor.run()?;
    Ok(())
}

fn send(
    group: Ipv4Addr,
    port: u16,
    iface: Ipv4Addr,
    ttl: u8,
    messages: Vec<String>,
) -> Result<(), Box<dyn std::error::Error>> {
    let reactor = Reactor::new()?;
    let t = reactor.listen_udp(SocketAddr::from((iface, 0)), Quiet)?;
    t.set_interface(Interface::Addr(iface))?;
    t.set_ttl(ttl)?;
    t.set_loopback(true)?;
    let to = Address::Tcp(SocketAddr::from((group, port)));
    // UDP sends at once, or fails: there is nothing to flush before stopping.
    let sent = messages
        .iter()
        .try_for_each(|m| t.write_to(m.as_bytes(), &to));
    t.stop_listening();
    // One iteration delivers `stop_protocol`.
    reactor.iterate(Some(std::time::Duration::ZERO))?;
    Ok(sent?)
}

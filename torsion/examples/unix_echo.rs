//! An echo server on a Unix socket: every byte a client sends comes back. Each client's
//! credentials (pid, uid, gid: SO_PEERCRED) are logged as it connects. SIGINT or SIGTERM stops
//! it cleanly, and the socket file goes with it.
//!
//! ```text
//! cargo run --example unix_echo -- PATH | @ABSTRACT-NAME [--mode 660] [--backend select|poll|epoll]
//! socat - UNIX-CONNECT:PATH      # or: nc -U PATH
//! ```

use std::rc::Rc;

use torsion::interfaces::UnixAddress;
use torsion::unix::UnixListenOptions;
use torsion::{Backend, Context, Factory, Protocol, Reactor};

struct Echo;

impl Protocol for Echo {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        let t = cx.transport();
        if let Some(c) = t.unix().and_then(|u| u.peer_credentials().ok()) {
            let pid = c.pid.map_or("?".to_string(), |p| p.to_string());
            println!("client: pid {pid}, uid {}, gid {}", c.uid, c.gid);
        }
        // Flow control, as the TCP echo: stop reading while the echo waits to be sent.
        t.register_producer(Rc::new(t.clone()), true)
            .expect("no producer is registered yet");
    }

    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        cx.transport().write(data);
    }
}

fn main() {
    let mut addr = None;
    let mut opts = UnixListenOptions::default();
    let mut backend = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--mode" => {
                let m = args
                    .next()
                    .unwrap_or_else(|| usage("--mode takes octal digits"));
                let mode = u32::from_str_radix(&m, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .unwrap_or_else(|| {
                        usage(&format!("--mode: {m:?} is not a mode (0-7777, octal)"))
                    });
                opts.mode = Some(mode);
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
            _ if a.starts_with("--") => usage(&format!("unexpected argument {a:?}")),
            _ if addr.is_none() => addr = Some(UnixAddress::from(a.as_str())),
            _ => usage(&format!("unexpected argument {a:?}")),
        }
    }
    let addr = addr.unwrap_or_else(|| usage("a path or an @abstract-name is needed"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .init();
    if let Err(e) = serve(addr, opts, backend) {
        eprintln!("unix_echo: error: {e}");
        std::process::exit(1);
    }
}

fn serve(
    addr: UnixAddress,
    opts: UnixListenOptions,
    backend: Option<Backend>,
) -> Result<(), torsion::Error> {
    let reactor = match backend {
        Some(b) => Reactor::with_backend(b)?,
        None => Reactor::new()?,
    };
    let port = reactor.listen_unix_with(addr, Factory::for_protocol(|| Echo), opts)?;
    println!(
        "Echo server on {} ({} reactor).",
        port.address(),
        reactor.poller_name()
    );
    // Until SIGINT/SIGTERM; the reactor's shutdown stops the port, which removes its file.
    reactor.run()
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "unix_echo: {msg}\nusage: unix_echo PATH|@NAME [--mode OCTAL] [--backend select|poll|epoll]"
    );
    std::process::exit(2)
}

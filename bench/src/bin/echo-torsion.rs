//! `echo-torsion --port N [--backend select|poll|epoll]`: the torsion echo server, a
//! [`Protocol`] whose `data_received` writes the data back, on the chosen reactor backend.

use bench::args::Args;
use torsion::{Backend, Context, Factory, Protocol, Reactor};

struct Echo;

impl Protocol for Echo {
    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        let transport = cx.transport();
        transport.write(data);
    }
}

fn main() {
    let args = Args::from_env();
    let port: u16 = args.require("port");
    let backend: Backend = args
        .get_str("backend")
        .unwrap_or("epoll")
        .parse()
        .unwrap_or_else(|e| {
            eprintln!("echo-torsion: {e} (select|poll|epoll)");
            std::process::exit(2)
        });
    bench::sys::raise_nofile_limit();
    let reactor = Reactor::with_backend(backend).expect("reactor");
    let opts = torsion::tcp::ListenOptions {
        backlog: 4096,
        ..Default::default()
    };
    if let Err(e) =
        reactor.listen_tcp_with(("127.0.0.1", port), Factory::for_protocol(|| Echo), opts)
    {
        eprintln!("echo-torsion: cannot listen on 127.0.0.1:{port}: {e}");
        std::process::exit(1);
    }
    reactor.run().expect("reactor run");
}

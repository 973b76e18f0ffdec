//! `echo-torsion --port N [--backend select|poll|epoll|io_uring|io_uring-readiness]
//! [--reactors N]`: the torsion echo server, a [`Protocol`] whose `data_received` writes the
//! data back, on the chosen reactor backend. `io_uring` runs TCP on io_uring completions;
//! `io_uring-readiness` is the io_uring poller alone (`Reactor::with_poller`), every socket
//! driven by poll requests, for comparison. With `--reactors N` (N > 1) it runs N reactors on
//! N threads (`torsion::reactor::multi`), each listening on its own SO_REUSEPORT socket for the
//! port.

use bench::args::Args;
use torsion::reactor::multi::{MultiOptions, MultiReactor, MAX_REACTORS};
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
    let name = args.get_str("backend").unwrap_or("epoll");
    let readiness_only = name == "io_uring-readiness";
    let backend: Backend = name
        .trim_end_matches("-readiness")
        .parse()
        .unwrap_or_else(|e| {
            eprintln!("echo-torsion: {e} (select|poll|epoll|io_uring)");
            std::process::exit(2)
        });
    let reactors: usize = args.get_str("reactors").map_or(1, |n| {
        n.parse()
            .ok()
            .filter(|n| (1..=MAX_REACTORS).contains(n))
            .unwrap_or_else(|| {
                eprintln!("echo-torsion: --reactors {n:?}: a number from 1 to {MAX_REACTORS}");
                std::process::exit(2)
            })
    });
    bench::sys::raise_nofile_limit();
    let opts = torsion::tcp::ListenOptions {
        backlog: 4096,
        reuse_port: reactors > 1,
        ..Default::default()
    };
    if reactors > 1 {
        let multi = MultiOptions {
            reactors,
            backend: Some(backend),
            ..MultiOptions::default()
        };
        let started = MultiReactor::start(multi, move |reactor, _| {
            reactor.listen_tcp_with(("127.0.0.1", port), Factory::for_protocol(|| Echo), opts)?;
            Ok(())
        });
        match started {
            Ok(cluster) => cluster.join().expect("reactor run"),
            Err(e) => {
                eprintln!("echo-torsion: cannot listen on 127.0.0.1:{port}: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let reactor = if readiness_only {
        backend
            .poller()
            .map_err(torsion::Error::from)
            .and_then(Reactor::with_poller)
    } else {
        Reactor::with_backend(backend)
    };
    let reactor = reactor.unwrap_or_else(|e| {
        eprintln!("echo-torsion: {e}");
        std::process::exit(1)
    });
    if let Err(e) =
        reactor.listen_tcp_with(("127.0.0.1", port), Factory::for_protocol(|| Echo), opts)
    {
        eprintln!("echo-torsion: cannot listen on 127.0.0.1:{port}: {e}");
        std::process::exit(1);
    }
    reactor.run().expect("reactor run");
}

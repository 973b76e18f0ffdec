//! `echo-torsion --port N [--backend select|poll|epoll]`: the torsion echo server.
//!
//! A stub until torsion's TCP layer lands on main: it prints why and exits with status 3, which
//! `bench/run.sh` reads as "skip this server".

use bench::args::Args;

fn main() {
    let args = Args::from_env();
    let _port: u16 = args.require("port");
    let backend = args.get_str("backend").unwrap_or("epoll");
    if !matches!(backend, "select" | "poll" | "epoll") {
        eprintln!("echo-torsion: unknown --backend {backend:?} (select|poll|epoll)");
        std::process::exit(2);
    }
    // TODO(issue 6): write the real server once torsion's TCP API is on main: a Protocol whose
    // data_received writes the data back, a factory listening on 127.0.0.1:port, reactor.run().
    eprintln!("torsion TCP not merged yet");
    std::process::exit(3);
}

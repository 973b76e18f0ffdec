//! `udp-torsion --port N [--mode echo|sink] [--batch B] [--reads R] [--rcvbuf BYTES] [--backend epoll|poll|select]`:
//! the torsion UDP server of the datagram benchmark (see `udp-bench`), a [`DatagramProtocol`]
//! that echoes each datagram (`echo`) or counts it (`sink`). A datagram `?stats` is answered
//! with the number of datagrams received so far, in decimal. Prints `listening on ADDR` first.
//! `--batch 1` receives with `recvmsg`, more with `recvmmsg` batches of that many.

use std::cell::Cell;
use std::io::Write;
use std::rc::Rc;

use bench::args::Args;
use torsion::udp::{DatagramContext, DatagramOptions, DatagramProtocol};
use torsion::{Address, Backend, Reactor};

struct Server {
    echo: bool,
    count: Rc<Cell<u64>>,
}

impl DatagramProtocol for Server {
    fn datagram_received(&mut self, cx: &mut DatagramContext<'_>, data: &[u8], from: &Address) {
        if data == b"?stats" {
            let _ = cx
                .transport()
                .write_to(self.count.get().to_string().as_bytes(), from);
            return;
        }
        self.count.set(self.count.get() + 1);
        if self.echo {
            // A full send buffer drops the echo (UDP does not buffer); the client resends.
            let _ = cx.transport().write_to(data, from);
        }
    }
}

fn main() {
    let args = Args::from_env();
    let port: u16 = args.get("port", 0);
    let echo = match args.get_str("mode").unwrap_or("echo") {
        "echo" => true,
        "sink" => false,
        m => {
            eprintln!("udp-torsion: unknown --mode {m:?} (echo|sink)");
            std::process::exit(2)
        }
    };
    let backend: Backend = args
        .get_str("backend")
        .unwrap_or("epoll")
        .parse()
        .unwrap_or_else(|e| {
            eprintln!("udp-torsion: {e}");
            std::process::exit(2)
        });
    let opts = DatagramOptions {
        max_datagram_size: args.get("max-size", 2048),
        recv_batch: args.get("batch", 32),
        reads_per_event: args.get("reads", 64),
        receive_buffer_size: args.get_opt("rcvbuf"),
        ..Default::default()
    };
    let reactor = Reactor::with_backend(backend).expect("reactor");
    let count = Rc::new(Cell::new(0));
    let server = Server {
        echo,
        count: count.clone(),
    };
    let t = reactor
        .listen_udp_with(("127.0.0.1", port), server, opts)
        .unwrap_or_else(|e| {
            eprintln!("udp-torsion: cannot listen on 127.0.0.1:{port}: {e}");
            std::process::exit(1)
        });
    println!("listening on {}", t.host());
    let _ = std::io::stdout().flush();
    reactor.run().expect("reactor run");
}

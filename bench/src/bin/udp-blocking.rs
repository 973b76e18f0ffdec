//! `udp-blocking --port N [--mode echo|sink]`: the baseline of the datagram benchmark (see
//! `udp-bench`): a plain blocking loop of `recv_from`/`send_to` on one `std::net::UdpSocket`,
//! with the same behaviour as `udp-torsion` (echo or count; `?stats` answered with the count).
//! Prints `listening on ADDR` first.

use std::io::Write;
use std::net::UdpSocket;

use bench::args::Args;

fn main() {
    let args = Args::from_env();
    let port: u16 = args.get("port", 0);
    let echo = match args.get_str("mode").unwrap_or("echo") {
        "echo" => true,
        "sink" => false,
        m => {
            eprintln!("udp-blocking: unknown --mode {m:?} (echo|sink)");
            std::process::exit(2)
        }
    };
    let sock = UdpSocket::bind(("127.0.0.1", port)).unwrap_or_else(|e| {
        eprintln!("udp-blocking: cannot bind 127.0.0.1:{port}: {e}");
        std::process::exit(1)
    });
    println!("listening on {}", sock.local_addr().unwrap());
    let _ = std::io::stdout().flush();
    let mut buf = vec![0u8; 2048];
    let mut count: u64 = 0;
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        if &buf[..n] == b"?stats" {
            let _ = sock.send_to(count.to_string().as_bytes(), from);
            continue;
        }
        count += 1;
        if echo {
            let _ = sock.send_to(&buf[..n], from);
        }
    }
}

//! `tls-echo-torsion --port N [--backend select|poll|epoll]`: the torsion TLS echo server
//! (torsion-tls over TCP, a `Protocol` whose `data_received` writes the data back), with a
//! self-signed ECDSA P-256 certificate made at start-up. Its rustls configuration is built
//! exactly as `tls-echo-tokio`'s.

use std::rc::Rc;
use std::sync::Arc;

use bench::args::Args;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use torsion::{Backend, Context, Factory, Protocol, Reactor};
use torsion_tls::{ServerTls, TlsServerFactory};

struct Echo;

impl Protocol for Echo {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        // As the tokio peer: no Nagle delay between the handshake's last flight and the echo.
        if let Some(tcp) = cx.transport().tcp() {
            let _ = tcp.set_nodelay(true);
        }
    }

    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        cx.transport().write(data);
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
            eprintln!("tls-echo-torsion: {e} (select|poll|epoll)");
            std::process::exit(2)
        });
    bench::sys::raise_nofile_limit();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("certificate");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .expect("server config");
    let tls = ServerTls::new(Arc::new(config));
    let reactor = Reactor::with_backend(backend).expect("reactor");
    let opts = torsion::tcp::ListenOptions {
        backlog: 4096,
        ..Default::default()
    };
    let factory = TlsServerFactory::new(Rc::new(Factory::for_protocol(|| Echo)), tls);
    if let Err(e) = reactor.listen_tcp_with(("127.0.0.1", port), factory, opts) {
        eprintln!("tls-echo-torsion: cannot listen on 127.0.0.1:{port}: {e}");
        std::process::exit(1);
    }
    reactor.run().expect("reactor run");
}

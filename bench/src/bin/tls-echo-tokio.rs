//! `tls-echo-tokio --port N`: the idiomatic tokio-rustls TLS echo server on tokio's
//! current-thread runtime (a task per connection: accept the TLS stream, then `read` into a
//! 16 KiB buffer and `write_all`), with a self-signed ECDSA P-256 certificate made at start-up.
//! Its rustls configuration is built exactly as `tls-echo-torsion`'s.

use std::sync::Arc;

use bench::args::Args;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

async fn echo(acceptor: TlsAcceptor, stream: TcpStream) {
    // As the torsion peer: no Nagle delay between the handshake's last flight and the echo.
    let _ = stream.set_nodelay(true);
    let Ok(mut stream) = acceptor.accept(stream).await else {
        return;
    };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if stream.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    let _ = stream.shutdown().await;
}

async fn serve(port: u16, acceptor: TlsAcceptor) {
    let std_listener = bench::sys::std_listener(port, 4096).unwrap_or_else(|e| {
        eprintln!("tls-echo-tokio: cannot listen on 127.0.0.1:{port}: {e}");
        std::process::exit(1)
    });
    let listener = TcpListener::from_std(std_listener).expect("register listener");
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                tokio::spawn(echo(acceptor.clone(), stream));
            }
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::task::yield_now().await;
            }
        }
    }
}

fn main() {
    let args = Args::from_env();
    let port: u16 = args.require("port");
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
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("tokio runtime");
    rt.block_on(serve(port, acceptor));
}

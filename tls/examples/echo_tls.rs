//! A TLS echo server and a client, on one reactor.
//!
//! ```sh
//! # Self-contained: makes a throw-away CA and server certificate, serves on a free port,
//! # connects a client that verifies the server against that CA, echoes one line, and exits.
//! cargo run -p torsion-tls --example echo_tls
//!
//! # Serve with your own certificate (PEM chain and key) until Ctrl-C:
//! cargo run -p torsion-tls --example echo_tls -- serve cert.pem key.pem 8443
//! # and try it:  openssl s_client -connect 127.0.0.1:8443 -alpn echo
//! ```

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use torsion::{Context, Factory, Protocol, Reactor, Reason};
use torsion_tls::{tls, ClientTls, ReactorTls, ServerTls, TlsError};

/// Echoes every byte back.
struct Echo;

impl Protocol for Echo {
    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        cx.transport().write(data);
    }
}

/// Says one line, prints the answer and what TLS negotiated, then closes.
struct Hello {
    got: Vec<u8>,
    done: Rc<RefCell<Option<Reason>>>,
}

impl Protocol for Hello {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        // Written before the handshake completes: queued, then sent encrypted.
        cx.transport().write(b"hello over TLS\n");
    }

    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        self.got.extend_from_slice(data);
        if self.got.ends_with(b"\n") {
            let h = tls(cx.transport()).expect("a TLS transport");
            println!("echoed: {}", String::from_utf8_lossy(&self.got).trim_end());
            println!(
                "version {:?}, cipher suite {:?}, ALPN {:?}",
                h.protocol_version(),
                h.cipher_suite(),
                h.alpn_protocol()
                    .map(|p| String::from_utf8_lossy(&p).into_owned())
            );
            cx.transport().lose_connection(); // close_notify, then the TCP close
        }
    }

    fn connection_lost(&mut self, cx: &mut Context<'_>, reason: Reason) {
        match TlsError::of(&reason) {
            Some(e) => println!("TLS failure: {e}"),
            None => println!("closed: {reason}"),
        }
        *self.done.borrow_mut() = Some(reason);
        let _ = cx.reactor().stop();
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let reactor = Reactor::new()?;
    if args.first().map(String::as_str) == Some("serve") {
        let [_, cert, key, port] = &args[..] else {
            return Err("usage: echo_tls serve CERT.pem KEY.pem PORT".into());
        };
        let tls = ServerTls::builder()
            .certificate_pem_files(cert, key)?
            .alpn(&[b"echo"])
            .build()?;
        let port = reactor.listen_ssl(
            format!("0.0.0.0:{port}").parse()?,
            Rc::new(Factory::for_protocol(|| Echo)),
            tls,
        )?;
        println!("TLS echo on {}", port.address());
        reactor.run()?;
        return Ok(());
    }

    // A throw-away CA and a certificate for "localhost" signed by it.
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key)?;
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])?
        .signed_by(&key, &ca, &ca_key)?;

    let server = ServerTls::builder()
        .certificate_pem(
            (cert.pem() + &ca.pem()).as_bytes(),
            key.serialize_pem().as_bytes(),
        )?
        .alpn(&[b"echo"])
        .build()?;
    let port = reactor.listen_ssl(
        "127.0.0.1:0".parse()?,
        Rc::new(Factory::for_protocol(|| Echo)),
        server,
    )?;
    println!("TLS echo on {}", port.address());

    // The client trusts only that CA, and checks that the certificate is for "localhost".
    let client = ClientTls::builder()
        .root(ca.der().clone())?
        .alpn(&[b"echo"])
        .build()?;
    let done = Rc::new(RefCell::new(None));
    let d = done.clone();
    reactor.connect_ssl(
        "localhost",
        port.port(),
        Rc::new(Factory::for_protocol(move || Hello {
            got: Vec::new(),
            done: d.clone(),
        })),
        client,
        Duration::from_secs(10),
    )?;
    reactor.run()?;
    port.stop_listening();
    let outcome = done.borrow_mut().take();
    match outcome {
        Some(r) if r.is_clean() => Ok(()),
        Some(r) => Err(r.into()),
        None => Err("the client did not finish".into()),
    }
}

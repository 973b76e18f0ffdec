//! `ssl:` and `tls:` endpoint strings: a TLS echo from strings over real TCP on every backend
//! (each test ending with the leak check), client certificates, Twisted's older `ssl:` client
//! string, and the errors of bad strings and bad files.

mod common;

use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use common::*;
use torsion::endpoints::{
    client_from_string, server_from_string, ClientEndpoint, ClientEndpointExt, EndpointError,
    EndpointRegistry, ServerEndpoint, UnixClientEndpoint, UnixServerEndpoint,
};
use torsion::testing::{run_until, MemoryReactor};
use torsion::{reactor_test, Deferred, Factory, Failure, Reactor};
use torsion_tls::{tls, TlsClientEndpoint, TlsError, TlsServerEndpoint};

const LIMIT: Duration = Duration::from_secs(120);

/// Certificates for one test, written to a fresh directory (removed on drop).
struct Files {
    dir: PathBuf,
}

impl Files {
    fn new(name: &str) -> Files {
        let dir =
            std::env::temp_dir().join(format!("torsion-tls-ep-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("cadir")).unwrap();
        std::fs::create_dir_all(dir.join("nocerts")).unwrap();
        let ca = Ca::new("endpoint test CA");
        let (cert, key) = ca.server_pem(&["localhost", "127.0.0.1"]);
        let client = ca.issue_client_pem("client.test");
        let other = Ca::new("another CA");
        let files = Files { dir };
        files.write("cert.pem", &cert);
        files.write("key.pem", &key);
        files.write("both.pem", &(cert.clone() + &key));
        files.write("ca.pem", &ca.pem());
        files.write("cadir/ca.pem", &ca.pem());
        files.write("cadir/notes.txt", "not a certificate");
        files.write("other-ca.pem", &other.pem());
        files.write("client.pem", &client.0);
        files.write("client-key.pem", &client.1);
        files.write("empty.pem", "");
        files
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.join(name), text).unwrap();
    }

    /// The path of `name`, quoted for an endpoint string.
    fn p(&self, name: &str) -> String {
        torsion::endpoints::quote(&self.dir.join(name).display().to_string())
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

trait ClientPem {
    fn issue_client_pem(&self, name: &str) -> (String, String);
}

impl ClientPem for Ca {
    fn issue_client_pem(&self, name: &str) -> (String, String) {
        let mut p = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn wait<T: Clone + 'static>(reactor: &Reactor, d: Deferred<T>) -> Result<T, Failure> {
    let out: Rc<std::cell::RefCell<Option<Result<T, Failure>>>> = Rc::default();
    let o = out.clone();
    let _ = d.add_both(move |r| {
        *o.borrow_mut() = Some(r);
        Ok(())
    });
    run_until(reactor, LIMIT, || out.borrow().is_some());
    let r = out.borrow_mut().take().unwrap();
    r
}

/// Listens with `server` (an `ssl:` string without its port), connects with
/// `client(port)`, sends `greeting` and waits for both ends to close. Returns what the
/// client and the server saw.
fn exchange(
    reactor: &Reactor,
    server: &str,
    client: impl Fn(u16) -> String,
    greeting: &'static [u8],
) -> (Log, Log, Option<Vec<u8>>) {
    torsion_tls::register_default_endpoints();
    let server_log = log();
    let s = server_log.clone();
    let endpoint = server_from_string(reactor, server).unwrap();
    assert!(
        endpoint.describe().starts_with("tls over tcp:127.0.0.1:0"),
        "{}",
        endpoint.describe()
    );
    let port = wait(
        reactor,
        endpoint.listen(Rc::new(Factory::for_protocol(move || Echo(s.clone())))),
    )
    .unwrap();
    let client_log = log();
    let c = client_log.clone();
    let endpoint = client_from_string(reactor, &client(port.port())).unwrap();
    let connected = endpoint.connect(move |_| Client::new(&c, greeting, Some(greeting.len())));
    let connected = wait(reactor, connected).expect("the TCP connection is made");
    // The Deferred fired with the TLS layer's transport, before the handshake.
    let handle = tls(connected.transport()).expect("a TLS transport");
    assert!(
        !handle.handshake_complete(),
        "fired when the TCP connection was made"
    );
    run_until(reactor, LIMIT, || {
        handle.handshake_complete() || client_log.borrow().lost.is_some()
    });
    let alpn = handle.alpn_protocol();
    run_until(reactor, LIMIT, || {
        client_log.borrow().lost.is_some() && server_log.borrow().lost.is_some()
    });
    port.stop_listening();
    (client_log, server_log, alpn)
}

reactor_test! {
    fn ssl_server_and_tls_client_strings_echo_over_tcp(reactor) {
        let f = Files::new("echo");
        let server = format!(
            "ssl:0:interface=127.0.0.1:privateKey={}:certKey={}:alpn=h2,http/1.1:handshakeTimeout=20:backlog=5",
            f.p("key.pem"), f.p("cert.pem"),
        );
        let (c, s, alpn) = exchange(reactor, &server, |port| {
            format!("tls:127.0.0.1:{port}:trustRoots={}:serverName=localhost:alpn=http/1.1:timeout=20", f.p("ca.pem"))
        }, b"hello over tls endpoints");
        assert_eq!(c.borrow().data, b"hello over tls endpoints");
        assert_eq!(s.borrow().data, b"hello over tls endpoints");
        assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
        assert!(c.borrow().lost.as_ref().unwrap().is_clean(), "{:?}", c.borrow().lost);
    }

    fn client_certificates_and_the_older_ssl_client_string(reactor) {
        let f = Files::new("client-certs");
        // One PEM file holding both key and certificate (Twisted's privateKey default use).
        let server = format!(
            "ssl:port=0:interface=127.0.0.1:privateKey={}:caCerts={}",
            f.p("both.pem"), f.p("ca.pem"),
        );
        // tls: with a client certificate.
        let (c, _, _) = exchange(reactor, &server, |port| {
            format!(
                "tls:host=127.0.0.1:port={port}:trustRoots={}:certificate={}:privateKey={}",
                f.p("ca.pem"), f.p("client.pem"), f.p("client-key.pem"),
            )
        }, b"with a client certificate");
        assert_eq!(c.borrow().data, b"with a client certificate");
        // The older ssl: client string, trusting a directory of CA certificates.
        let (c, _, _) = exchange(reactor, &server, |port| {
            format!(
                "ssl:host=127.0.0.1:port={port}:caCertsDir={}:certKey={}:privateKey={}:timeout=20",
                f.p("cadir"), f.p("client.pem"), f.p("client-key.pem"),
            )
        }, b"the older string");
        assert_eq!(c.borrow().data, b"the older string");
        // Without a client certificate the server refuses the handshake.
        let (c, s, _) = exchange(reactor, &server, |port| {
            format!("tls:127.0.0.1:{port}:trustRoots={}", f.p("ca.pem"))
        }, b"refused");
        assert!(c.borrow().data.is_empty() && s.borrow().data.is_empty());
        let reason = s.borrow().lost.clone().unwrap();
        assert!(TlsError::of(&reason).is_some(), "the server's reason: {reason:?}");
        // A client trusting another CA refuses the server: typed, never a clean close.
        let (c, _, _) = exchange(reactor, &server, |port| {
            format!("tls:127.0.0.1:{port}:trustRoots={}", f.p("other-ca.pem"))
        }, b"x");
        let reason = c.borrow().lost.clone().unwrap();
        assert!(matches!(TlsError::of(&reason), Some(TlsError::UnknownIssuer(_))), "{reason:?}");
    }
}

reactor_test! {
    fn tls_endpoints_wrap_unix_endpoints(reactor) {
        let ca = Ca::new("unix CA");
        let name = format!("torsion-tls-ep-{}-unix", std::process::id());
        let server = TlsServerEndpoint::new(
            Rc::new(UnixServerEndpoint::new(reactor, format!("@{name}").as_str())),
            server_tls(ca.server(&["localhost"])),
        );
        assert_eq!(server.describe(), format!("tls over unix:@{name} (mode 666, backlog 50)"));
        let server_log = log();
        let s = server_log.clone();
        let port = wait(reactor, server.listen(Rc::new(Factory::for_protocol(move || Echo(s.clone()))))).unwrap();
        let client = TlsClientEndpoint::new(
            Rc::new(UnixClientEndpoint::new(reactor, format!("@{name}").as_str())),
            client_tls(&ca),
            "localhost",
        )
        .unwrap();
        assert_eq!(client.describe(), format!("tls over unix:@{name}"));
        let client_log = log();
        let c = client_log.clone();
        let connected = wait(reactor, client.connect(move |_| Client::new(&c, b"tls over unix", Some(13)))).unwrap();
        assert!(tls(connected.transport()).is_some());
        run_until(reactor, LIMIT, || client_log.borrow().lost.is_some() && server_log.borrow().lost.is_some());
        assert_eq!(client_log.borrow().data, b"tls over unix");
        assert!(client_log.borrow().lost.as_ref().unwrap().is_clean());
        port.stop_listening();
    }
}

#[test]
fn a_tls_client_string_on_the_memory_reactor() {
    let _serial = torsion::testing::serial();
    let f = Files::new("memory");
    let mr = MemoryReactor::new().unwrap();
    let mut r = EndpointRegistry::new();
    torsion_tls::register_endpoints(&mut r);
    // The hostname endpoint under tls: resolves through the memory reactor's table.
    mr.add_host("localhost", &["127.0.0.1".parse().unwrap()]);
    let client = r
        .client(
            &mr,
            &format!(
                "tls:localhost:443:trustRoots={}:alpn=h2:timeout=5",
                f.p("ca.pem")
            ),
        )
        .unwrap();
    let client_log = log();
    let c = client_log.clone();
    let d = client.connect(move |_| Client::new(&c, b"over memory", Some(11)));
    mr.flush(); // the name resolves
    let attempt = mr.tcp_clients()[0].clone();
    assert_eq!((attempt.host.as_str(), attempt.port), ("127.0.0.1", 443));
    // The server side: the `ssl:` server's factory, built from the same files.
    let server = r
        .server(
            &mr,
            &format!(
                "ssl:443:privateKey={}:certKey={}:alpn=h2",
                f.p("key.pem"),
                f.p("cert.pem")
            ),
        )
        .unwrap();
    let server_log = log();
    let s = server_log.clone();
    let _port = server
        .listen(Rc::new(Factory::for_protocol(move || Echo(s.clone()))))
        .try_result()
        .unwrap()
        .unwrap();
    let tls_factory = mr.tcp_servers()[0].factory.clone();
    let pump = attempt.accept(&*tls_factory).unwrap();
    // Fired at once, with the TLS transport, before any byte moved.
    let connected = d.try_result().unwrap().unwrap();
    let handle = tls(connected.transport()).unwrap();
    assert!(!handle.handshake_complete());
    pump.flush();
    assert_eq!(client_log.borrow().data, b"over memory");
    assert_eq!(server_log.borrow().data, b"over memory");
    assert!(client_log.borrow().lost.is_some());
}

fn server_err(f: &Files, s: &str) -> EndpointError {
    let mut r = EndpointRegistry::new();
    torsion_tls::register_endpoints(&mut r);
    let mr = MemoryReactor::new().unwrap();
    let s = s
        .replace("KEY", &f.p("key.pem"))
        .replace("CERT", &f.p("cert.pem"));
    r.server(&mr, &s).map(|_| ()).unwrap_err()
}

fn client_err(f: &Files, s: &str) -> EndpointError {
    let mut r = EndpointRegistry::new();
    torsion_tls::register_endpoints(&mut r);
    let mr = MemoryReactor::new().unwrap();
    let s = s
        .replace("CLIENTKEY", &f.p("client-key.pem"))
        .replace("CLIENT", &f.p("client.pem"))
        .replace("CA", &f.p("ca.pem"));
    r.client(&mr, &s).map(|_| ()).unwrap_err()
}

#[test]
fn bad_strings_are_refused_naming_the_option() {
    let _serial = torsion::testing::serial();
    let f = Files::new("parse");
    let range = |e: EndpointError| match e {
        EndpointError::OutOfRange { name, .. } | EndpointError::BadNumber { name, .. } => name,
        other => panic!("not a number error: {other}"),
    };
    assert_eq!(range(server_err(&f, "ssl:70000:privateKey=KEY")), "port");
    assert_eq!(range(server_err(&f, "ssl:x:privateKey=KEY")), "port");
    assert_eq!(
        range(server_err(&f, "ssl:0:privateKey=KEY:backlog=0")),
        "backlog"
    );
    assert_eq!(
        range(server_err(&f, "ssl:0:privateKey=KEY:backlog=70000")),
        "backlog"
    );
    assert_eq!(
        range(server_err(&f, "ssl:0:privateKey=KEY:handshakeTimeout=0")),
        "handshakeTimeout"
    );
    assert_eq!(
        range(server_err(
            &f,
            "ssl:0:privateKey=KEY:handshakeTimeout=100000"
        )),
        "handshakeTimeout"
    );
    assert_eq!(range(client_err(&f, "tls:h:0")), "port");
    assert_eq!(range(client_err(&f, "tls:h:443:timeout=-1")), "timeout");
    assert_eq!(range(client_err(&f, "ssl:host=h:port=99999")), "port");
    assert!(matches!(
        server_err(&f, "ssl:0:privateKey=KEY:interface=nowhere"),
        EndpointError::BadAddress {
            name: "interface",
            ..
        }
    ));
    assert!(matches!(
        server_err(&f, "ssl:0:privateKey=KEY:sslmethod=TLSv1"),
        EndpointError::UnknownOption { .. }
    ));
    assert!(matches!(
        client_err(&f, "tls:h"),
        EndpointError::Missing { name: "port", .. }
    ));
    assert!(matches!(
        client_err(&f, "tls:h:443:caCertsDir=/x"),
        EndpointError::UnknownOption { .. }
    ));
    // ALPN lists.
    for bad in ["alpn=", "alpn=h2,,http/1.1", "alpn=h2,"] {
        match server_err(&f, &format!("ssl:0:privateKey=KEY:certKey=CERT:{bad}")) {
            EndpointError::BadValue { name, .. } => assert_eq!(name, "alpn"),
            other => panic!("{bad}: {other}"),
        }
    }
    let long = format!("ssl:0:privateKey=KEY:certKey=CERT:alpn={}", "x".repeat(256));
    assert!(matches!(
        server_err(&f, &long),
        EndpointError::BadValue { .. }
    ));
    // Names.
    match client_err(&f, "tls:h:443:serverName=not\\:a name") {
        EndpointError::BadValue { name, .. } => assert_eq!(name, "serverName"),
        other => panic!("{other}"),
    }
    match client_err(&f, "tls:h:443:privateKey=CLIENTKEY") {
        EndpointError::BadValue { name, .. } => assert_eq!(name, "privateKey"),
        other => panic!("{other}"),
    }
}

#[test]
fn bad_files_name_the_option_and_the_file() {
    let _serial = torsion::testing::serial();
    let f = Files::new("files");
    let file = |e: EndpointError| match e {
        EndpointError::BadFile { name, path, detail } => (name, path, detail),
        other => panic!("not a file error: {other}"),
    };
    let missing = f.dir.join("missing.pem");
    let m = torsion::endpoints::quote(&missing.display().to_string());
    let (name, path, _) = file(server_err(&f, &format!("ssl:0:privateKey={m}")));
    assert_eq!((name.as_str(), path), ("privateKey", missing.clone()));
    let (name, _, detail) = file(server_err(&f, &format!("ssl:0:privateKey=KEY:certKey={m}")));
    assert_eq!(name, "certKey");
    assert!(detail.contains("No such file"), "{detail}");
    // A key file given for the certificate: no certificate in it.
    let e = server_err(&f, "ssl:0:privateKey=KEY:certKey=KEY");
    assert_eq!(
        e.to_string(),
        format!(
            "certKey: {}: no certificate in it",
            f.dir.join("key.pem").display()
        )
    );
    // A certificate file given for the key.
    let (name, _, detail) = file(server_err(&f, "ssl:0:privateKey=CERT"));
    assert_eq!(
        (name.as_str(), detail.as_str()),
        ("privateKey", "no private key in it")
    );
    let (name, _, _) = file(server_err(
        &f,
        &format!(
            "ssl:0:privateKey=KEY:certKey=CERT:extraCertChain={}",
            f.p("empty.pem")
        ),
    ));
    assert_eq!(name, "extraCertChain");
    let (name, _, _) = file(server_err(
        &f,
        &format!("ssl:0:privateKey=KEY:certKey=CERT:caCerts={m}"),
    ));
    assert_eq!(name, "caCerts");
    // Clients.
    let (name, _, _) = file(client_err(&f, &format!("tls:h:443:trustRoots={m}")));
    assert_eq!(name, "trustRoots");
    let (name, _, _) = file(client_err(
        &f,
        &format!("tls:h:443:trustRoots={}", f.p("empty.pem")),
    ));
    assert_eq!(name, "trustRoots");
    let (name, _, _) = file(client_err(
        &f,
        &format!("tls:h:443:certificate=CLIENT:privateKey={m}"),
    ));
    assert_eq!(name, "privateKey");
    // certificate= alone: the key is looked for in the same file (Twisted's default).
    let (name, _, detail) = file(client_err(&f, "tls:h:443:certificate=CLIENT"));
    assert_eq!(
        (name.as_str(), detail.as_str()),
        ("certificate", "no private key in it")
    );
    let (name, _, _) = file(client_err(&f, &format!("ssl:h:443:caCertsDir={m}")));
    assert_eq!(name, "caCertsDir");
    let (name, _, detail) = file(client_err(
        &f,
        &format!("ssl:h:443:caCertsDir={}", f.p("nocerts")),
    ));
    assert_eq!(
        (name.as_str(), detail.as_str()),
        ("caCertsDir", "no PEM certificate in it")
    );
}

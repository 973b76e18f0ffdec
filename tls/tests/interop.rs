//! Interop with `openssl s_client`/`s_server` and Python's `ssl` module, when they are
//! installed (otherwise each test says on stderr that it skipped).

mod common;

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::*;
use torsion::testing::run_until;
use torsion::{Context, Factory, Protocol, Reactor, Reason};
use torsion_tls::{tls, ClientTls, ReactorTls, ServerTls, TlsError};

const LIMIT: Duration = Duration::from_secs(120);

fn have(tool: &str, arg: &str) -> bool {
    let ok = Command::new(tool)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED: `{tool}` is not installed; this interop test did not run");
    }
    ok
}

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("torsion-tls-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn file(&self, name: &str, text: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Answers the first line with "echo: <line>" and closes (with close_notify).
struct LineEcho(Log);

impl Protocol for LineEcho {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        self.0.borrow_mut().transport = Some(cx.transport().clone());
    }
    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        let mut l = self.0.borrow_mut();
        l.data.extend_from_slice(data);
        if l.data.ends_with(b"\n") {
            let mut reply = b"echo: ".to_vec();
            reply.extend_from_slice(&l.data);
            cx.transport().write(&reply);
            cx.transport().lose_connection();
        }
    }
    fn connection_lost(&mut self, _: &mut Context<'_>, r: Reason) {
        self.0.borrow_mut().lost = Some(r);
    }
}

fn wait_child(reactor: &Reactor, child: &mut Child) {
    let deadline = Instant::now() + LIMIT;
    loop {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the child process did not finish"
        );
        reactor.iterate(Some(Duration::from_millis(20))).unwrap();
    }
}

fn output_of(child: &mut Child) -> String {
    let mut s = String::new();
    child.stdout.take().unwrap().read_to_string(&mut s).unwrap();
    s
}

fn serve_line_echo(reactor: &Reactor, stls: ServerTls) -> (torsion::ListeningPort, Log) {
    let sl = log();
    let s2 = sl.clone();
    let port = reactor
        .listen_ssl(
            "127.0.0.1:0".parse().unwrap(),
            Rc::new(Factory::for_protocol(move || LineEcho(s2.clone()))),
            stls,
        )
        .unwrap();
    (port, sl)
}

#[test]
fn openssl_s_client_talks_to_a_torsion_server() {
    if !have("openssl", "version") {
        return;
    }
    let ca = Ca::new("interop CA");
    let dir = Dir::new("s_client");
    let ca_file = dir.file("ca.pem", &ca.pem());
    let (cert, key) = ca.server_pem(&["localhost"]);
    let stls = ServerTls::builder()
        .certificate_pem_files(dir.file("cert.pem", &cert), dir.file("key.pem", &key))
        .unwrap()
        .alpn(&[b"echo"])
        .build()
        .unwrap();
    let reactor = Reactor::new().unwrap();
    let (port, sl) = serve_line_echo(&reactor, stls);
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{}", port.port()),
        ])
        .args([
            "-servername",
            "localhost",
            "-verify_hostname",
            "localhost",
            "-CAfile",
            &ca_file,
        ])
        .args([
            "-verify_return_error",
            "-alpn",
            "echo",
            "-quiet",
            "-no_ign_eof",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello from openssl\n").unwrap();
    run_until(&reactor, LIMIT, || sl.borrow().lost.is_some());
    wait_child(&reactor, &mut child);
    drop(stdin);
    assert_eq!(output_of(&mut child), "echo: hello from openssl\n");
    assert!(
        sl.borrow().lost.as_ref().unwrap().is_clean(),
        "{:?}",
        sl.borrow().lost
    );
    port.stop_listening();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + LIMIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_torsion_client_talks_to_openssl_s_server_with_a_client_certificate() {
    if !have("openssl", "version") {
        return;
    }
    let ca = Ca::new("interop CA");
    let client_ca = Ca::new("interop client CA");
    let dir = Dir::new("s_server");
    let (cert, key) = ca.server_pem(&["localhost"]);
    let port = free_port();
    // -rev: answers each line reversed. -Verify 1: a client certificate is required.
    let server = Kill(
        Command::new("openssl")
            .args([
                "s_server",
                "-accept",
                &port.to_string(),
                "-rev",
                "-alpn",
                "rev",
            ])
            .args([
                "-cert",
                &dir.file("cert.pem", &cert),
                "-key",
                &dir.file("key.pem", &key),
            ])
            .args([
                "-Verify",
                "1",
                "-CAfile",
                &dir.file("cca.pem", &client_ca.pem()),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(port);
    let c = client_ca.client("alice");
    let ctls = ClientTls::builder()
        .root(ca.der())
        .unwrap()
        .alpn(&[b"rev"])
        .client_certificate(c.0, c.1)
        .build()
        .unwrap();
    let reactor = Reactor::new().unwrap();
    let cl = log();
    let c2 = cl.clone();
    reactor
        .connect_ssl(
            "localhost",
            port,
            Rc::new(Factory::for_protocol(move || {
                Client::new(&c2, b"hello\n", Some(6))
            })),
            ctls,
            Duration::from_secs(30),
        )
        .unwrap();
    let alpn = Rc::new(RefCell::new(None));
    run_until(&reactor, LIMIT, || {
        if let Some(t) = cl.borrow().transport.as_ref() {
            if let Some(h) = tls(t).filter(|h| h.handshake_complete()) {
                *alpn.borrow_mut() = h.alpn_protocol();
            }
        }
        cl.borrow().lost.is_some()
    });
    assert_eq!(cl.borrow().data, b"olleh\n");
    assert_eq!(alpn.borrow().as_deref(), Some(&b"rev"[..]));
    assert!(
        cl.borrow().lost.as_ref().unwrap().is_clean(),
        "{:?}",
        cl.borrow().lost
    );
    drop(server);
}

#[test]
fn openssl_s_server_with_an_unknown_certificate_is_refused() {
    if !have("openssl", "version") {
        return;
    }
    let ca = Ca::new("interop CA");
    let stranger = Ca::new("stranger CA");
    let dir = Dir::new("s_server_bad");
    let (cert, key) = stranger.server_pem(&["localhost"]);
    let port = free_port();
    let server = Kill(
        Command::new("openssl")
            .args(["s_server", "-accept", &port.to_string(), "-rev"])
            .args([
                "-cert",
                &dir.file("cert.pem", &cert),
                "-key",
                &dir.file("key.pem", &key),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(port);
    let reactor = Reactor::new().unwrap();
    let cl = log();
    let c2 = cl.clone();
    reactor
        .connect_ssl(
            "localhost",
            port,
            Rc::new(Factory::for_protocol(move || {
                Client::new(&c2, b"hello\n", None)
            })),
            client_tls(&ca),
            Duration::from_secs(30),
        )
        .unwrap();
    run_until(&reactor, LIMIT, || cl.borrow().lost.is_some());
    let r = cl.borrow().lost.clone().unwrap();
    assert!(
        matches!(TlsError::of(&r), Some(TlsError::UnknownIssuer(_))),
        "{r:?}"
    );
    drop(server);
}

const PY_CLIENT: &str = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
ctx.set_alpn_protocols(["echo"])
with socket.create_connection(("127.0.0.1", int(sys.argv[1]))) as s:
    with ctx.wrap_socket(s, server_hostname="localhost") as t:
        t.sendall(b"hello from python\n")
        data = b""
        while not data.endswith(b"\n"):
            d = t.recv(100)
            if not d:
                break
            data += d
        print(data.decode().strip(), t.selected_alpn_protocol(), t.version())
        t.unwrap()
"#;

#[test]
fn python_ssl_client_talks_to_a_torsion_server() {
    if !have("python3", "--version") {
        return;
    }
    let ca = Ca::new("interop CA");
    let dir = Dir::new("py_client");
    let s = ca.server(&["localhost"]);
    let stls = ServerTls::builder()
        .certificate(s.0, s.1)
        .alpn(&[b"echo"])
        .build()
        .unwrap();
    let reactor = Reactor::new().unwrap();
    let (port, sl) = serve_line_echo(&reactor, stls);
    let mut child = Command::new("python3")
        .args([
            "-c",
            PY_CLIENT,
            &port.port().to_string(),
            &dir.file("ca.pem", &ca.pem()),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    run_until(&reactor, LIMIT, || sl.borrow().lost.is_some());
    wait_child(&reactor, &mut child);
    assert_eq!(
        output_of(&mut child).trim(),
        "echo: hello from python echo TLSv1.3"
    );
    assert!(
        sl.borrow().lost.as_ref().unwrap().is_clean(),
        "{:?}",
        sl.borrow().lost
    );
    port.stop_listening();
}

const PY_SERVER: &str = r#"
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen()
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
t = ctx.wrap_socket(conn, server_side=True)
data = b""
while not data.endswith(b"\n"):
    data += t.recv(100)
t.sendall(data.upper())
t.unwrap()
t.close()
"#;

#[test]
fn a_torsion_client_talks_to_a_python_ssl_server() {
    if !have("python3", "--version") {
        return;
    }
    let ca = Ca::new("interop CA");
    let dir = Dir::new("py_server");
    let (cert, key) = ca.server_pem(&["localhost"]);
    let mut child = Command::new("python3")
        .args([
            "-c",
            PY_SERVER,
            &dir.file("cert.pem", &cert),
            &dir.file("key.pem", &key),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().unwrap();
    let reactor = Reactor::new().unwrap();
    let cl = log();
    let c2 = cl.clone();
    reactor
        .connect_ssl(
            "localhost",
            port,
            Rc::new(Factory::for_protocol(move || {
                Client::new(&c2, b"quiet please\n", None)
            })),
            client_tls(&ca),
            Duration::from_secs(30),
        )
        .unwrap();
    run_until(&reactor, LIMIT, || cl.borrow().lost.is_some());
    wait_child(&reactor, &mut child);
    assert_eq!(cl.borrow().data, b"QUIET PLEASE\n");
    // Python sent close_notify (unwrap): a clean close.
    assert!(
        cl.borrow().lost.as_ref().unwrap().is_clean(),
        "{:?}",
        cl.borrow().lost
    );
}

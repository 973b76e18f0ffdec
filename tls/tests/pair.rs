//! TLS over the testing kit's in-memory pair: no sockets, the fake clock for timeouts.

mod common;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use common::*;
use torsion::testing::{IoPump, MemoryReactor};
use torsion::{Context, HalfClose, Producer, Protocol, Reason, Transport};
use torsion_tls::{tls, ClientTls, ServerTls, TlsError, TlsProtocol};

fn run(mr: &MemoryReactor, server: TlsProtocol, client: TlsProtocol) -> IoPump {
    IoPump::new(mr.reactor(), Box::new(server), Box::new(client))
}

fn tls_error(log: &Log) -> Option<TlsError> {
    let s = log.borrow();
    let r = s.lost.as_ref().expect("connection_lost was called");
    assert!(!r.is_clean(), "a failure must not be a clean close: {r:?}");
    TlsError::of(r).cloned()
}

#[test]
fn handshake_echo_and_clean_close() {
    let ca = Ca::new("test CA");
    let (sl, cl) = (log(), log());
    let mr = MemoryReactor::new().unwrap();
    let server = TlsProtocol::server(
        Box::new(Echo(sl.clone())),
        &server_tls(ca.server(&["example.test"])),
    )
    .unwrap();
    let client = TlsProtocol::client(
        Box::new(Client::new(&cl, b"hello, tls", Some(10))),
        &client_tls(&ca),
        "example.test",
    )
    .unwrap();
    let pump = run(&mr, server, client);
    // Written before the handshake: queued, not sent in clear.
    assert!(cl.borrow().made);
    pump.flush();
    assert_eq!(cl.borrow().data, b"hello, tls");
    assert_eq!(sl.borrow().data, b"hello, tls");
    assert!(pump.closed());
    // The client closed with close_notify: clean on both sides.
    assert!(
        cl.borrow().lost.as_ref().unwrap().is_clean(),
        "{:?}",
        cl.borrow().lost
    );
    assert!(
        sl.borrow().lost.as_ref().unwrap().is_clean(),
        "{:?}",
        sl.borrow().lost
    );
    // Nothing in clear went over the wire.
    assert!(pump.client_to_server() > 10 && pump.server_to_client() > 10);
}

#[test]
fn plaintext_never_crosses_in_clear() {
    let ca = Ca::new("test CA");
    let (sl, cl) = (log(), log());
    let mr = MemoryReactor::new().unwrap();
    let secret = b"SECRET-SECRET-SECRET";
    let server = TlsProtocol::server(
        Box::new(Echo(sl.clone())),
        &server_tls(ca.server(&["example.test"])),
    )
    .unwrap();
    let client = TlsProtocol::client(
        Box::new(Client::new(&cl, secret, None)),
        &client_tls(&ca),
        "example.test",
    )
    .unwrap();
    // Watch the server's raw input with a wrapper protocol.
    let raw = Rc::new(RefCell::new(Vec::new()));
    let r2 = raw.clone();
    let spy = torsion::protocol::wrap::ProtocolWrapper::new(Box::new(server), |o| o.clone())
        .on_data(move |_, d| r2.borrow_mut().extend_from_slice(d));
    let pump = IoPump::new(mr.reactor(), Box::new(spy), Box::new(client));
    pump.flush();
    assert_eq!(sl.borrow().data, secret);
    assert!(!raw.borrow().windows(secret.len()).any(|w| w == secret));
}

#[test]
fn chunked_delivery_and_large_echo() {
    let ca = Ca::new("test CA");
    let (sl, cl) = (log(), log());
    let mr = MemoryReactor::new().unwrap();
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let server = TlsProtocol::server(
        Box::new(Echo(sl.clone())),
        &server_tls(ca.server(&["example.test"])),
    )
    .unwrap();
    let client = TlsProtocol::client(
        Box::new(Client::new(&cl, &payload, Some(payload.len()))),
        &client_tls(&ca),
        "example.test",
    )
    .unwrap();
    let pump = run(&mr, server, client);
    pump.set_chunk_size(Some(1000));
    for _ in 0..100_000 {
        if !pump.pump() {
            break;
        }
    }
    assert_eq!(cl.borrow().data.len(), payload.len());
    assert!(cl.borrow().data == payload);
    assert!(pump.closed());
}

#[test]
fn alpn_sni_and_peer_certificates() {
    let ca = Ca::new("test CA");
    let (sl, cl) = (log(), log());
    let mr = MemoryReactor::new().unwrap();
    let a = ca.server(&["a.test"]);
    let b = ca.server(&["b.test"]);
    let b_leaf = b.0[0].clone();
    let stls = ServerTls::builder()
        .certificate(a.0, a.1)
        .sni_certificate("b.test", b.0, b.1)
        .alpn(&[b"h2", b"echo/1"])
        .build()
        .unwrap();
    let ctls = ClientTls::builder()
        .root(ca.der())
        .unwrap()
        .alpn(&[b"echo/1", b"other"])
        .build()
        .unwrap();
    let server = TlsProtocol::server(Box::new(Echo(sl.clone())), &stls).unwrap();
    let client =
        TlsProtocol::client(Box::new(Client::new(&cl, b"x", None)), &ctls, "b.test").unwrap();
    let pump = run(&mr, server, client);
    pump.flush();
    let st = tls(sl.borrow().transport.as_ref().unwrap()).expect("a TLS transport");
    let ct = tls(cl.borrow().transport.as_ref().unwrap()).expect("a TLS transport");
    assert!(st.handshake_complete() && ct.handshake_complete());
    assert_eq!(st.alpn_protocol().as_deref(), Some(&b"echo/1"[..]));
    assert_eq!(ct.alpn_protocol().as_deref(), Some(&b"echo/1"[..]));
    assert_eq!(st.server_name().as_deref(), Some("b.test"));
    // The client got b.test's certificate, chosen by SNI.
    assert_eq!(ct.peer_certificates().unwrap()[0], b_leaf);
    assert!(st.peer_certificates().is_none());
    assert_eq!(
        ct.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert!(ct.cipher_suite().is_some());
    // A plain transport is not TLS.
    assert!(tls(pump.client_transport()).is_none());
    drop(pump);
}

#[test]
fn sni_falls_back_to_the_default_certificate() {
    let ca = Ca::new("test CA");
    let (sl, cl) = (log(), log());
    let mr = MemoryReactor::new().unwrap();
    let a = ca.server(&["a.test"]);
    let b = ca.server(&["b.test"]);
    let stls = ServerTls::builder()
        .certificate(a.0, a.1)
        .sni_certificate("b.test", b.0, b.1)
        .build()
        .unwrap();
    let server = TlsProtocol::server(Box::new(Echo(sl.clone())), &stls).unwrap();
    let client = TlsProtocol::client(
        Box::new(Client::new(&cl, b"x", None)),
        &client_tls(&ca),
        "a.test",
    )
    .unwrap();
    let pump = run(&mr, server, client);
    pump.flush();
    assert_eq!(cl.borrow().data, b"x");
}

fn client_auth_case(required: bool, present: bool) -> (Log, Log) {
    let ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let (sl, cl) = (log(), log());
    let mr = MemoryReactor::new().unwrap();
    let s = ca.server(&["example.test"]);
    let b = ServerTls::builder().certificate(s.0, s.1);
    let b = if required {
        b.client_auth_required(vec![client_ca.der()]).unwrap()
    } else {
        b.client_auth_optional(vec![client_ca.der()]).unwrap()
    };
    let stls = b.build().unwrap();
    let mut cb = ClientTls::builder().root(ca.der()).unwrap();
    if present {
        let c = client_ca.client("alice");
        cb = cb.client_certificate(c.0, c.1);
    }
    let server = TlsProtocol::server(Box::new(Echo(sl.clone())), &stls).unwrap();
    let client = TlsProtocol::client(
        Box::new(Client::new(&cl, b"ping", Some(4))),
        &cb.build().unwrap(),
        "example.test",
    )
    .unwrap();
    let pump = run(&mr, server, client);
    pump.flush();
    assert!(pump.closed());
    (sl, cl)
}

#[test]
fn client_certificate_required_and_given() {
    let (sl, cl) = client_auth_case(true, true);
    assert_eq!(cl.borrow().data, b"ping");
    assert!(sl.borrow().lost.as_ref().unwrap().is_clean());
}

#[test]
fn client_certificate_required_and_missing() {
    let (sl, cl) = client_auth_case(true, false);
    assert!(sl.borrow().data.is_empty());
    assert!(
        matches!(tls_error(&sl), Some(TlsError::BadCertificate(_))),
        "{:?}",
        sl.borrow().lost
    );
    // The client learns of it by the server's alert (TLS 1.3: after its own handshake ended).
    assert!(
        TlsError::of(cl.borrow().lost.as_ref().unwrap()).is_some(),
        "{:?}",
        cl.borrow().lost
    );
}

#[test]
fn client_certificate_optional() {
    let (_, cl) = client_auth_case(false, false);
    assert_eq!(cl.borrow().data, b"ping");
    let (_, cl) = client_auth_case(false, true);
    assert_eq!(cl.borrow().data, b"ping");
}

#[test]
fn peer_certificate_of_the_client_is_readable() {
    let ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let (sl, cl) = (log(), log());
    let mr = MemoryReactor::new().unwrap();
    let s = ca.server(&["example.test"]);
    let stls = ServerTls::builder()
        .certificate(s.0, s.1)
        .client_auth_required(vec![client_ca.der()])
        .unwrap()
        .build()
        .unwrap();
    let c = client_ca.client("alice");
    let leaf = c.0[0].clone();
    let ctls = ClientTls::builder()
        .root(ca.der())
        .unwrap()
        .client_certificate(c.0, c.1)
        .build()
        .unwrap();
    let pump = run(
        &mr,
        TlsProtocol::server(Box::new(Echo(sl.clone())), &stls).unwrap(),
        TlsProtocol::client(
            Box::new(Client::new(&cl, b"ping", None)),
            &ctls,
            "example.test",
        )
        .unwrap(),
    );
    pump.flush();
    let st = tls(sl.borrow().transport.as_ref().unwrap()).unwrap();
    assert_eq!(st.peer_certificates().unwrap()[0], leaf);
}

fn failing_handshake(chain: Chain, client: ClientTls, name: &str) -> (Log, Log) {
    let (sl, cl) = (log(), log());
    let mr = MemoryReactor::new().unwrap();
    let pump = run(
        &mr,
        TlsProtocol::server(Box::new(Echo(sl.clone())), &server_tls(chain)).unwrap(),
        TlsProtocol::client(
            Box::new(Client::new(&cl, b"never sent", None)),
            &client,
            name,
        )
        .unwrap(),
    );
    pump.flush();
    assert!(pump.closed());
    assert!(sl.borrow().data.is_empty(), "nothing reaches the server");
    (sl, cl)
}

#[test]
fn wrong_host_is_refused() {
    let ca = Ca::new("test CA");
    let (sl, cl) = failing_handshake(ca.server(&["other.test"]), client_tls(&ca), "example.test");
    assert!(
        matches!(tls_error(&cl), Some(TlsError::WrongHost(_))),
        "{:?}",
        cl.borrow().lost
    );
    assert!(
        matches!(tls_error(&sl), Some(TlsError::HandshakeFailed(_))),
        "{:?}",
        sl.borrow().lost
    );
}

#[test]
fn unknown_issuer_is_refused() {
    let ca = Ca::new("test CA");
    let other = Ca::new("another CA");
    let (_, cl) = failing_handshake(
        other.server(&["example.test"]),
        client_tls(&ca),
        "example.test",
    );
    assert!(
        matches!(tls_error(&cl), Some(TlsError::UnknownIssuer(_))),
        "{:?}",
        cl.borrow().lost
    );
}

#[test]
fn the_default_client_trusts_no_private_ca() {
    let ca = Ca::new("test CA");
    let (_, cl) = failing_handshake(
        ca.server(&["example.test"]),
        ClientTls::new_default(),
        "example.test",
    );
    assert!(
        matches!(tls_error(&cl), Some(TlsError::UnknownIssuer(_))),
        "{:?}",
        cl.borrow().lost
    );
}

#[test]
fn expired_certificate_is_refused() {
    let ca = Ca::new("test CA");
    let (_, cl) = failing_handshake(
        ca.expired_server(&["example.test"]),
        client_tls(&ca),
        "example.test",
    );
    assert!(
        matches!(tls_error(&cl), Some(TlsError::CertificateExpired(_))),
        "{:?}",
        cl.borrow().lost
    );
}

#[test]
fn disabled_verification_accepts_anything_only_when_asked() {
    let ca = Ca::new("test CA");
    let (sl, cl) = (log(), log());
    let mr = MemoryReactor::new().unwrap();
    let ctls = ClientTls::builder()
        .dangerous_disable_certificate_verification()
        .build()
        .unwrap();
    assert!(!ctls.verifies_certificates());
    let pump = run(
        &mr,
        TlsProtocol::server(
            Box::new(Echo(sl.clone())),
            &server_tls(ca.expired_server(&["x.test"])),
        )
        .unwrap(),
        TlsProtocol::client(
            Box::new(Client::new(&cl, b"hi", Some(2))),
            &ctls,
            "example.test",
        )
        .unwrap(),
    );
    pump.flush();
    assert_eq!(cl.borrow().data, b"hi");
}

#[test]
fn garbage_instead_of_tls_fails_the_handshake() {
    let ca = Ca::new("test CA");
    let sl = log();
    let mr = MemoryReactor::new().unwrap();
    struct Junk;
    impl Protocol for Junk {
        fn connection_made(&mut self, cx: &mut Context<'_>) {
            cx.transport().write(b"GET / HTTP/1.0\r\n\r\n");
        }
        fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
    }
    let pump = run_plain(
        &mr,
        TlsProtocol::server(
            Box::new(Echo(sl.clone())),
            &server_tls(ca.server(&["x.test"])),
        )
        .unwrap(),
        Junk,
    );
    pump.flush();
    assert!(
        matches!(tls_error(&sl), Some(TlsError::HandshakeFailed(_))),
        "{:?}",
        sl.borrow().lost
    );
}

fn run_plain(mr: &MemoryReactor, server: TlsProtocol, client: impl Protocol + 'static) -> IoPump {
    IoPump::new(mr.reactor(), Box::new(server), Box::new(client))
}

#[test]
fn handshake_timeout_on_the_fake_clock() {
    let ca = Ca::new("test CA");
    let sl = log();
    let mr = MemoryReactor::new().unwrap();
    struct Silent;
    impl Protocol for Silent {
        fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
    }
    let stls =
        server_tls(ca.server(&["x.test"])).with_handshake_timeout(Some(Duration::from_secs(10)));
    let pump = run_plain(
        &mr,
        TlsProtocol::server(Box::new(Echo(sl.clone())), &stls).unwrap(),
        Silent,
    );
    pump.flush();
    mr.advance(Duration::from_secs(9));
    pump.flush();
    assert!(sl.borrow().lost.is_none(), "not yet");
    mr.advance(Duration::from_secs(2));
    pump.flush();
    assert!(
        matches!(tls_error(&sl), Some(TlsError::HandshakeTimeout(d)) if d == Duration::from_secs(10)),
        "{:?}",
        sl.borrow().lost
    );
    assert!(mr.reactor().delayed_calls().is_empty());
}

#[test]
fn a_completed_handshake_cancels_its_timer() {
    let ca = Ca::new("test CA");
    let (sl, cl) = (log(), log());
    let mr = MemoryReactor::new().unwrap();
    let stls =
        server_tls(ca.server(&["x.test"])).with_handshake_timeout(Some(Duration::from_secs(10)));
    let pump = run(
        &mr,
        TlsProtocol::server(Box::new(Echo(sl.clone())), &stls).unwrap(),
        TlsProtocol::client(
            Box::new(Client::new(&cl, b"hi", None)),
            &client_tls(&ca),
            "x.test",
        )
        .unwrap(),
    );
    pump.flush();
    assert!(mr.reactor().delayed_calls().is_empty());
    mr.advance(Duration::from_secs(60));
    pump.flush();
    assert!(sl.borrow().lost.is_none());
    assert_eq!(cl.borrow().data, b"hi");
}

#[test]
fn close_without_close_notify_is_truncation() {
    let ca = Ca::new("test CA");
    let (sl, cl) = (log(), log());
    let mr = MemoryReactor::new().unwrap();
    let pump = run(
        &mr,
        TlsProtocol::server(
            Box::new(Echo(sl.clone())),
            &server_tls(ca.server(&["x.test"])),
        )
        .unwrap(),
        TlsProtocol::client(
            Box::new(Client::new(&cl, b"hi", None)),
            &client_tls(&ca),
            "x.test",
        )
        .unwrap(),
    );
    pump.flush();
    assert_eq!(cl.borrow().data, b"hi");
    // The client's TCP-level transport closes without TLS's close_notify.
    pump.client_transport().lose_connection();
    pump.flush();
    assert!(
        matches!(tls_error(&sl), Some(TlsError::Truncated)),
        "{:?}",
        sl.borrow().lost
    );
}

#[test]
fn tls_half_close_keeps_the_reply_flowing() {
    // The client sends close_notify with lose_write_connection; the server, which asks to keep
    // writing, replies after it, then closes; both ends are clean.
    let ca = Ca::new("test CA");
    let got = Rc::new(RefCell::new(Vec::new()));
    let reason = Rc::new(RefCell::new(None::<Reason>));
    struct Replier(Rc<RefCell<Option<Reason>>>);
    impl Protocol for Replier {
        fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
        fn read_connection_lost(&mut self, cx: &mut Context<'_>) -> HalfClose {
            cx.transport().write(b"after your close");
            cx.transport().lose_connection();
            HalfClose::KeepWriting
        }
        fn connection_lost(&mut self, _: &mut Context<'_>, r: Reason) {
            *self.0.borrow_mut() = Some(r);
        }
    }
    struct HalfCloser(Rc<RefCell<Vec<u8>>>, Rc<Cell<bool>>, Rc<Cell<bool>>);
    impl Protocol for HalfCloser {
        fn connection_made(&mut self, cx: &mut Context<'_>) {
            cx.transport().write(b"request");
            cx.transport().lose_write_connection();
        }
        fn data_received(&mut self, _: &mut Context<'_>, d: &[u8]) {
            self.0.borrow_mut().extend_from_slice(d);
        }
        fn write_connection_lost(&mut self, _: &mut Context<'_>) {
            self.2.set(true);
        }
        fn connection_lost(&mut self, _: &mut Context<'_>, r: Reason) {
            assert!(r.is_clean(), "{r:?}");
            self.1.set(true);
        }
    }
    let done = Rc::new(Cell::new(false));
    let write_closed = Rc::new(Cell::new(false));
    let mr = MemoryReactor::new().unwrap();
    let pump = run(
        &mr,
        TlsProtocol::server(
            Box::new(Replier(reason.clone())),
            &server_tls(ca.server(&["x.test"])),
        )
        .unwrap(),
        TlsProtocol::client(
            Box::new(HalfCloser(got.clone(), done.clone(), write_closed.clone())),
            &client_tls(&ca),
            "x.test",
        )
        .unwrap(),
    );
    pump.flush();
    assert_eq!(*got.borrow(), b"after your close");
    assert!(
        write_closed.get(),
        "write_connection_lost after our close_notify went out"
    );
    assert!(done.get());
    assert!(
        reason.borrow().as_ref().unwrap().is_clean(),
        "{:?}",
        reason.borrow()
    );
}

#[test]
fn starttls_switches_mid_stream() {
    let ca = Ca::new("test CA");
    let (sl, cl) = (log(), log());
    let mr = MemoryReactor::new().unwrap();
    let server = TlsProtocol::pass_through(Box::new(StartTlsServer {
        tls: server_tls(ca.server(&["x.test"])),
        log: sl.clone(),
        buf: Vec::new(),
        started: false,
    }));
    let client = TlsProtocol::pass_through(Box::new(StartTlsClient {
        tls: client_tls(&ca),
        log: cl.clone(),
        clear: Vec::new(),
        started: false,
    }));
    let pump = IoPump::new(mr.reactor(), Box::new(server), Box::new(client));
    pump.flush();
    assert_eq!(sl.borrow().data, b"secret hello");
    assert_eq!(cl.borrow().data, b"secret hello");
    assert!(pump.closed());
    assert!(
        cl.borrow().lost.as_ref().unwrap().is_clean(),
        "{:?}",
        cl.borrow().lost
    );
    assert!(
        sl.borrow().lost.as_ref().unwrap().is_clean(),
        "{:?}",
        sl.borrow().lost
    );
}

#[test]
fn start_tls_twice_is_refused() {
    let ca = Ca::new("test CA");
    let mr = MemoryReactor::new().unwrap();
    let stls = server_tls(ca.server(&["x.test"]));
    let p = TlsProtocol::pass_through(Box::new(Echo(log())));
    let h = p.handle();
    let pump = IoPump::new(mr.reactor(), Box::new(p), Box::new(Echo(log())));
    h.start_tls_server(&stls, &[]).unwrap();
    assert!(matches!(
        h.start_tls_server(&stls, &[]),
        Err(torsion_tls::StartTlsError::AlreadyStarted)
    ));
    drop(pump);
}

/// A streaming source: writes 16 KiB on every tick while not paused, up to `total`.
struct Streamer {
    t: Transport,
    sent: Cell<usize>,
    total: usize,
    paused: Cell<bool>,
    pauses: Cell<u32>,
}

impl Streamer {
    fn tick(&self) {
        if self.paused.get() || self.sent.get() >= self.total {
            return;
        }
        let n = (self.total - self.sent.get()).min(16 * 1024);
        self.t.write(&vec![b'z'; n]);
        self.sent.set(self.sent.get() + n);
        if self.sent.get() >= self.total {
            self.t.unregister_producer();
            self.t.lose_connection();
        }
    }
}

impl Producer for Streamer {
    fn pause_producing(&self) {
        self.paused.set(true);
        self.pauses.set(self.pauses.get() + 1);
    }
    fn resume_producing(&self) {
        self.paused.set(false);
    }
}

#[test]
fn a_streaming_producer_is_paused_before_and_after_the_handshake() {
    let ca = Ca::new("test CA");
    let cl = log();
    let mr = MemoryReactor::new().unwrap();
    let stream: Rc<RefCell<Option<Rc<Streamer>>>> = Rc::default();
    struct Source(Rc<RefCell<Option<Rc<Streamer>>>>);
    impl Protocol for Source {
        fn connection_made(&mut self, cx: &mut Context<'_>) {
            let s = Rc::new(Streamer {
                t: cx.transport().clone(),
                sent: Cell::new(0),
                total: 4 * 1024 * 1024,
                paused: Cell::new(false),
                pauses: Cell::new(0),
            });
            cx.transport().register_producer(s.clone(), true).unwrap();
            *self.0.borrow_mut() = Some(s.clone());
            // Before the handshake: queued plaintext counts, and passes the high mark.
            for _ in 0..10 {
                s.tick();
            }
            assert!(s.paused.get(), "paused by the queued plaintext");
            assert_eq!(cx.transport().buffered(), 80 * 1024);
        }
        fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
    }
    let pump = run(
        &mr,
        TlsProtocol::server(
            Box::new(Source(stream.clone())),
            &server_tls(ca.server(&["x.test"])),
        )
        .unwrap(),
        TlsProtocol::client(
            Box::new(Client::new(&cl, b"", None)),
            &client_tls(&ca),
            "x.test",
        )
        .unwrap(),
    );
    let s = stream.borrow().clone().unwrap();
    pump.set_chunk_size(Some(32 * 1024));
    for _ in 0..100_000 {
        s.tick();
        s.tick();
        s.tick();
        let moved = pump.pump();
        // Memory stays bounded: the producer is paused whenever the buffer is over its mark.
        let b = pump.server_transport().buffered();
        if std::env::var("DBG").is_ok() {
            eprintln!(
                "b={b} paused={} pauses={} sent={}",
                s.paused.get(),
                s.pauses.get(),
                s.sent.get()
            );
        }
        assert!(b < 256 * 1024, "buffered {b}");
        if !moved && pump.closed() {
            break;
        }
    }
    assert_eq!(cl.borrow().data.len(), 4 * 1024 * 1024);
    assert!(s.pauses.get() > 2, "paused {} times", s.pauses.get());
    assert!(cl.borrow().lost.as_ref().unwrap().is_clean());
}

#[test]
fn pausing_reading_holds_decrypted_data_until_resumed() {
    let ca = Ca::new("test CA");
    let (sl, cl) = (log(), log());
    let mr = MemoryReactor::new().unwrap();
    struct Pauser(Log);
    impl Protocol for Pauser {
        fn connection_made(&mut self, cx: &mut Context<'_>) {
            self.0.borrow_mut().transport = Some(cx.transport().clone());
        }
        fn data_received(&mut self, cx: &mut Context<'_>, d: &[u8]) {
            self.0.borrow_mut().data.extend_from_slice(d);
            cx.transport().pause_producing();
        }
    }
    let payload = vec![7u8; 300_000];
    let pump = run(
        &mr,
        TlsProtocol::server(
            Box::new(Pauser(sl.clone())),
            &server_tls(ca.server(&["x.test"])),
        )
        .unwrap(),
        TlsProtocol::client(
            Box::new(Client::new(&cl, &payload, None)),
            &client_tls(&ca),
            "x.test",
        )
        .unwrap(),
    );
    pump.flush();
    let first = sl.borrow().data.len();
    assert!(first > 0 && first < payload.len(), "{first}");
    let t = sl.borrow().transport.clone().unwrap();
    for _ in 0..1000 {
        if sl.borrow().data.len() == payload.len() {
            break;
        }
        t.resume_producing();
        pump.flush();
    }
    assert_eq!(sl.borrow().data, payload);
}

#[test]
fn write_then_close_before_the_handshake_delivers_everything() {
    let ca = Ca::new("test CA");
    let sl = log();
    let mr = MemoryReactor::new().unwrap();
    struct Fire;
    impl Protocol for Fire {
        fn connection_made(&mut self, cx: &mut Context<'_>) {
            cx.transport().write(b"request");
            cx.transport().lose_connection();
            assert!(cx.transport().disconnecting());
        }
        fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
    }
    struct Collect(Log);
    impl Protocol for Collect {
        fn data_received(&mut self, _: &mut Context<'_>, d: &[u8]) {
            self.0.borrow_mut().data.extend_from_slice(d);
        }
        fn connection_lost(&mut self, _: &mut Context<'_>, r: Reason) {
            self.0.borrow_mut().lost = Some(r);
        }
    }
    let pump = run(
        &mr,
        TlsProtocol::server(
            Box::new(Collect(sl.clone())),
            &server_tls(ca.server(&["x.test"])),
        )
        .unwrap(),
        TlsProtocol::client(Box::new(Fire), &client_tls(&ca), "x.test").unwrap(),
    );
    pump.flush();
    assert_eq!(sl.borrow().data, b"request");
    assert!(
        sl.borrow().lost.as_ref().unwrap().is_clean(),
        "{:?}",
        sl.borrow().lost
    );
    assert!(pump.closed());
}

#[test]
fn configuration_errors_are_typed() {
    use torsion_tls::ConfigError;
    assert!(matches!(
        ServerTls::from_pem_files("/nonexistent/cert.pem", "/nonexistent/key.pem"),
        Err(ConfigError::Io(..))
    ));
    assert!(matches!(
        ServerTls::builder().build(),
        Err(ConfigError::NoServerCertificate)
    ));
    assert!(matches!(
        ServerTls::builder().certificate_pem(b"not pem", b"not pem"),
        Err(ConfigError::NoCertificates(_))
    ));
    assert!(matches!(
        ClientTls::new_default().with_server_name("not a name!"),
        Err(ConfigError::BadName(_))
    ));
    let ca = Ca::new("test CA");
    let (cert, _) = ca.server_pem(&["x.test"]);
    assert!(matches!(
        ServerTls::builder().certificate_pem(cert.as_bytes(), b""),
        Err(ConfigError::NoPrivateKey(_))
    ));
    // A key that does not match its certificate.
    let a = ca.server(&["x.test"]);
    let b = ca.server(&["x.test"]);
    assert!(ServerTls::builder()
        .sni_certificate("x.test", a.0, b.1)
        .build()
        .is_err());
}

#[test]
fn listen_ssl_and_connect_ssl_on_the_memory_reactor() {
    use torsion::testing::connected_pair;
    use torsion_tls::ReactorTls;
    let ca = Ca::new("test CA");
    let (sl, cl) = (log(), log());
    let mr = MemoryReactor::new().unwrap();
    let s2 = sl.clone();
    mr.listen_ssl(
        "127.0.0.1:443".parse().unwrap(),
        Rc::new(torsion::Factory::for_protocol(move || Echo(s2.clone()))),
        server_tls(ca.server(&["example.test"])),
    )
    .unwrap();
    let c2 = cl.clone();
    mr.connect_ssl(
        "example.test",
        443,
        Rc::new(torsion::Factory::for_protocol(move || {
            Client::new(&c2, b"via memory", Some(10))
        })),
        client_tls(&ca),
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(matches!(
        mr.connect_ssl(
            "bad name!",
            443,
            Rc::new(torsion::Factory::for_protocol(|| Echo(log()))),
            client_tls(&ca),
            Duration::from_secs(5)
        ),
        Err(torsion_tls::ConfigError::BadName(_))
    ));
    let server = mr.tcp_servers().remove(0);
    let client = mr.tcp_clients().remove(0);
    assert_eq!(client.host, "example.test");
    let pump = connected_pair(mr.reactor(), &*server.factory, &*client.factory).unwrap();
    pump.flush();
    assert_eq!(cl.borrow().data, b"via memory");
    assert!(pump.closed());
    assert!(sl.borrow().lost.as_ref().unwrap().is_clean());
}

//! TLS over real TCP sockets, on every backend, each test ending with the leak check.

mod common;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use common::*;
use torsion::testing::run_until;
use torsion::{reactor_test, Context, Factory, Producer, Protocol, Reason, Transport};
use torsion_tls::{tls, ClientTls, ReactorTls, ServerTls, TlsError};

const LIMIT: Duration = Duration::from_secs(300);
const TOTAL: usize = 64 * 1024 * 1024;

fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

/// Echoes with backpressure: its own transport is the producer of what it writes, so a slow
/// reader stops this side's reading.
struct BackpressureEcho;

impl Protocol for BackpressureEcho {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        let t = cx.transport().clone();
        cx.transport().register_producer(Rc::new(t), true).unwrap();
    }
    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        cx.transport().write(data);
    }
}

/// Pulls `TOTAL` patterned bytes into the connection; checks what comes back.
struct Streamer {
    t: RefCell<Option<Transport>>,
    sent: Cell<usize>,
}

impl Producer for Streamer {
    fn resume_producing(&self) {
        let Some(t) = self.t.borrow().clone() else {
            return;
        };
        let start = self.sent.get();
        let n = (TOTAL - start).min(256 * 1024);
        let chunk: Vec<u8> = (start..start + n).map(pattern).collect();
        self.sent.set(start + n);
        t.write(&chunk);
        if self.sent.get() == TOTAL {
            t.unregister_producer();
        }
    }
}

struct Checker {
    streamer: Rc<Streamer>,
    got: Rc<Cell<usize>>,
    lost: Rc<RefCell<Option<Reason>>>,
    alpn: Rc<RefCell<Option<Vec<u8>>>>,
}

impl Protocol for Checker {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        *self.streamer.t.borrow_mut() = Some(cx.transport().clone());
        cx.transport()
            .register_producer(self.streamer.clone(), false)
            .unwrap();
    }
    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        let at = self.got.get();
        assert!(
            data.iter().enumerate().all(|(i, b)| *b == pattern(at + i)),
            "corrupt echo at {at}"
        );
        self.got.set(at + data.len());
        if at == 0 {
            *self.alpn.borrow_mut() = tls(cx.transport()).and_then(|h| h.alpn_protocol());
        }
        if self.got.get() == TOTAL {
            cx.transport().lose_connection();
        }
    }
    fn connection_lost(&mut self, _: &mut Context<'_>, reason: Reason) {
        *self.lost.borrow_mut() = Some(reason);
        self.streamer.t.borrow_mut().take();
    }
}

reactor_test! {
    fn echo_64_mib(reactor) {
        let ca = Ca::new("test CA");
        let s = ca.server(&["localhost"]);
        let stls = ServerTls::builder().certificate(s.0, s.1).alpn(&[b"echo"]).build().unwrap();
        let server_lost = Rc::new(RefCell::new(None::<Reason>));
        let sl = server_lost.clone();
        struct Wrap(BackpressureEcho, Rc<RefCell<Option<Reason>>>);
        impl Protocol for Wrap {
            fn connection_made(&mut self, cx: &mut Context<'_>) { self.0.connection_made(cx) }
            fn data_received(&mut self, cx: &mut Context<'_>, d: &[u8]) { self.0.data_received(cx, d) }
            fn connection_lost(&mut self, _: &mut Context<'_>, r: Reason) { *self.1.borrow_mut() = Some(r); }
        }
        let port = reactor
            .listen_ssl("127.0.0.1:0".parse().unwrap(), Rc::new(Factory::for_protocol(move || Wrap(BackpressureEcho, sl.clone()))), stls)
            .unwrap();
        let got = Rc::new(Cell::new(0));
        let lost = Rc::new(RefCell::new(None));
        let alpn = Rc::new(RefCell::new(None));
        let (g, l, a) = (got.clone(), lost.clone(), alpn.clone());
        let ctls = ClientTls::builder().root(ca.der()).unwrap().alpn(&[b"echo"]).build().unwrap();
        reactor
            .connect_ssl("localhost", port.port(), Rc::new(Factory::for_protocol(move || Checker {
                streamer: Rc::new(Streamer { t: RefCell::new(None), sent: Cell::new(0) }),
                got: g.clone(),
                lost: l.clone(),
                alpn: a.clone(),
            })), ctls, Duration::from_secs(30))
            .unwrap();
        run_until(reactor, LIMIT, || lost.borrow().is_some() && server_lost.borrow().is_some());
        assert_eq!(got.get(), TOTAL);
        assert!(lost.borrow().as_ref().unwrap().is_clean(), "{:?}", lost.borrow());
        assert!(server_lost.borrow().as_ref().unwrap().is_clean(), "{:?}", server_lost.borrow());
        assert_eq!(alpn.borrow().as_deref(), Some(&b"echo"[..]));
        port.stop_listening();
        run_until(reactor, LIMIT, || reactor.descriptor_count() == 0);
    }

    fn wrong_host_over_tcp(reactor) {
        let ca = Ca::new("test CA");
        let stls = server_tls(ca.server(&["elsewhere.test"]));
        let port = reactor
            .listen_ssl("127.0.0.1:0".parse().unwrap(), Rc::new(Factory::for_protocol(|| Echo(log()))), stls)
            .unwrap();
        let cl = log();
        let c2 = cl.clone();
        reactor
            .connect_ssl("127.0.0.1", port.port(), Rc::new(Factory::for_protocol(move || Client::new(&c2, b"hi", None))), client_tls(&ca), Duration::from_secs(30))
            .unwrap();
        run_until(reactor, LIMIT, || cl.borrow().lost.is_some());
        let r = cl.borrow().lost.clone().unwrap();
        assert!(matches!(TlsError::of(&r), Some(TlsError::WrongHost(_))), "{r:?}");
        port.stop_listening();
        run_until(reactor, LIMIT, || reactor.descriptor_count() == 0);
    }

    fn truncation_over_tcp(reactor) {
        // The server's protocol closes the TCP connection under TLS (no close_notify).
        let ca = Ca::new("test CA");
        struct Rude(Rc<Cell<bool>>);
        impl Protocol for Rude {
            fn data_received(&mut self, cx: &mut Context<'_>, _: &[u8]) {
                cx.transport().write(b"partial");
                self.0.set(true);
            }
        }
        let raw: Rc<RefCell<Option<Transport>>> = Rc::default();
        let r2 = raw.clone();
        struct Grab(Rc<RefCell<Option<Transport>>>, torsion_tls::TlsProtocol, Rc<Cell<bool>>);
        impl Protocol for Grab {
            fn connection_made(&mut self, cx: &mut Context<'_>) {
                *self.0.borrow_mut() = Some(cx.transport().clone());
                self.1.connection_made(cx)
            }
            fn data_received(&mut self, cx: &mut Context<'_>, d: &[u8]) {
                self.1.data_received(cx, d);
                // After the first application data: cut the TCP connection.
                if let Some(t) = self.0.borrow().as_ref() {
                    if self.2.get() {
                        t.lose_connection();
                    }
                }
            }
            fn connection_lost(&mut self, cx: &mut Context<'_>, r: Reason) {
                self.0.borrow_mut().take();
                self.1.connection_lost(cx, r)
            }
        }
        let stls = server_tls(ca.server(&["localhost"]));
        let port = reactor
            .listen_tcp("127.0.0.1:0", Factory::for_protocol(move || {
                let answered = Rc::new(Cell::new(false));
                Grab(r2.clone(), torsion_tls::TlsProtocol::server(Box::new(Rude(answered.clone())), &stls).unwrap(), answered)
            }))
            .unwrap();
        let cl = log();
        let c2 = cl.clone();
        reactor
            .connect_ssl("localhost", port.port(), Rc::new(Factory::for_protocol(move || Client::new(&c2, b"hi", None))), client_tls(&ca), Duration::from_secs(30))
            .unwrap();
        run_until(reactor, LIMIT, || cl.borrow().lost.is_some());
        let r = cl.borrow().lost.clone().unwrap();
        assert!(matches!(TlsError::of(&r), Some(TlsError::Truncated)), "{r:?}");
        assert_eq!(cl.borrow().data, b"partial");
        port.stop_listening();
        run_until(reactor, LIMIT, || reactor.descriptor_count() == 0);
    }

    fn a_silent_client_is_dropped_after_the_handshake_timeout(reactor) {
        let ca = Ca::new("test CA");
        let stls = server_tls(ca.server(&["localhost"])).with_handshake_timeout(Some(Duration::from_millis(200)));
        let sl = log();
        let s2 = sl.clone();
        let port = reactor
            .listen_ssl("127.0.0.1:0".parse().unwrap(), Rc::new(Factory::for_protocol(move || Echo(s2.clone()))), stls)
            .unwrap();
        // A client that connects and never says a word.
        struct Mute;
        impl Protocol for Mute {
            fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
        }
        reactor.connect_tcp("127.0.0.1", port.port(), Factory::for_protocol(|| Mute), Duration::from_secs(30));
        run_until(reactor, LIMIT, || sl.borrow().lost.is_some());
        let r = sl.borrow().lost.clone().unwrap();
        assert!(matches!(TlsError::of(&r), Some(TlsError::HandshakeTimeout(_))), "{r:?}");
        port.stop_listening();
        run_until(reactor, LIMIT, || reactor.descriptor_count() == 0);
    }

    fn starttls_over_tcp(reactor) {
        let ca = Ca::new("test CA");
        let (sl, cl) = (log(), log());
        let (s2, c2) = (sl.clone(), cl.clone());
        let stls = server_tls(ca.server(&["x.test"]));
        let ctls = client_tls(&ca);
        let port = reactor
            .listen_tcp("127.0.0.1:0", Factory::for_protocol(move || {
                torsion_tls::TlsProtocol::pass_through(Box::new(StartTlsServer {
                    tls: stls.clone(),
                    log: s2.clone(),
                    buf: Vec::new(),
                    started: false,
                }))
            }))
            .unwrap();
        reactor.connect_tcp("127.0.0.1", port.port(), Factory::for_protocol(move || {
            torsion_tls::TlsProtocol::pass_through(Box::new(StartTlsClient {
                tls: ctls.clone(),
                log: c2.clone(),
                clear: Vec::new(),
                started: false,
            }))
        }), Duration::from_secs(30));
        run_until(reactor, LIMIT, || sl.borrow().lost.is_some() && cl.borrow().lost.is_some());
        assert_eq!(cl.borrow().data, b"secret hello");
        assert!(cl.borrow().lost.as_ref().unwrap().is_clean(), "{:?}", cl.borrow().lost);
        assert!(sl.borrow().lost.as_ref().unwrap().is_clean(), "{:?}", sl.borrow().lost);
        port.stop_listening();
        run_until(reactor, LIMIT, || reactor.descriptor_count() == 0);
    }
}

//! Certificates made for the tests (nothing checked in that expires) and test protocols.
#![allow(dead_code)]

use std::cell::RefCell;
use std::rc::Rc;

use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use torsion::{Context, Protocol, Reason, Transport};
use torsion_tls::{tls, ClientTls, ServerTls};

/// A certificate authority made for one test.
pub struct Ca {
    pub cert: rcgen::Certificate,
    pub key: KeyPair,
}

pub type Chain = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    fn issue(
        &self,
        names: &[&str],
        eku: ExtendedKeyUsagePurpose,
        expired: bool,
    ) -> (rcgen::Certificate, KeyPair) {
        let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.extended_key_usages = vec![eku];
        if expired {
            p.not_before = rcgen::date_time_ymd(2000, 1, 1);
            p.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert, key)
    }

    /// A server certificate for `names`.
    pub fn server(&self, names: &[&str]) -> Chain {
        let (c, k) = self.issue(names, ExtendedKeyUsagePurpose::ServerAuth, false);
        (vec![c.der().clone(), self.der()], key_der(&k))
    }

    pub fn server_pem(&self, names: &[&str]) -> (String, String) {
        let (c, k) = self.issue(names, ExtendedKeyUsagePurpose::ServerAuth, false);
        (c.pem() + &self.pem(), k.serialize_pem())
    }

    pub fn expired_server(&self, names: &[&str]) -> Chain {
        let (c, k) = self.issue(names, ExtendedKeyUsagePurpose::ServerAuth, true);
        (vec![c.der().clone()], key_der(&k))
    }

    pub fn client(&self, name: &str) -> Chain {
        let (c, k) = self.issue(&[name], ExtendedKeyUsagePurpose::ClientAuth, false);
        (vec![c.der().clone()], key_der(&k))
    }
}

pub fn key_der(k: &KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(k.serialize_der()))
}

pub fn server_tls(chain: Chain) -> ServerTls {
    ServerTls::builder()
        .certificate(chain.0, chain.1)
        .build()
        .unwrap()
}

pub fn client_tls(ca: &Ca) -> ClientTls {
    ClientTls::builder()
        .root(ca.der())
        .unwrap()
        .build()
        .unwrap()
}

/// What a test protocol saw.
#[derive(Default)]
pub struct Seen {
    pub data: Vec<u8>,
    pub lost: Option<Reason>,
    pub transport: Option<Transport>,
    pub made: bool,
    pub read_closed: bool,
}

pub type Log = Rc<RefCell<Seen>>;

/// Echoes; records what it saw.
pub struct Echo(pub Log);

impl Protocol for Echo {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        let mut s = self.0.borrow_mut();
        s.made = true;
        s.transport = Some(cx.transport().clone());
    }
    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        self.0.borrow_mut().data.extend_from_slice(data);
        cx.transport().write(data);
    }
    fn connection_lost(&mut self, _: &mut Context<'_>, reason: Reason) {
        self.0.borrow_mut().lost = Some(reason);
    }
}

/// Writes `greeting` at once; records what comes back; closes once `close_after` bytes came.
pub struct Client {
    pub log: Log,
    pub greeting: Vec<u8>,
    pub close_after: Option<usize>,
}

impl Client {
    pub fn new(log: &Log, greeting: &[u8], close_after: Option<usize>) -> Client {
        Client {
            log: log.clone(),
            greeting: greeting.to_vec(),
            close_after,
        }
    }
}

impl Protocol for Client {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        {
            let mut s = self.log.borrow_mut();
            s.made = true;
            s.transport = Some(cx.transport().clone());
        }
        if !self.greeting.is_empty() {
            cx.transport().write(&self.greeting);
        }
    }
    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        let n = {
            let mut s = self.log.borrow_mut();
            s.data.extend_from_slice(data);
            s.data.len()
        };
        if self.close_after.is_some_and(|c| n >= c) {
            cx.transport().lose_connection();
        }
    }
    fn read_connection_lost(&mut self, _: &mut Context<'_>) -> torsion::HalfClose {
        self.log.borrow_mut().read_closed = true;
        torsion::HalfClose::Close
    }
    fn connection_lost(&mut self, _: &mut Context<'_>, reason: Reason) {
        self.log.borrow_mut().lost = Some(reason);
    }
}

pub fn log() -> Log {
    Rc::new(RefCell::new(Seen::default()))
}

/// A line protocol that switches to TLS on "STARTTLS\r\n" (the server) and after "GO\r\n"
/// (the client), with bytes queued before the switch staying in order.
pub struct StartTlsServer {
    pub tls: ServerTls,
    pub log: Log,
    pub buf: Vec<u8>,
    pub started: bool,
}

impl Protocol for StartTlsServer {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        cx.transport().write(b"220 hello in clear\r\n");
    }
    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        if self.started {
            self.log.borrow_mut().data.extend_from_slice(data);
            cx.transport().write(data);
            return;
        }
        self.buf.extend_from_slice(data);
        if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
            assert_eq!(&self.buf[..i], b"STARTTLS");
            let rest = self.buf.split_off(i + 2);
            cx.transport().write(b"GO\r\n");
            tls(cx.transport())
                .unwrap()
                .start_tls_server(&self.tls, &rest)
                .unwrap();
            self.started = true;
        }
    }
    fn connection_lost(&mut self, _: &mut Context<'_>, r: Reason) {
        self.log.borrow_mut().lost = Some(r);
    }
}

pub struct StartTlsClient {
    pub tls: ClientTls,
    pub log: Log,
    pub clear: Vec<u8>,
    pub started: bool,
}

impl Protocol for StartTlsClient {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        cx.transport().write(b"STARTTLS\r\n");
    }
    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        if self.started {
            let n = {
                let mut l = self.log.borrow_mut();
                l.data.extend_from_slice(data);
                l.data.len()
            };
            if n >= 12 {
                cx.transport().lose_connection();
            }
            return;
        }
        self.clear.extend_from_slice(data);
        if self.clear.ends_with(b"GO\r\n") {
            let h = tls(cx.transport()).unwrap();
            assert!(!h.is_started());
            h.start_tls_client(&self.tls, "x.test", &[]).unwrap();
            assert!(h.is_started());
            self.started = true;
            cx.transport().write(b"secret hello"); // queued until the handshake completes
        }
    }
    fn connection_lost(&mut self, _: &mut Context<'_>, r: Reason) {
        self.log.borrow_mut().lost = Some(r);
    }
}

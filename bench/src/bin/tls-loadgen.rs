//! `tls-loadgen --port N --pid PID --scenario handshakes|stream [--warmup S] [--window S]
//! [--suite NAME] [--label L]`: the TLS load generator (issue 15), a rustls client on the same
//! rustls version and ring provider as both servers.
//!
//! * `handshakes`: one connection after another: connect, a full TLS 1.3 handshake (session
//!   resumption off), one 64-byte echo, close_notify, close. Figure: handshakes per second of
//!   server CPU.
//! * `stream`: one connection writes 256 KiB plaintext chunks as fast as it can (at most 2 MiB
//!   in flight) and reads the echo. Figure: MiB echoed per second of server CPU.
//!
//! The client offers only `--suite` (default TLS13_AES_128_GCM_SHA256), so both servers
//! negotiate the same suite, and it does not verify the servers' throw-away certificates (the
//! client's cost is not what is measured). Server CPU is read through the process's CPU-time
//! clock at the edges of the window, as `loadgen` does. One output line:
//! `tls label=L scenario=S ops=N secs=W rate=R server_cpu=C per_cpu=P client_cpu=K`.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench::args::Args;
use bench::procinfo::cpu_time;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};

#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn client_config(suite: &str) -> Arc<ClientConfig> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .retain(|s| format!("{:?}", s.suite()) == suite);
    if provider.cipher_suites.is_empty() {
        eprintln!("tls-loadgen: unknown --suite {suite}");
        std::process::exit(2);
    }
    let provider = Arc::new(provider);
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

fn name() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}

/// One full connection: handshake, a 64-byte echo, close_notify. Returns the suite.
fn one_handshake(port: u16, config: &Arc<ClientConfig>) -> std::io::Result<rustls::CipherSuite> {
    let mut sock = TcpStream::connect(("127.0.0.1", port))?;
    sock.set_nodelay(true)?;
    let mut conn = ClientConnection::new(config.clone(), name()).map_err(std::io::Error::other)?;
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let msg = [b'x'; 64];
    tls.write_all(&msg)?;
    let mut got = [0u8; 64];
    tls.read_exact(&mut got)?;
    assert_eq!(got, msg);
    let suite = tls
        .conn
        .negotiated_cipher_suite()
        .map(|s| s.suite())
        .unwrap();
    tls.conn.send_close_notify();
    tls.conn.complete_io(tls.sock)?;
    Ok(suite)
}

const CHUNK: usize = 256 * 1024;
const IN_FLIGHT: usize = 2 * 1024 * 1024;

/// Streams until `until`; returns the bytes echoed back after `from`.
struct Streamer {
    sock: TcpStream,
    conn: ClientConnection,
    chunk: Vec<u8>,
    in_flight: usize,
    buf: Vec<u8>,
}

impl Streamer {
    fn new(port: u16, config: &Arc<ClientConfig>) -> Streamer {
        let mut sock = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        sock.set_nodelay(true).unwrap();
        let mut conn = ClientConnection::new(config.clone(), name()).unwrap();
        while conn.is_handshaking() {
            conn.complete_io(&mut sock).expect("handshake");
        }
        sock.set_nonblocking(true).unwrap();
        Streamer {
            sock,
            conn,
            chunk: vec![b'z'; CHUNK],
            in_flight: 0,
            buf: vec![0; 256 * 1024],
        }
    }

    /// Moves what it can; returns the bytes echoed back in this step.
    fn step(&mut self) -> usize {
        if self.in_flight + CHUNK <= IN_FLIGHT && !self.conn.wants_write() {
            let n = self.conn.writer().write(&self.chunk).unwrap();
            self.in_flight += n;
        }
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("write: {e}"),
            }
        }
        let mut got = 0;
        loop {
            match self.conn.read_tls(&mut self.sock) {
                Ok(0) => panic!("the server closed the stream"),
                Ok(_) => {
                    self.conn.process_new_packets().expect("TLS error");
                    loop {
                        match self.conn.reader().read(&mut self.buf) {
                            Ok(n) if n > 0 => got += n,
                            _ => break,
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("read: {e}"),
            }
        }
        self.in_flight -= got.min(self.in_flight);
        if got == 0 {
            std::thread::yield_now();
        }
        got
    }
}

fn main() {
    let args = Args::from_env();
    let port: u16 = args.require("port");
    let pid: i32 = args.require("pid");
    let scenario = args.get_str("scenario").unwrap_or("handshakes").to_string();
    let warmup = Duration::from_secs_f64(args.get("warmup", 1.0));
    let window = Duration::from_secs_f64(args.get("window", 5.0));
    let suite = args
        .get_str("suite")
        .unwrap_or("TLS13_AES_128_GCM_SHA256")
        .to_string();
    let label = args.get_str("label").unwrap_or("?").to_string();
    let config = client_config(&suite);
    let cpu = || cpu_time(pid).expect("server CPU time").0;
    let me = || cpu_time(std::process::id() as i32).expect("own CPU time").0;

    let (ops, secs, server_cpu, client_cpu, unit) = match scenario.as_str() {
        "handshakes" => {
            let negotiated = one_handshake(port, &config).expect("first handshake");
            assert_eq!(format!("{negotiated:?}"), suite);
            let end = Instant::now() + warmup;
            while Instant::now() < end {
                one_handshake(port, &config).expect("handshake");
            }
            let (c0, m0, t0) = (cpu(), me(), Instant::now());
            let mut n = 0u64;
            while t0.elapsed() < window {
                one_handshake(port, &config).expect("handshake");
                n += 1;
            }
            let secs = t0.elapsed().as_secs_f64();
            (
                n as f64,
                secs,
                (cpu() - c0).as_secs_f64(),
                (me() - m0).as_secs_f64(),
                "handshakes",
            )
        }
        "stream" => {
            let mut s = Streamer::new(port, &config);
            let negotiated = s.conn.negotiated_cipher_suite().unwrap().suite();
            assert_eq!(format!("{negotiated:?}"), suite);
            let end = Instant::now() + warmup;
            while Instant::now() < end {
                s.step();
            }
            let (c0, m0, t0) = (cpu(), me(), Instant::now());
            let mut bytes = 0usize;
            while t0.elapsed() < window {
                bytes += s.step();
            }
            let secs = t0.elapsed().as_secs_f64();
            let mib = bytes as f64 / (1024.0 * 1024.0);
            (
                mib,
                secs,
                (cpu() - c0).as_secs_f64(),
                (me() - m0).as_secs_f64(),
                "MiB",
            )
        }
        other => {
            eprintln!("tls-loadgen: unknown --scenario {other} (handshakes|stream)");
            std::process::exit(2);
        }
    };
    println!(
        "tls label={label} scenario={scenario} suite={suite} {unit}={ops:.1} secs={secs:.2} rate={:.1}/s server_cpu={server_cpu:.3}s per_server_cpu_s={:.1} client_cpu={client_cpu:.3}s",
        ops / secs,
        ops / server_cpu.max(1e-9),
    );
}

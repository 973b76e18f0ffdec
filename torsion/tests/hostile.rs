//! Hostile peers and careless protocols: regressions of issue 11, every test on every backend,
//! each ending with the leak check.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use torsion::testing::run_until;
use torsion::{reactor_test, Context, Factory, Protocol};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Reads until EOF or an error; returns what was read and how the stream ended.
fn read_all(mut c: TcpStream) -> (Vec<u8>, std::io::Result<()>) {
    c.set_read_timeout(Some(secs(30))).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return (got, Ok(())),
            Ok(k) => got.extend_from_slice(&buf[..k]),
            Err(e) => return (got, Err(e)),
        }
    }
}

reactor_test! {
    fn a_panicking_protocol_resets_its_connection(reactor) {
        struct HalfThenBoom;
        impl Protocol for HalfThenBoom {
            fn data_received(&mut self, cx: &mut Context<'_>, _: &[u8]) {
                cx.transport().write(b"the first half of the reply");
                panic!("boom before the second half");
            }
        }
        let port = reactor.listen_tcp("127.0.0.1:0", Factory::for_protocol(|| HalfThenBoom)).unwrap();
        let addr = port.address().as_tcp().unwrap();
        let client = std::thread::spawn(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(b"request").unwrap();
            read_all(c)
        });
        run_until(reactor, secs(20), || client.is_finished());
        let (_, end) = client.join().unwrap();
        // Never a clean end: the peer must not take the first half for the whole reply.
        let err = end.expect_err("a panicking protocol's connection ended with a clean FIN");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
        run_until(reactor, secs(10), || reactor.descriptor_count() == 1);
        port.stop_listening();
    }
}

struct Echo;
impl Protocol for Echo {
    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        cx.transport().write(data);
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

reactor_test! {
    fn a_peer_that_half_closes_gets_the_whole_reply(reactor) {
        // 10 MB sent, then FIN, then read to EOF: every byte must come back before the clean
        // end (the echo's buffer used to be dropped at the FIN).
        const LEN: usize = 10 << 20;
        let port = reactor.listen_tcp("127.0.0.1:0", Factory::for_protocol(|| Echo)).unwrap();
        let addr = port.address().as_tcp().unwrap();
        let client = std::thread::spawn(move || {
            let c = TcpStream::connect(addr).unwrap();
            let mut w = c.try_clone().unwrap();
            let writer = std::thread::spawn(move || {
                w.write_all(&pattern(LEN)).unwrap();
                w.shutdown(Shutdown::Write).unwrap();
            });
            let got = read_all(c);
            writer.join().unwrap();
            got
        });
        run_until(reactor, secs(60), || client.is_finished());
        let (got, end) = client.join().unwrap();
        end.expect("a clean end");
        assert_eq!(got.len(), LEN, "the reply was cut");
        assert!(got == pattern(LEN), "the reply was corrupted");
        run_until(reactor, secs(10), || reactor.descriptor_count() == 1);
        port.stop_listening();
    }

    fn a_peer_that_half_closes_and_never_reads_is_reset_after_the_flush_timeout(reactor) {
        use std::cell::RefCell;
        use std::rc::Rc;
        use torsion::Reason;

        /// Answers any data with 8 MiB (more than the socket buffers hold) and records the end.
        struct Big(Rc<RefCell<Option<Reason>>>);
        impl Protocol for Big {
            fn data_received(&mut self, cx: &mut Context<'_>, _: &[u8]) {
                cx.transport().write(&vec![b'x'; 8 << 20]);
            }
            fn connection_lost(&mut self, _: &mut Context<'_>, reason: Reason) {
                *self.0.borrow_mut() = Some(reason);
            }
        }
        let lost = Rc::new(RefCell::new(None));
        let l2 = lost.clone();
        let opts = torsion::tcp::ListenOptions {
            close_flush_timeout: Duration::from_millis(200),
            ..Default::default()
        };
        let port = reactor
            .listen_tcp_with("127.0.0.1:0", Factory::for_protocol(move || Big(l2.clone())), opts)
            .unwrap();
        let mut c = TcpStream::connect(port.address()).unwrap();
        c.write_all(b"go").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        run_until(reactor, secs(30), || lost.borrow().is_some());
        let reason = lost.borrow_mut().take().unwrap();
        assert!(matches!(reason, Reason::TimedOut(t) if t.after == Duration::from_millis(200)), "{reason:?}");
        drop(c);
        port.stop_listening();
    }

    fn a_write_buffer_over_its_limit_resets_the_connection(reactor) {
        use std::cell::RefCell;
        use std::rc::Rc;
        use torsion::Reason;

        /// Writes 1 MiB per byte received, to a peer that reads nothing.
        struct Flood(Rc<RefCell<Option<Reason>>>);
        impl Protocol for Flood {
            fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
                for _ in data {
                    cx.transport().write(&vec![b'x'; 1 << 20]);
                }
            }
            fn connection_lost(&mut self, _: &mut Context<'_>, reason: Reason) {
                *self.0.borrow_mut() = Some(reason);
            }
        }
        let lost = Rc::new(RefCell::new(None));
        let l2 = lost.clone();
        let opts = torsion::tcp::ListenOptions { max_write_buffer: Some(4 << 20), ..Default::default() };
        let port = reactor
            .listen_tcp_with("127.0.0.1:0", Factory::for_protocol(move || Flood(l2.clone())), opts)
            .unwrap();
        let mut c = TcpStream::connect(port.address()).unwrap();
        c.write_all(&[0u8; 64]).unwrap(); // asks for 64 MiB; never reads
        run_until(reactor, secs(30), || lost.borrow().is_some());
        let reason = lost.borrow_mut().take().unwrap();
        assert!(matches!(reason, Reason::WriteBufferFull { limit } if limit == 4 << 20), "{reason:?}");
        drop(c);
        port.stop_listening();
    }
}

reactor_test! {
    fn listening_on_the_ipv6_wildcard_accepts_ipv4_clients(reactor) {
        // The system's dual-stack default, as std, tokio and Twisted.
        let Ok(port) = reactor.listen_tcp("[::]:0", Factory::for_protocol(|| Echo)) else {
            return; // no IPv6 on this host
        };
        let p = port.port();
        let client = std::thread::spawn(move || {
            let mut c = TcpStream::connect(("127.0.0.1", p)).unwrap();
            c.write_all(b"v4").unwrap();
            c.shutdown(Shutdown::Write).unwrap();
            read_all(c)
        });
        run_until(reactor, secs(20), || client.is_finished());
        let (got, end) = client.join().unwrap();
        end.unwrap();
        assert_eq!(got, b"v4");
        run_until(reactor, secs(10), || reactor.descriptor_count() == 1);
        port.stop_listening();
    }
}

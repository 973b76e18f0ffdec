//! Edge-triggered reading (epoll) must never leave data or an end of stream unread: the
//! per-event read budget and a hangup reported with the last data. Run on every backend.

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::rc::Rc;
use std::time::Duration;

use crate::testing::run_until;
use crate::{Context, Factory, ListeningPort, Protocol, Reason};

/// Records the bytes and the end of one connection; closes once `close_at` bytes arrived.
#[derive(Default)]
struct Seen {
    bytes: RefCell<Vec<u8>>,
    reads: Cell<usize>,
    lost: RefCell<Option<Reason>>,
}

struct Recorder {
    seen: Rc<Seen>,
    close_at: usize,
}

impl Protocol for Recorder {
    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        let t = cx.transport();
        self.seen.reads.set(self.seen.reads.get() + 1);
        let mut b = self.seen.bytes.borrow_mut();
        b.extend_from_slice(data);
        if b.len() >= self.close_at {
            t.lose_connection();
        }
    }

    fn connection_lost(&mut self, _cx: &mut Context<'_>, reason: Reason) {
        *self.seen.lost.borrow_mut() = Some(reason);
    }
}

/// Listens on a loopback port with [`Recorder`]s that share one [`Seen`].
fn listen_recording(reactor: &crate::Reactor, close_at: usize) -> (ListeningPort, Rc<Seen>) {
    let seen = Rc::new(Seen::default());
    let s2 = seen.clone();
    let port = reactor
        .listen_tcp(
            "127.0.0.1:0",
            Factory::for_protocol(move || Recorder {
                seen: s2.clone(),
                close_at,
            }),
        )
        .unwrap();
    (port, seen)
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// Sends `len` bytes over a fresh connection to the reactor, with the read buffer shrunk to
/// 1 KiB (a budget of 4 KiB per readiness event), and checks that all of it arrives. With
/// `fin`, the client shuts its side after the data; without, it waits for the server to close.
fn stream_through_the_budget(reactor: &crate::Reactor, len: usize, fin: bool) {
    crate::tcp::set_read_buffer_size(1024);
    let (port, seen) = listen_recording(reactor, if fin { usize::MAX } else { len });
    let data = pattern(len);
    let sent = data.clone();
    let addr = port.address();
    let client = std::thread::spawn(move || {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        c.write_all(&sent).unwrap();
        if fin {
            c.shutdown(Shutdown::Write).unwrap();
        }
        // Wait for the server's close, so that no data but what was written ever arrives.
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
    });
    run_until(reactor, Duration::from_secs(60), || {
        seen.lost.borrow().is_some()
    });
    client.join().unwrap();
    port.stop_listening();
    let lost = seen.lost.borrow_mut().take().unwrap();
    assert!(lost.is_clean(), "{lost:?}");
    assert_eq!(seen.bytes.borrow().len(), len);
    assert!(*seen.bytes.borrow() == data, "the bytes arrived corrupted");
    // The read budget is the readiness path's; on io_uring completions the provided buffers
    // set the size of a read.
    if reactor.port().is_none() {
        assert!(seen.reads.get() >= len / 1024, "{} reads", seen.reads.get());
    }
}

crate::reactor_test! {
    fn data_beyond_the_read_budget_is_read_without_new_arrivals(reactor) {
        stream_through_the_budget(reactor, 512 * 1024, false);
    }
}

crate::reactor_test! {
    fn data_beyond_the_read_budget_then_fin_is_read_to_the_end(reactor) {
        stream_through_the_budget(reactor, 512 * 1024, true);
    }
}

crate::reactor_test! {
    fn data_and_fin_already_waiting_at_accept_are_both_seen(reactor) {
        let (port, seen) = listen_recording(reactor, usize::MAX);
        // The whole exchange happens before the reactor accepts: the socket it accepts is
        // readable with the data and the FIN together, and gets one edge-triggered report.
        let mut c = TcpStream::connect(port.address()).unwrap();
        c.write_all(b"hello").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        run_until(reactor, Duration::from_secs(60), || seen.lost.borrow().is_some());
        drop(c);
        port.stop_listening();
        assert_eq!(&*seen.bytes.borrow(), b"hello");
        let lost = seen.lost.borrow_mut().take().unwrap();
        assert!(matches!(lost, Reason::ConnectionDone), "{lost:?}");
    }
}

crate::reactor_test! {
    fn data_beyond_the_read_budget_and_fin_waiting_at_accept_are_all_seen(reactor) {
        // One report for the lot: the hangup must be remembered until the reads, 4 KiB per
        // iteration, reach the end of the stream.
        crate::tcp::set_read_buffer_size(1024);
        let (port, seen) = listen_recording(reactor, usize::MAX);
        let mut c = TcpStream::connect(port.address()).unwrap();
        c.set_nonblocking(true).unwrap();
        let data = pattern(256 * 1024);
        let mut sent = 0;
        while sent < data.len() {
            match c.write(&data[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(sent > 16 * 1024, "only {sent} bytes fit in the socket buffers");
        c.shutdown(Shutdown::Write).unwrap();
        run_until(reactor, Duration::from_secs(60), || seen.lost.borrow().is_some());
        drop(c);
        port.stop_listening();
        assert!(*seen.bytes.borrow() == data[..sent], "{} of {sent} bytes", seen.bytes.borrow().len());
        let lost = seen.lost.borrow_mut().take().unwrap();
        assert!(matches!(lost, Reason::ConnectionDone), "{lost:?}");
    }
}

crate::reactor_test! {
    fn urgent_data_does_not_hide_the_data_after_it(reactor) {
        use std::os::fd::AsRawFd;
        let (port, seen) = listen_recording(reactor, usize::MAX);
        // All queued before the reactor accepts: one report, and a read of "hello" that stops
        // at the urgent mark with "world" still queued. (The urgent byte itself stays out of
        // band, as in Twisted.)
        let mut c = TcpStream::connect(port.address()).unwrap();
        c.write_all(b"hello").unwrap();
        assert_eq!(crate::sys::send_urgent(c.as_raw_fd(), b"!").unwrap(), 1);
        c.write_all(b"world").unwrap();
        run_until(reactor, Duration::from_secs(20), || seen.bytes.borrow().len() >= 10);
        drop(c);
        run_until(reactor, Duration::from_secs(20), || seen.lost.borrow().is_some());
        port.stop_listening();
        assert_eq!(&*seen.bytes.borrow(), b"helloworld");
    }
}

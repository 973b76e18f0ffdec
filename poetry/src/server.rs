//! The slow poetry server: sends a poem a few bytes at a time, then closes the connection.
//!
//! The tutorial's `blocking-server/slowpoetry.py` reads `num_bytes` of the poem, sends them,
//! sleeps `delay` seconds, and repeats; when the read comes back empty it closes the socket.
//! The wire behaviour here is the same (the bytes, then FIN, one `delay` after the last chunk),
//! but the server runs on the reactor and serves any number of clients at once. With
//! [`ServeOptions::one_at_a_time`] it serves them one after the other, as the original did.
//!
//! # Implementation notes
//! Chunk `k` of a connection is due at `start + k × delay`, computed from the connection's
//! start rather than from the previous chunk, so a late timer (10,000 clients on a busy machine)
//! never accumulates into a late poem: the next chunk simply comes sooner. One timer per
//! connection is pending at any time. With 10,000 clients the timer heap is about 6% of the
//! server's profile (perf, 10-byte chunks every 0.1 s) and the kernel's TCP send path most of
//! the rest, so one shared tick for all connections would save little and would lose each
//! connection's own phase.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::ToSocketAddrs;
use std::rc::Rc;
use std::time::{Duration, Instant};

use torsion::tcp::ListenOptions;
use torsion::{Context, Factory, ListeningPort, Protocol, Reactor, Reason, Transport};

/// How a poetry server sends its poem.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServeOptions {
    /// Pause between two chunks (default 0.1 s).
    pub delay: Duration,
    /// Bytes per chunk (default 10; at least 1).
    pub num_bytes: usize,
    /// Send the whole poem at once and close (the tutorial's `fastpoetry.py`).
    pub fast: bool,
    /// Serve one client at a time, the others waiting their turn (the original's behaviour).
    pub one_at_a_time: bool,
    /// Print `Somebody at ADDR wants poetry!` for each client.
    pub verbose: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            delay: Duration::from_millis(100),
            num_bytes: 10,
            fast: false,
            one_at_a_time: false,
            verbose: false,
        }
    }
}

/// State shared by all the connections of one server.
struct Shared {
    poem: Rc<[u8]>,
    opts: ServeOptions,
    /// `one_at_a_time`: a client is being served.
    busy: Cell<bool>,
    /// `one_at_a_time`: clients waiting their turn, first come first served.
    queue: RefCell<VecDeque<(Transport, Rc<Cell<bool>>)>>,
    /// Clients being sent their poem now.
    active: Cell<usize>,
    /// The most clients ever served at once.
    peak: Cell<usize>,
    /// Poems sent completely.
    served: Cell<u64>,
}

impl Shared {
    /// Starts sending the poem to `t`.
    fn start(self: &Rc<Self>, reactor: &Reactor, t: &Transport) {
        if self.opts.verbose {
            println!("Somebody at {} wants poetry!", t.peer());
        }
        self.active.set(self.active.get() + 1);
        self.peak.set(self.peak.get().max(self.active.get()));
        if self.opts.fast {
            // One copy of the poem however many clients are slow to read it.
            t.write_shared(self.poem.clone());
            self.served.set(self.served.get() + 1);
            t.lose_connection();
            return;
        }
        let sender = Sender {
            transport: t.clone(),
            shared: self.clone(),
            start: Instant::now(),
            offset: 0,
            chunk: 0,
        };
        sender.tick(reactor);
    }

    /// A client being served has gone: serve the next one waiting, if any.
    fn finished(self: &Rc<Self>, reactor: &Reactor) {
        self.active.set(self.active.get() - 1);
        if !self.opts.one_at_a_time {
            return;
        }
        self.busy.set(false);
        loop {
            let next = self.queue.borrow_mut().pop_front();
            match next {
                Some((t, serving)) if t.connected() => {
                    self.busy.set(true);
                    serving.set(true);
                    return self.start(reactor, &t);
                }
                Some(_) => continue,
                None => return,
            }
        }
    }
}

/// One connection's progress through the poem; moved from timer to timer.
struct Sender {
    transport: Transport,
    shared: Rc<Shared>,
    start: Instant,
    offset: usize,
    chunk: u32,
}

impl Sender {
    /// Sends the next chunk and schedules the one after; at the end of the poem, closes.
    fn tick(mut self, reactor: &Reactor) {
        let t = &self.transport;
        if !t.connected() {
            return; // the client left: its connection_lost did the bookkeeping
        }
        let poem = &self.shared.poem;
        if self.offset >= poem.len() {
            self.shared.served.set(self.shared.served.get() + 1);
            t.lose_connection();
            return;
        }
        let end = (self.offset + self.shared.opts.num_bytes).min(poem.len());
        t.write(&poem[self.offset..end]);
        self.offset = end;
        self.chunk += 1;
        let due = self.start + self.shared.opts.delay * self.chunk;
        reactor.call_later(due.saturating_duration_since(Instant::now()), move |r| {
            self.tick(r)
        });
    }
}

/// The per-connection protocol. It never reads: the poem goes one way.
struct SlowPoetry {
    shared: Rc<Shared>,
    /// Being served (not waiting in the queue); set by [`Shared::finished`] when a queued
    /// client's turn comes.
    serving: Rc<Cell<bool>>,
}

impl Protocol for SlowPoetry {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        let t = cx.transport();
        let s = &self.shared;
        if s.opts.one_at_a_time && s.busy.replace(true) {
            s.queue
                .borrow_mut()
                .push_back((t.clone(), self.serving.clone()));
            return;
        }
        self.serving.set(true);
        s.start(cx.reactor(), t);
    }

    fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}

    fn connection_lost(&mut self, cx: &mut Context<'_>, _: Reason) {
        if self.serving.get() {
            self.shared.finished(cx.reactor());
        }
        // A client that left while queued is skipped when its turn comes.
    }
}

/// A running poetry server (Twisted's listening port plus its factory's counters).
#[derive(Clone)]
pub struct PoetryServer {
    port: ListeningPort,
    shared: Rc<Shared>,
}

impl std::fmt::Debug for PoetryServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoetryServer")
            .field("port", &self.port.port())
            .field("poem_bytes", &self.shared.poem.len())
            .field("opts", &self.shared.opts)
            .finish()
    }
}

/// The accept queue asked for; the kernel caps it at `net.core.somaxconn`. Large, so that
/// 10,000 clients connecting at once are not dropped and made to retry their SYN a second later.
const BACKLOG: i32 = 16_384;

impl PoetryServer {
    /// Serves `poem` on `addr` (port 0 picks a free port) with `opts`.
    ///
    /// # Errors
    /// The listening socket's error (address in use, bad address).
    ///
    /// # Examples
    /// ```
    /// use poetry::server::{PoetryServer, ServeOptions};
    /// use torsion::Reactor;
    ///
    /// let reactor = Reactor::new()?;
    /// let server = PoetryServer::listen(&reactor, "127.0.0.1:0", &b"A poem.\n"[..], ServeOptions::default())?;
    /// assert_ne!(server.port(), 0);
    /// # Ok::<(), torsion::Error>(())
    /// ```
    pub fn listen(
        reactor: &Reactor,
        addr: impl ToSocketAddrs,
        poem: impl Into<Rc<[u8]>>,
        opts: ServeOptions,
    ) -> Result<PoetryServer, torsion::Error> {
        let opts = ServeOptions {
            num_bytes: opts.num_bytes.max(1),
            ..opts
        };
        let shared = Rc::new(Shared {
            poem: poem.into(),
            opts,
            busy: Cell::new(false),
            queue: RefCell::default(),
            active: Cell::new(0),
            peak: Cell::new(0),
            served: Cell::new(0),
        });
        let s = shared.clone();
        let factory = Factory::for_protocol(move || SlowPoetry {
            shared: s.clone(),
            serving: Rc::default(),
        });
        let listen = ListenOptions {
            backlog: BACKLOG,
            ..ListenOptions::default()
        };
        let port = reactor.listen_tcp_with(addr, factory, listen)?;
        Ok(PoetryServer { port, shared })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port.port()
    }

    /// The listening port.
    pub fn listening_port(&self) -> &ListeningPort {
        &self.port
    }

    /// Clients whose poem was sent completely.
    pub fn served(&self) -> u64 {
        self.shared.served.get()
    }

    /// Clients being sent their poem right now.
    pub fn active(&self) -> usize {
        self.shared.active.get()
    }

    /// The most clients that were ever being sent their poem at once.
    pub fn peak(&self) -> usize {
        self.shared.peak.get()
    }

    /// Stops listening; clients being served get the rest of their poem.
    pub fn stop_listening(&self) {
        self.port.stop_listening();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use torsion::Factory;

    /// One client's chunks: when each came, and its bytes.
    type Chunks = Vec<(Duration, Vec<u8>)>;
    type Log = Rc<RefCell<Vec<Chunks>>>;

    /// A client that records when each chunk came (an empty chunk for the end) into the log.
    struct Recorder {
        start: Instant,
        got: Chunks,
        log: Log,
        quit_after: Option<usize>,
    }

    impl Protocol for Recorder {
        fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
            let t = cx.transport();
            self.got.push((self.start.elapsed(), data.to_vec()));
            if self.quit_after == Some(self.got.len()) {
                t.abort_connection();
            }
        }
        fn connection_lost(&mut self, _cx: &mut Context<'_>, _: Reason) {
            self.got.push((self.start.elapsed(), Vec::new())); // the end
            self.log.borrow_mut().push(std::mem::take(&mut self.got));
        }
    }

    /// Runs `clients` clients against a server of `poem` with `opts`; `quit_after[i]` makes
    /// client `i` hang up after that many chunks. Returns each client's chunks (in order of
    /// completion) and the server.
    fn serve(
        poem: &'static [u8],
        opts: ServeOptions,
        quit_after: &[Option<usize>],
    ) -> (Vec<Chunks>, PoetryServer) {
        let reactor = Reactor::new().unwrap();
        let server = PoetryServer::listen(&reactor, "127.0.0.1:0", poem, opts).unwrap();
        let log: Log = Rc::default();
        let clients = quit_after.len();
        for &quit in quit_after {
            let log = log.clone();
            let start = Instant::now();
            let factory = Factory::for_protocol(move || Recorder {
                start,
                got: Vec::new(),
                log: log.clone(),
                quit_after: quit,
            });
            reactor.connect_tcp("127.0.0.1", server.port(), factory, Duration::from_secs(5));
        }
        let l = log.clone();
        // Stop once every client's connection ended.
        fn check(r: &Reactor, l: Log, n: usize) {
            if l.borrow().len() == n {
                r.stop().unwrap();
            } else {
                r.call_later(Duration::from_millis(2), move |r| check(r, l, n));
            }
        }
        reactor.call_when_running(move |r| check(r, l, clients));
        reactor.call_later(Duration::from_secs(20), |r| panic!("stuck: {r:?}"));
        reactor.run().unwrap();
        let log = log.take();
        (log, server)
    }

    fn opts(delay_ms: u64, num_bytes: usize) -> ServeOptions {
        ServeOptions {
            delay: Duration::from_millis(delay_ms),
            num_bytes,
            ..ServeOptions::default()
        }
    }

    #[test]
    fn sends_num_bytes_every_delay_then_closes_one_delay_later() {
        let poem: &[u8] = b"0123456789abcdefghijABCDEFGHIJklmno";
        let (log, server) = serve(poem, opts(30, 10), &[None]);
        let chunks = &log[0];
        let bytes: Vec<u8> = chunks.iter().flat_map(|(_, b)| b.clone()).collect();
        assert_eq!(bytes, poem);
        let (end, last) = chunks.last().unwrap();
        assert!(last.is_empty());
        // 4 chunks at 0, 30, 60, 90 ms; FIN at 120 ms (never early).
        assert!(*end >= Duration::from_millis(120), "{end:?}");
        assert!(*end < Duration::from_millis(1000), "{end:?}");
        let sizes: Vec<usize> = chunks.iter().map(|(_, b)| b.len()).collect();
        assert_eq!(sizes, [10, 10, 10, 5, 0], "one chunk per delay");
        for (k, (at, _)) in chunks.iter().enumerate().take(4) {
            assert!(
                *at >= Duration::from_millis(30 * k as u64),
                "chunk {k} at {at:?}"
            );
        }
        assert_eq!((server.served(), server.active(), server.peak()), (1, 0, 1));
    }

    #[test]
    fn serves_all_clients_at_once_by_default() {
        let (log, server) = serve(b"twenty bytes of poem", opts(20, 5), &[None; 5]);
        assert_eq!(log.len(), 5);
        for chunks in &log {
            let (end, _) = chunks.last().unwrap();
            assert!(*end < Duration::from_millis(80 * 3), "{end:?}");
        }
        assert_eq!((server.served(), server.peak()), (5, 5));
    }

    #[test]
    fn one_at_a_time_queues_clients_and_skips_those_who_left() {
        let o = ServeOptions {
            one_at_a_time: true,
            ..opts(10, 5)
        };
        // The second client hangs up after its first chunk; the others get the whole poem.
        let (log, server) = serve(b"twenty bytes of poem", o, &[None, Some(1), None, None]);
        assert_eq!(log.len(), 4);
        let whole = log
            .iter()
            .filter(|c| c.iter().map(|(_, b)| b.len()).sum::<usize>() == 20);
        assert_eq!(whole.count(), 3);
        assert_eq!((server.served(), server.active(), server.peak()), (3, 0, 1));
        // In turn: the last one finished after about four poems' time (3 × 40 ms + a bit).
        let last_end = log.iter().map(|c| c.last().unwrap().0).max().unwrap();
        assert!(last_end >= Duration::from_millis(120), "{last_end:?}");
    }

    #[test]
    fn fast_sends_the_whole_poem_at_once() {
        let o = ServeOptions {
            fast: true,
            ..opts(10_000, 1)
        };
        let (log, server) = serve(crate::poems::ECSTASY.text, o, &[None, None]);
        for chunks in &log {
            let bytes: Vec<u8> = chunks.iter().flat_map(|(_, b)| b.clone()).collect();
            assert_eq!(bytes, crate::poems::ECSTASY.text);
        }
        assert_eq!(server.served(), 2);
    }

    #[test]
    fn an_empty_poem_closes_at_once() {
        let (log, server) = serve(b"", opts(10_000, 10), &[None]);
        assert_eq!(log[0].len(), 1);
        assert!(log[0][0].0 < Duration::from_secs(5));
        assert_eq!(server.served(), 1);
    }
}

//! The TLS layer: a protocol ([`TlsProtocol`]) that runs on any transport and gives the
//! protocol it wraps a transport of its own, driving a rustls connection (sans I/O) from the
//! bytes it receives and the bytes the wrapped protocol writes.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::io::{Read, Write};
use std::rc::{Rc, Weak};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConnection, Connection, ServerConnection};
use torsion::tcp::{DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER};
use torsion::{
    Address, Context, DelayedCall, Error, HalfClose, Producer, Protocol, Reactor, Reason,
    TcpOptions, Transport, TransportImpl,
};

use crate::config::{ClientTls, ServerTls};
use crate::error::{ConfigError, TlsError};

/// Plaintext handed to the wrapped protocol per `data_received` call, at most.
/// (rustls holds at most about 16 KiB of decrypted data, plus one batch of records.)
const READ_CHUNK: usize = 32 * 1024;

/// How long a full close waits for the peer's close_notify after sending its own.
pub const CLOSE_WAIT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum CloseKind {
    Write,
    Full,
}

struct UserProducer {
    producer: Rc<dyn Producer>,
    streaming: bool,
    /// Paused by the wrapped transport's water marks (through the relay).
    by_outer: bool,
    /// Paused by this layer: plaintext queued before the handshake passed the high mark.
    by_us: bool,
    /// A pull producer's request for more that waits for the handshake.
    want_pull: bool,
}

struct State {
    conn: Option<Connection>,
    /// TLS runs (false: pass-through, until `start_tls`).
    started: bool,
    handshaking: bool,
    handshake_timeout: Option<Duration>,
    timer: Option<DelayedCall>,
    /// Received ciphertext not yet taken by rustls, from `pos` on.
    input: Vec<u8>,
    pos: usize,
    /// Plaintext written before the handshake completed.
    pending: Vec<u8>,
    closing: Option<CloseKind>,
    /// What was passed on to the transport below (close_notify sent first with TLS).
    closed_below: Option<CloseKind>,
    peer_closed: bool,
    half_close: Option<HalfClose>,
    failure: Option<TlsError>,
    reading_paused: bool,
    producer: Option<UserProducer>,
    high: usize,
    low: usize,
    lost: bool,
    pump_scheduled: bool,
}

pub(crate) struct Shared {
    st: RefCell<State>,
    inner: RefCell<Option<Box<dyn Protocol>>>,
    outer: RefCell<Option<Transport>>,
    me: RefCell<Option<Transport>>,
    reactor: RefCell<Option<Reactor>>,
    read_buf: Cell<Vec<u8>>,
    /// Ciphertext not yet written below (see `encrypt`).
    outbox: RefCell<Vec<u8>>,
    /// The wrapped protocol is handling received data: ciphertext is batched.
    batching: Cell<bool>,
}

thread_local! {
    /// The TLS transports alive on this thread, by the address of their implementation: how
    /// [`tls`](crate::tls) finds the layer behind a `Transport` without downcasting.
    static REGISTRY: RefCell<HashMap<usize, Weak<Shared>>> = RefCell::new(HashMap::new());
}

fn key_of(t: &Transport) -> usize {
    Rc::as_ptr(t.implementation()) as *const u8 as usize
}

/// The TLS layer of the connection whose transport is `transport`, or `None` when it is not a
/// TLS transport (nor a pass-through layer waiting for `start_tls`).
///
/// # Examples
/// ```
/// use torsion::{Context, Protocol};
///
/// struct ShowAlpn;
/// impl Protocol for ShowAlpn {
///     fn data_received(&mut self, cx: &mut Context<'_>, _: &[u8]) {
///         if let Some(tls) = torsion_tls::tls(cx.transport()) {
///             println!("ALPN: {:?}", tls.alpn_protocol());
///         }
///     }
/// }
/// ```
pub fn tls(transport: &Transport) -> Option<TlsHandle> {
    let k = key_of(transport);
    REGISTRY
        .with(|r| r.borrow().get(&k).cloned())
        .filter(|w| w.strong_count() > 0)
        .map(TlsHandle)
}

/// The transport the wrapped protocol sees.
struct TlsTransport {
    shared: Rc<Shared>,
    outer: Transport,
}

impl Drop for TlsTransport {
    fn drop(&mut self) {
        let k = self as *const TlsTransport as *const u8 as usize;
        let _ = REGISTRY.try_with(|r| r.borrow_mut().remove(&k));
    }
}

/// The streaming or pull producer this layer registers with the transport below, standing
/// for the wrapped protocol's producer.
struct Relay(Weak<Shared>);

impl Producer for Relay {
    fn pause_producing(&self) {
        if let Some(s) = self.0.upgrade() {
            s.producer_pause(true, None);
        }
    }

    fn resume_producing(&self) {
        if let Some(s) = self.0.upgrade() {
            s.producer_resume(true, None);
        }
    }

    fn stop_producing(&self) {
        let Some(s) = self.0.upgrade() else { return };
        let p = s.st.borrow().producer.as_ref().map(|p| p.producer.clone());
        if let Some(p) = p {
            p.stop_producing();
        }
    }
}

struct Restore<'a> {
    slot: &'a RefCell<Option<Box<dyn Protocol>>>,
    p: Option<Box<dyn Protocol>>,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.p.take() {
            *self.slot.borrow_mut() = Some(p);
        }
    }
}

impl Shared {
    fn new(
        inner: Box<dyn Protocol>,
        conn: Option<Connection>,
        timeout: Option<Duration>,
    ) -> Rc<Shared> {
        let started = conn.is_some();
        Rc::new(Shared {
            st: RefCell::new(State {
                conn,
                started,
                handshaking: started,
                handshake_timeout: timeout,
                timer: None,
                input: Vec::new(),
                pos: 0,
                pending: Vec::new(),
                closing: None,
                closed_below: None,
                peer_closed: false,
                half_close: None,
                failure: None,
                reading_paused: false,
                producer: None,
                high: DEFAULT_HIGH_WATER,
                low: DEFAULT_LOW_WATER,
                lost: false,
                pump_scheduled: false,
            }),
            inner: RefCell::new(Some(inner)),
            outer: RefCell::new(None),
            me: RefCell::new(None),
            reactor: RefCell::new(None),
            read_buf: Cell::new(Vec::new()),
            outbox: RefCell::new(Vec::new()),
            batching: Cell::new(false),
        })
    }

    fn outer(&self) -> Option<Transport> {
        self.outer.borrow().clone()
    }

    /// Calls the wrapped protocol with its transport; `None` when it is busy (a nested call)
    /// or gone.
    fn with_inner<R>(
        &self,
        reactor: &Reactor,
        f: impl FnOnce(&mut dyn Protocol, &mut Context<'_>) -> R,
    ) -> Option<R> {
        let me = self.me.borrow().clone()?;
        let p = self.inner.try_borrow_mut().ok()?.take()?;
        let mut guard = Restore {
            slot: &self.inner,
            p: Some(p),
        };
        let r = f(
            &mut **guard.p.as_mut().expect("just put"),
            &mut Context::new(reactor, &me),
        );
        drop(guard);
        Some(r)
    }

    /// Sends what rustls has to send (handshake messages, records, alerts) down.
    fn flush_out(&self) {
        {
            let mut st = self.st.borrow_mut();
            let mut out = self.outbox.borrow_mut();
            if let Some(conn) = st.conn.as_mut() {
                while conn.wants_write() {
                    if conn.write_tls(&mut *out).is_err() {
                        break;
                    }
                }
            }
        }
        if !self.batching.get() {
            self.drain_outbox();
        }
    }

    /// Encrypts `data` (the handshake is complete) and sends it down (or, while the wrapped
    /// protocol handles received data, adds it to the batch sent when it returns: one write
    /// below for many records).
    fn encrypt(&self, data: &[&[u8]]) {
        {
            let mut st = self.st.borrow_mut();
            let Some(conn) = st.conn.as_mut() else { return };
            let mut out = self.outbox.borrow_mut();
            for mut d in data.iter().copied() {
                while !d.is_empty() {
                    match conn.writer().write(d) {
                        Ok(n) if n > 0 => d = &d[n..],
                        _ => break,
                    }
                    while conn.wants_write() {
                        if conn.write_tls(&mut *out).is_err() {
                            break;
                        }
                    }
                }
            }
        }
        if !self.batching.get() {
            self.drain_outbox();
        }
    }

    /// Writes the ciphertext waiting in the outbox to the transport below.
    fn drain_outbox(&self) {
        let mut buf = std::mem::take(&mut *self.outbox.borrow_mut());
        if buf.is_empty() {
            *self.outbox.borrow_mut() = buf;
            return;
        }
        if let Some(o) = self.outer() {
            o.write(&buf);
        }
        buf.clear();
        let mut slot = self.outbox.borrow_mut();
        if slot.is_empty() && buf.capacity() <= 1024 * 1024 {
            *slot = buf; // keep the allocation for the next batch
        }
    }

    fn write(&self, data: &[&[u8]]) {
        let (passthrough, queue) = {
            let st = self.st.borrow();
            if st.lost || st.failure.is_some() || st.closed_below.is_some() {
                return;
            }
            (!st.started, st.handshaking)
        };
        if passthrough {
            if let Some(o) = self.outer() {
                o.write_sequence(data);
            }
        } else if queue {
            let pause = {
                let mut st = self.st.borrow_mut();
                for d in data {
                    st.pending.extend_from_slice(d);
                }
                let over = st.pending.len() > st.high;
                match st.producer.as_mut() {
                    Some(p) if over && p.streaming && !p.by_us => {
                        p.by_us = true;
                        (!p.by_outer).then(|| p.producer.clone())
                    }
                    _ => None,
                }
            };
            if let Some(p) = pause {
                p.pause_producing();
            }
        } else {
            self.encrypt(data);
        }
    }

    /// A pause of the wrapped protocol's producer, by the transport below (`outer`) or by
    /// this layer.
    fn producer_pause(&self, outer: bool, _: Option<()>) {
        let p = {
            let mut st = self.st.borrow_mut();
            let Some(p) = st.producer.as_mut() else {
                return;
            };
            let was = p.by_outer || p.by_us;
            if outer {
                p.by_outer = true;
            } else {
                p.by_us = true;
            }
            (!was).then(|| p.producer.clone())
        };
        if let Some(p) = p {
            p.pause_producing();
        }
    }

    fn producer_resume(&self, outer: bool, _: Option<()>) {
        let p = {
            let mut st = self.st.borrow_mut();
            let handshaking = st.started && st.handshaking;
            let pending = st.pending.len();
            let low = st.low;
            let Some(p) = st.producer.as_mut() else {
                return;
            };
            if !p.streaming {
                // A pull producer: asked for more once the queued plaintext went out.
                if handshaking && pending > 0 {
                    p.want_pull = true;
                    None
                } else {
                    p.want_pull = false;
                    Some(p.producer.clone())
                }
            } else {
                let was = p.by_outer || p.by_us;
                if outer {
                    p.by_outer = false;
                } else if pending <= low {
                    p.by_us = false;
                }
                (was && !p.by_outer && !p.by_us).then(|| p.producer.clone())
            }
        };
        if let Some(p) = p {
            p.resume_producing();
        }
    }

    fn start_timer(self: &Rc<Self>, reactor: &Reactor) {
        let Some(d) = self.st.borrow().handshake_timeout else {
            return;
        };
        let w = Rc::downgrade(self);
        let timer = reactor.call_later(d, move |_| {
            let Some(s) = w.upgrade() else { return };
            {
                let mut st = s.st.borrow_mut();
                st.timer = None;
                if st.lost || !st.handshaking || st.failure.is_some() {
                    return;
                }
                st.failure = Some(TlsError::HandshakeTimeout(d));
            }
            tracing::warn!(peer = %s.peer(), timeout = ?d, "TLS handshake timed out; aborting the connection");
            if let Some(o) = s.outer() {
                o.abort_connection();
            }
        });
        self.st.borrow_mut().timer = Some(timer);
    }

    fn peer(&self) -> String {
        self.outer()
            .map_or_else(|| "?".into(), |o| o.peer().to_string())
    }

    /// Feeds received ciphertext to rustls, delivers plaintext, until nothing moves.
    fn pump(self: &Rc<Self>, reactor: &Reactor, mut fresh: &[u8]) {
        loop {
            let decrypted = self.decrypt(&mut fresh);
            self.flush_out();
            self.after_handshake(reactor);
            let failed = self.st.borrow().failure.is_some();
            if failed {
                self.fail_close();
                return;
            }
            let outermost = !self.batching.replace(true);
            let delivered = self.deliver(reactor);
            if outermost {
                self.batching.set(false);
                self.drain_outbox();
            }
            if !decrypted && !delivered {
                break;
            }
        }
        if !fresh.is_empty() {
            // Reading paused (or rustls full): keep the rest for later, in order.
            let mut st = self.st.borrow_mut();
            if !st.lost && st.failure.is_none() {
                st.input.extend_from_slice(fresh);
            }
        }
    }

    /// Moves received ciphertext into rustls: what was kept from before, then `fresh` (read
    /// in place, not copied). True when any was taken.
    fn decrypt(&self, fresh: &mut &[u8]) -> bool {
        let mut st = self.st.borrow_mut();
        if st.lost || st.failure.is_some() || st.reading_paused {
            return false;
        }
        let mut moved = false;
        let mut failure = None;
        {
            let State {
                conn, input, pos, ..
            } = &mut *st;
            let Some(conn) = conn.as_mut() else {
                return false;
            };
            loop {
                let from_kept = *pos < input.len();
                let mut rd: &[u8] = if from_kept { &input[*pos..] } else { fresh };
                if rd.is_empty() {
                    break;
                }
                let before = rd.len();
                match conn.read_tls(&mut rd) {
                    Ok(0) => break,
                    Ok(_) => {
                        let n = before - rd.len();
                        if from_kept {
                            *pos += n;
                        } else {
                            *fresh = &fresh[n..];
                        }
                        moved = true;
                    }
                    // The plaintext buffer is full: deliver first.
                    Err(_) => break,
                }
                match conn.process_new_packets() {
                    Ok(_) => {}
                    Err(e) => {
                        failure = Some(TlsError::classify(e, conn.is_handshaking()));
                        break;
                    }
                }
            }
            if *pos == input.len() {
                input.clear();
                *pos = 0;
            } else if *pos > 64 * 1024 {
                input.drain(..*pos);
                *pos = 0;
            }
        }
        if let Some(f) = failure {
            st.input.clear();
            st.pos = 0;
            st.failure = Some(f);
        }
        moved
    }

    /// After a handshake completed: cancel the timer, send the queued plaintext, resume the
    /// producer, and go on with a close asked for meanwhile.
    fn after_handshake(self: &Rc<Self>, _reactor: &Reactor) {
        let (pending, timer, pull) = {
            let mut st = self.st.borrow_mut();
            let done = match st.conn.as_ref() {
                Some(c) => st.handshaking && !c.is_handshaking(),
                None => false,
            };
            if !done || st.failure.is_some() {
                return;
            }
            st.handshaking = false;
            if let Some(c) = st.conn.as_ref() {
                tracing::debug!(
                    peer = %self.peer(),
                    version = ?c.protocol_version(),
                    suite = ?c.negotiated_cipher_suite().map(|s| s.suite()),
                    alpn = ?c.alpn_protocol().map(String::from_utf8_lossy),
                    "TLS handshake complete"
                );
            }
            let pending = std::mem::take(&mut st.pending);
            let timer = st.timer.take();
            let pull = match st.producer.as_mut() {
                Some(p) if !p.streaming && p.want_pull => {
                    p.want_pull = false;
                    Some(p.producer.clone())
                }
                _ => None,
            };
            (pending, timer, pull)
        };
        if let Some(t) = timer {
            let _ = t.cancel();
        }
        if !pending.is_empty() {
            self.encrypt(&[&pending]);
        }
        // The queued plaintext is gone: lift this layer's pause (the transport below may
        // hold its own, now that the plaintext is in its buffer).
        let streaming_paused_by_us = self
            .st
            .borrow()
            .producer
            .as_ref()
            .is_some_and(|p| p.streaming && p.by_us);
        if streaming_paused_by_us {
            self.producer_resume(false, None);
        }
        if let Some(p) = pull {
            p.resume_producing();
        }
        self.try_close();
    }

    /// Hands decrypted plaintext to the wrapped protocol while it reads. True when any was
    /// delivered or the peer's close_notify was seen.
    fn deliver(self: &Rc<Self>, reactor: &Reactor) -> bool {
        let mut any = false;
        let mut buf = self.read_buf.take();
        buf.resize(READ_CHUNK, 0);
        let mut close_seen = false;
        loop {
            let n = {
                let mut st = self.st.borrow_mut();
                if st.lost || st.reading_paused || st.peer_closed || st.failure.is_some() {
                    break;
                }
                if self.inner.try_borrow().map_or(true, |i| i.is_none()) {
                    break; // the wrapped protocol is busy (or gone): the data waits
                }
                let discard = st.closing == Some(CloseKind::Full);
                let Some(conn) = st.conn.as_mut() else { break };
                if conn.is_handshaking() {
                    break;
                }
                match conn.reader().read(&mut buf) {
                    // After our full close, what the peer still sends is dropped.
                    Ok(n) if n > 0 && discard => continue,
                    Ok(0) => {
                        st.peer_closed = true;
                        close_seen = true;
                        break;
                    }
                    Ok(n) => n,
                    Err(_) => break,
                }
            };
            any = true;
            if self
                .with_inner(reactor, |p, cx| p.data_received(cx, &buf[..n]))
                .is_none()
            {
                break;
            }
        }
        self.read_buf.set(buf);
        if close_seen {
            tracing::debug!(peer = %self.peer(), "TLS close_notify received");
            let closing = self.st.borrow().closing;
            if closing == Some(CloseKind::Full) {
                // The answer to our close_notify: the close completes.
                let timer = self.st.borrow_mut().timer.take();
                if let Some(t) = timer {
                    let _ = t.cancel();
                }
                if self.st.borrow().closed_below.is_some() {
                    if let Some(o) = self.outer() {
                        o.lose_connection();
                    }
                }
                return true;
            }
            let hc = self
                .with_inner(reactor, |p, cx| p.read_connection_lost(cx))
                .unwrap_or(HalfClose::Close);
            self.st.borrow_mut().half_close = Some(hc);
            if hc == HalfClose::Close {
                self.lose(CloseKind::Full);
            }
            any = true;
        }
        any
    }

    /// After a TLS failure: send the alert rustls queued and close the transport below.
    fn fail_close(self: &Rc<Self>) {
        let (first, timer) = {
            let mut st = self.st.borrow_mut();
            let first = st.closed_below.is_none();
            st.closed_below = Some(CloseKind::Full);
            (first, st.timer.take())
        };
        if let Some(t) = timer {
            let _ = t.cancel();
        }
        if first {
            if let Some(f) = self.st.borrow().failure.as_ref() {
                tracing::warn!(peer = %self.peer(), error = %torsion::error::Chain(f), "TLS connection failed");
            }
            self.flush_out();
            self.drain_outbox();
            if let Some(o) = self.outer() {
                o.lose_connection();
            }
        }
    }

    fn lose(self: &Rc<Self>, kind: CloseKind) {
        {
            let mut st = self.st.borrow_mut();
            if st.closing != Some(CloseKind::Full) {
                st.closing = Some(kind);
            }
        }
        self.try_close();
    }

    /// Passes a close down once nothing is left to send. With TLS: close_notify, then a
    /// half-close of the transport below (which flushes first); a full close then waits for
    /// the peer's close_notify or end of stream (at most [`CLOSE_WAIT`]) before closing the
    /// transport, so that the peer's answering close_notify does not meet a closed socket.
    fn try_close(self: &Rc<Self>) {
        let (kind, notify, started) = {
            let mut st = self.st.borrow_mut();
            let Some(kind) = st.closing else { return };
            if st.lost || st.closed_below == Some(CloseKind::Full) || st.closed_below == Some(kind)
            {
                return;
            }
            if st.started && (st.handshaking || st.producer.is_some()) {
                return;
            }
            let notify = st.closed_below.is_none();
            st.closed_below = Some(kind);
            if notify {
                if let Some(c) = st.conn.as_mut() {
                    c.send_close_notify();
                }
            }
            if kind == CloseKind::Full {
                // Whatever the peer still sends is read (to find its close_notify) and dropped.
                st.reading_paused = false;
            }
            (kind, notify, st.started)
        };
        self.flush_out();
        self.drain_outbox();
        let Some(o) = self.outer() else { return };
        if !started {
            match kind {
                CloseKind::Full => o.lose_connection(),
                CloseKind::Write => o.lose_write_connection(),
            }
            return;
        }
        if notify {
            o.lose_write_connection();
        }
        if kind == CloseKind::Full {
            o.resume_producing();
            let peer_done = self.st.borrow().peer_closed;
            if peer_done {
                o.lose_connection();
            } else {
                self.start_close_timer();
                // Decrypted data may already wait: look for the close_notify in it.
                self.schedule_pump();
            }
        }
    }

    fn start_close_timer(self: &Rc<Self>) {
        let Some(r) = self.reactor.borrow().clone() else {
            return;
        };
        let w = Rc::downgrade(self);
        let t = r.call_later(CLOSE_WAIT, move |_| {
            if let Some(s) = w.upgrade() {
                s.st.borrow_mut().timer = None;
                tracing::debug!(peer = %s.peer(), "TLS: no close_notify from the peer in time; closing");
                if let Some(o) = s.outer() {
                    o.lose_connection();
                }
            }
        });
        if let Some(old) = self.st.borrow_mut().timer.replace(t) {
            let _ = old.cancel();
        }
    }

    fn schedule_pump(self: &Rc<Self>) {
        let Some(r) = self.reactor.borrow().clone() else {
            return;
        };
        if std::mem::replace(&mut self.st.borrow_mut().pump_scheduled, true) {
            return;
        }
        let w = Rc::downgrade(self);
        r.call_soon(move |r| {
            if let Some(s) = w.upgrade() {
                s.st.borrow_mut().pump_scheduled = false;
                s.pump(r, &[]);
            }
        });
    }

    fn start(
        self: &Rc<Self>,
        conn: Connection,
        timeout: Option<Duration>,
        leftover: &[u8],
    ) -> Result<(), StartTlsError> {
        {
            let mut st = self.st.borrow_mut();
            if st.started {
                return Err(StartTlsError::AlreadyStarted);
            }
            if st.lost || st.closing.is_some() {
                return Err(StartTlsError::Closed);
            }
            st.conn = Some(conn);
            st.started = true;
            st.handshaking = true;
            st.handshake_timeout = timeout;
            st.input.extend_from_slice(leftover);
        }
        let reactor = self.reactor.borrow().clone();
        if let Some(r) = reactor {
            self.start_timer(&r);
        }
        self.flush_out();
        if !leftover.is_empty() {
            self.schedule_pump();
        }
        Ok(())
    }
}

// --------------------------------------------------------------------------- the transport

impl TransportImpl for TlsTransport {
    fn write_sequence(&self, data: &[&[u8]]) {
        self.shared.write(data);
    }

    fn lose_connection(&self) {
        self.shared.lose(CloseKind::Full);
    }

    fn abort_connection(&self) {
        self.shared.st.borrow_mut().closing = Some(CloseKind::Full);
        self.outer.abort_connection();
    }

    fn lose_write_connection(&self) {
        self.shared.lose(CloseKind::Write);
    }

    fn register_producer(&self, producer: Rc<dyn Producer>, streaming: bool) -> Result<(), Error> {
        {
            let mut st = self.shared.st.borrow_mut();
            if st.producer.is_some() {
                return Err(Error::ProducerAlreadyRegistered);
            }
            if st.lost {
                drop(st);
                producer.stop_producing();
                return Ok(());
            }
            st.producer = Some(UserProducer {
                producer,
                streaming,
                by_outer: false,
                by_us: false,
                want_pull: false,
            });
        }
        let r = self
            .outer
            .register_producer(Rc::new(Relay(Rc::downgrade(&self.shared))), streaming);
        if r.is_err() {
            self.shared.st.borrow_mut().producer = None;
        }
        r
    }

    fn unregister_producer(&self) {
        let p = self.shared.st.borrow_mut().producer.take();
        if p.is_some() {
            self.outer.unregister_producer();
        }
        drop(p);
        self.shared.try_close();
    }

    fn pause_producing(&self) {
        self.shared.st.borrow_mut().reading_paused = true;
        self.outer.pause_producing();
    }

    fn resume_producing(&self) {
        let was = std::mem::replace(&mut self.shared.st.borrow_mut().reading_paused, false);
        self.outer.resume_producing();
        if was {
            self.shared.schedule_pump();
        }
    }

    fn stop_producing(&self) {
        self.lose_connection();
    }

    fn peer(&self) -> Address {
        self.outer.peer()
    }

    fn host(&self) -> Address {
        self.outer.host()
    }

    fn buffered(&self) -> usize {
        self.outer.buffered()
            + self.shared.st.borrow().pending.len()
            + self.shared.outbox.borrow().len()
    }

    fn set_write_buffer_limits(&self, high: usize, low: usize) {
        {
            let mut st = self.shared.st.borrow_mut();
            st.high = high;
            st.low = low.min(high);
        }
        self.outer.set_write_buffer_limits(high, low);
    }

    fn connected(&self) -> bool {
        let st = self.shared.st.borrow();
        !st.lost && st.failure.is_none() && self.outer.connected()
    }

    fn disconnecting(&self) -> bool {
        self.shared.st.borrow().closing.is_some() || self.outer.disconnecting()
    }

    fn tcp(&self) -> Option<&dyn TcpOptions> {
        self.outer.tcp()
    }
}

// --------------------------------------------------------------------------- the protocol

/// The TLS layer as a protocol: put it on any transport (TCP, a Unix socket, the testing
/// kit's in-memory pair) and it runs the protocol it wraps over TLS, which sees a
/// [`Transport`] of its own and does not know it is encrypted.
///
/// [`listen_ssl`](crate::ReactorTls::listen_ssl) and
/// [`connect_ssl`](crate::ReactorTls::connect_ssl) build it for you; build it by hand to run
/// TLS over another transport, or with [`pass_through`](Self::pass_through) for STARTTLS.
///
/// The wrapped protocol's `connection_made` runs at once, before the handshake; what it
/// writes meanwhile is queued and sent once the handshake completes.
///
/// # Examples
/// TLS over the testing kit's in-memory pair, no socket:
/// ```
/// # let cert = rcgen::generate_simple_self_signed(vec!["example.test".into()]).unwrap();
/// # let (cert_pem, key_pem) = (cert.cert.pem(), cert.key_pair.serialize_pem());
/// use std::cell::RefCell;
/// use std::rc::Rc;
/// use torsion::testing::{IoPump, MemoryReactor};
/// use torsion::{Context, Protocol};
/// use torsion_tls::{ClientTls, ServerTls, TlsProtocol};
///
/// struct Echo;
/// impl Protocol for Echo {
///     fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
///         cx.transport().write(data);
///     }
/// }
/// struct Hello(Rc<RefCell<Vec<u8>>>);
/// impl Protocol for Hello {
///     fn connection_made(&mut self, cx: &mut Context<'_>) {
///         cx.transport().write(b"hello"); // queued until the handshake is done
///     }
///     fn data_received(&mut self, _: &mut Context<'_>, data: &[u8]) {
///         self.0.borrow_mut().extend_from_slice(data);
///     }
/// }
///
/// let server = ServerTls::builder().certificate_pem(cert_pem.as_bytes(), key_pem.as_bytes())?.build()?;
/// let client = ClientTls::builder()
///     .root(torsion_tls::certificates_from_pem(cert_pem.as_bytes(), "cert")?.remove(0))?
///     .build()?;
/// let got = Rc::new(RefCell::new(Vec::new()));
/// let mr = MemoryReactor::new()?;
/// let pump = IoPump::new(
///     mr.reactor(),
///     Box::new(TlsProtocol::server(Box::new(Echo), &server)?),
///     Box::new(TlsProtocol::client(Box::new(Hello(got.clone())), &client, "example.test")?),
/// );
/// pump.flush();
/// assert_eq!(*got.borrow(), b"hello");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TlsProtocol {
    shared: Rc<Shared>,
}

impl fmt::Debug for TlsProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.shared.st.borrow();
        f.debug_struct("TlsProtocol")
            .field("started", &st.started)
            .field("handshaking", &st.handshaking)
            .finish_non_exhaustive()
    }
}

impl TlsProtocol {
    /// The server side of TLS around `inner`.
    ///
    /// # Errors
    /// When rustls refuses the configuration.
    pub fn server(inner: Box<dyn Protocol>, tls: &ServerTls) -> Result<TlsProtocol, ConfigError> {
        let conn = ServerConnection::new(tls.config.clone())?;
        Ok(TlsProtocol {
            shared: Shared::new(inner, Some(conn.into()), tls.handshake_timeout),
        })
    }

    /// The client side of TLS around `inner`; the server's certificate must be valid for
    /// `server_name` (unless the configuration names another), which is also sent by SNI.
    ///
    /// # Errors
    /// [`ConfigError::BadName`] for a name that is neither a DNS name nor an IP address.
    pub fn client(
        inner: Box<dyn Protocol>,
        tls: &ClientTls,
        server_name: &str,
    ) -> Result<TlsProtocol, ConfigError> {
        let conn = client_conn(tls, server_name)?;
        Ok(TlsProtocol {
            shared: Shared::new(inner, Some(conn), tls.handshake_timeout),
        })
    }

    /// No TLS yet: bytes pass through unchanged until the wrapped protocol calls
    /// [`TlsHandle::start_tls_server`] or [`TlsHandle::start_tls_client`] (STARTTLS).
    pub fn pass_through(inner: Box<dyn Protocol>) -> TlsProtocol {
        TlsProtocol {
            shared: Shared::new(inner, None, None),
        }
    }

    /// The handle of this layer.
    pub fn handle(&self) -> TlsHandle {
        TlsHandle(Rc::downgrade(&self.shared))
    }
}

fn client_conn(tls: &ClientTls, host: &str) -> Result<Connection, ConfigError> {
    let name: ServerName<'static> = tls.name_for(host)?;
    if !tls.verifies_certificates() {
        tracing::warn!(server = ?name, "TLS connection WITHOUT certificate verification");
    }
    Ok(ClientConnection::new(tls.config.clone(), name)?.into())
}

impl Protocol for TlsProtocol {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        let s = &self.shared;
        *s.reactor.borrow_mut() = Some(cx.reactor().clone());
        *s.outer.borrow_mut() = Some(cx.transport().clone());
        let imp = Rc::new(TlsTransport {
            shared: s.clone(),
            outer: cx.transport().clone(),
        });
        let k = Rc::as_ptr(&imp) as *const u8 as usize;
        REGISTRY.with(|r| r.borrow_mut().insert(k, Rc::downgrade(s)));
        *s.me.borrow_mut() = Some(Transport::new(imp));
        if s.st.borrow().started {
            s.start_timer(cx.reactor());
            s.flush_out();
        }
        s.with_inner(cx.reactor(), |p, cx| p.connection_made(cx));
    }

    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        let s = &self.shared;
        if !s.st.borrow().started {
            s.with_inner(cx.reactor(), |p, cx| p.data_received(cx, data));
            return;
        }
        s.pump(cx.reactor(), data);
    }

    fn read_connection_lost(&mut self, cx: &mut Context<'_>) -> HalfClose {
        let s = &self.shared;
        let (started, peer_closed, hc, handshaking) = {
            let st = s.st.borrow();
            (st.started, st.peer_closed, st.half_close, st.handshaking)
        };
        if !started {
            return s
                .with_inner(cx.reactor(), |p, cx| p.read_connection_lost(cx))
                .unwrap_or(HalfClose::Close);
        }
        if peer_closed {
            return hc.unwrap_or(HalfClose::Close);
        }
        let mut st = s.st.borrow_mut();
        if st.closed_below == Some(CloseKind::Full) {
            return HalfClose::Close; // we closed first: its end of stream ends our wait
        }
        if st.failure.is_none() {
            st.failure = Some(if handshaking {
                TlsError::HandshakeFailed(rustls::Error::General(
                    "the peer closed the connection during the handshake".into(),
                ))
            } else {
                TlsError::Truncated
            });
        }
        HalfClose::Close
    }

    fn write_connection_lost(&mut self, cx: &mut Context<'_>) {
        let st = self.shared.st.borrow();
        // Our own half-close of a full TLS close is not the wrapped protocol's business.
        if st.started && st.closing != Some(CloseKind::Write) {
            return;
        }
        drop(st);
        self.shared
            .with_inner(cx.reactor(), |p, cx| p.write_connection_lost(cx));
    }

    fn connection_lost(&mut self, cx: &mut Context<'_>, reason: Reason) {
        let s = &self.shared;
        let (reason, timer) = {
            let mut st = s.st.borrow_mut();
            st.lost = true;
            let timer = st.timer.take();
            let clean_close = st.peer_closed || st.closed_below.is_some();
            let r = if let Some(f) = st.failure.clone() {
                f.into_reason()
            } else if reason.is_clean() && st.started && !clean_close {
                st.failure = Some(TlsError::Truncated);
                TlsError::Truncated.into_reason()
            } else {
                reason
            };
            (r, timer)
        };
        if let Some(t) = timer {
            let _ = t.cancel();
        }
        if let Some(e) = TlsError::of(&reason) {
            tracing::warn!(peer = %s.peer(), error = %torsion::error::Chain(e), "TLS connection lost");
        }
        s.with_inner(cx.reactor(), |p, cx| p.connection_lost(cx, reason));
        // As the transports do: the protocol is dropped after connection_lost (it may hold
        // its transport, which holds this layer).
        let inner = s.inner.borrow_mut().take();
        drop(inner);
        // Let go of everything that refers back to the connection.
        let producer = s.st.borrow_mut().producer.take();
        drop(producer);
        s.st.borrow_mut().conn = None;
        s.me.borrow_mut().take();
        s.outer.borrow_mut().take();
        s.reactor.borrow_mut().take();
    }
}

// --------------------------------------------------------------------------- the handle

/// Why [`TlsHandle::start_tls_server`] or [`TlsHandle::start_tls_client`] refused.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartTlsError {
    /// TLS already runs on this connection.
    AlreadyStarted,
    /// The connection is closed or closing.
    Closed,
    /// The configuration was refused.
    Config(ConfigError),
}

impl fmt::Display for StartTlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartTlsError::AlreadyStarted => f.write_str("TLS already runs on this connection"),
            StartTlsError::Closed => f.write_str("the connection is closed or closing"),
            StartTlsError::Config(e) => write!(f, "cannot start TLS: {e}"),
        }
    }
}

impl std::error::Error for StartTlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartTlsError::Config(e) => Some(e),
            _ => None,
        }
    }
}

/// A handle on a connection's TLS layer: what was negotiated (ALPN, SNI name, peer
/// certificates, version, cipher suite), and STARTTLS. Get it with [`tls`](crate::tls) from
/// the connection's transport, or from [`TlsProtocol::handle`]. Holds no reference that
/// keeps the connection alive; once the connection is gone its queries return `None`.
#[derive(Clone)]
pub struct TlsHandle(Weak<Shared>);

impl fmt::Debug for TlsHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsHandle")
            .field("started", &self.is_started())
            .field("handshake_complete", &self.handshake_complete())
            .finish()
    }
}

impl TlsHandle {
    fn with_conn<R>(&self, f: impl FnOnce(&Connection) -> R) -> Option<R> {
        let s = self.0.upgrade()?;
        let st = s.st.borrow();
        st.conn.as_ref().map(f)
    }

    /// TLS runs on the connection (false for a pass-through layer before `start_tls`).
    pub fn is_started(&self) -> bool {
        self.0.upgrade().is_some_and(|s| s.st.borrow().started)
    }

    /// The handshake completed.
    pub fn handshake_complete(&self) -> bool {
        self.0.upgrade().is_some_and(|s| {
            let st = s.st.borrow();
            st.started && !st.handshaking && st.conn.is_some()
        })
    }

    /// The application protocol negotiated by ALPN.
    pub fn alpn_protocol(&self) -> Option<Vec<u8>> {
        self.with_conn(|c| c.alpn_protocol().map(<[u8]>::to_vec))
            .flatten()
    }

    /// The peer's certificate chain (leaf first), once the handshake completed; `None` from a
    /// client that presented none.
    pub fn peer_certificates(&self) -> Option<Vec<CertificateDer<'static>>> {
        self.with_conn(|c| {
            c.peer_certificates()
                .map(<[CertificateDer<'static>]>::to_vec)
        })
        .flatten()
    }

    /// On a server: the name the client asked for by SNI.
    pub fn server_name(&self) -> Option<String> {
        self.with_conn(|c| match c {
            Connection::Server(s) => s.server_name().map(str::to_string),
            Connection::Client(_) => None,
        })
        .flatten()
    }

    /// The negotiated protocol version.
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.with_conn(|c| c.protocol_version()).flatten()
    }

    /// The negotiated cipher suite.
    pub fn cipher_suite(&self) -> Option<rustls::CipherSuite> {
        self.with_conn(|c| c.negotiated_cipher_suite().map(|s| s.suite()))
            .flatten()
    }

    /// STARTTLS as the server: from the next byte on, the connection runs TLS. Bytes this
    /// side already wrote are sent first, in order. `already_received` is what the protocol
    /// received after its STARTTLS command and did not consume (the start of the client's
    /// handshake, when it did not wait for the reply): it is fed to TLS first.
    ///
    /// # Errors
    /// [`StartTlsError::AlreadyStarted`], [`StartTlsError::Closed`], or a refused
    /// configuration.
    pub fn start_tls_server(
        &self,
        tls: &ServerTls,
        already_received: &[u8],
    ) -> Result<(), StartTlsError> {
        let s = self.0.upgrade().ok_or(StartTlsError::Closed)?;
        let conn = ServerConnection::new(tls.config.clone())
            .map_err(|e| StartTlsError::Config(e.into()))?;
        s.start(conn.into(), tls.handshake_timeout, already_received)
    }

    /// STARTTLS as the client: sends the client's hello now; the server's certificate must
    /// be valid for `server_name` (unless the configuration names another).
    ///
    /// # Errors
    /// As [`start_tls_server`](Self::start_tls_server), and [`ConfigError::BadName`].
    pub fn start_tls_client(
        &self,
        tls: &ClientTls,
        server_name: &str,
        already_received: &[u8],
    ) -> Result<(), StartTlsError> {
        let s = self.0.upgrade().ok_or(StartTlsError::Closed)?;
        let conn = client_conn(tls, server_name).map_err(StartTlsError::Config)?;
        s.start(conn, tls.handshake_timeout, already_received)
    }
}

//! [`LineReceiver`] (lines, raw mode, pausing) and [`LineOnlyReceiver`] (lines only).

use std::cell::{Cell, Ref, RefCell};
use std::rc::{Rc, Weak};

use super::decode::{Decoder, EmptyDelimiter, FrameError, LineDecoder};
use super::refuse;
use crate::interfaces::{Context, HalfClose, Producer, Protocol, Transport};
use crate::{Reactor, Reason};

// ---------------------------------------------------------------------------------- LineReceiver

/// The user's side of a [`LineReceiver`]: what to do with each line (Twisted's
/// `LineReceiver` subclass methods). Every callback gets a [`LineContext`], which can send
/// lines, switch to raw mode and back, pause, and change the delimiter or the limit.
pub trait LineHandler {
    /// The connection is established.
    fn connection_made(&mut self, cx: &mut LineContext<'_, '_>) {
        let _ = cx;
    }

    /// A line arrived, without its delimiter.
    fn line_received(&mut self, cx: &mut LineContext<'_, '_>, line: &[u8]);

    /// Bytes arrived in raw mode (after [`LineContext::set_raw_mode`]). The default logs a
    /// warning and closes the connection: a handler that enters raw mode implements this.
    fn raw_data_received(&mut self, cx: &mut LineContext<'_, '_>, data: &[u8]) {
        tracing::warn!(
            peer = %cx.transport().peer(),
            bytes = data.len(),
            "raw data received by a LineHandler without raw_data_received: closing the connection"
        );
        cx.transport().lose_connection();
    }

    /// A line was longer than the maximum (Twisted's `lineLengthExceeded`). The default logs
    /// the error and closes the connection. If the connection stays open, the rest of the
    /// over-long line is skipped and the next line is delivered.
    fn line_length_exceeded(&mut self, cx: &mut LineContext<'_, '_>, error: &FrameError) {
        refuse(cx.transport(), error);
    }

    /// The connection is gone. An unfinished last line is not delivered.
    fn connection_lost(&mut self, cx: &mut LineContext<'_, '_>, reason: Reason) {
        let _ = (cx, reason);
    }

    /// The peer closed its sending side; see [`Protocol::read_connection_lost`].
    fn read_connection_lost(&mut self, cx: &mut LineContext<'_, '_>) -> HalfClose {
        let _ = cx;
        HalfClose::Close
    }

    /// Our sending side was closed; see [`Protocol::write_connection_lost`].
    fn write_connection_lost(&mut self, cx: &mut LineContext<'_, '_>) {
        let _ = cx;
    }
}

/// Settings a callback changed, applied when it returns (the decoder is busy while a line it
/// returned is being handled).
#[derive(Debug)]
struct Ctl {
    raw: bool,
    delimiter: Vec<u8>,
    max_length: usize,
    settings_changed: bool,
    /// Bytes given to `set_line_mode_with`, decoded after what is left of the current data.
    extra: Vec<u8>,
    /// `clear_line_buffer` was called: drop what is left of the current data.
    cleared: bool,
}

/// What a [`PauseHandle`] shares with its receiver.
struct Shared {
    paused: Cell<bool>,
    closed: Cell<bool>,
    /// The transport while connected (cleared by `connection_lost`, so no cycle outlives the
    /// connection).
    transport: RefCell<Option<Transport>>,
    core: RefCell<Option<Weak<RefCell<dyn Drain>>>>,
}

/// Delivers what a pause held back.
trait Drain {
    fn drain(&mut self, shared: &Rc<Shared>);
}

struct Core<H> {
    handler: H,
    decoder: LineDecoder,
    ctl: Ctl,
    /// What arrived or was left while paused, in order.
    pending: Vec<u8>,
    /// The reactor while connected (for the context of a delivery a [`PauseHandle`] starts);
    /// weak, so that the receiver never keeps its reactor from shutting down when dropped.
    reactor: Weak<crate::reactor::Inner>,
}

/// The context of a [`LineHandler`] callback: the connection's [`Context`] plus the line
/// receiver's controls.
pub struct LineContext<'c, 'a> {
    cx: &'c mut Context<'a>,
    ctl: &'c mut Ctl,
    shared: &'c Rc<Shared>,
    rest: &'c [u8],
}

impl<'a> LineContext<'_, 'a> {
    /// The connection's transport.
    pub fn transport(&self) -> &'a Transport {
        self.cx.transport()
    }

    /// The reactor.
    pub fn reactor(&self) -> &'a Reactor {
        self.cx.reactor()
    }

    /// The connection's plain [`Context`].
    pub fn context(&mut self) -> &mut Context<'a> {
        self.cx
    }

    /// Writes `line` and the delimiter (Twisted's `sendLine`), in one write.
    pub fn send_line(&self, line: &[u8]) {
        self.transport()
            .write_sequence(&[line, &self.ctl.delimiter]);
    }

    /// Delivers what follows to [`LineHandler::raw_data_received`] instead of splitting it
    /// into lines (Twisted's `setRawMode`): the rest of the current data, unsplit, as soon as
    /// this callback returns.
    pub fn set_raw_mode(&mut self) {
        self.ctl.raw = true;
    }

    /// Splits what follows into lines again (Twisted's `setLineMode`).
    pub fn set_line_mode(&mut self) {
        self.ctl.raw = false;
    }

    /// Splits what follows into lines again, starting with `extra`, then what is left of the
    /// current data (Twisted's `setLineMode(extra)`). From `raw_data_received`, `extra` is the
    /// part of the raw data that belongs to the lines after it.
    pub fn set_line_mode_with(&mut self, extra: &[u8]) {
        self.ctl.raw = false;
        self.ctl.extra.extend_from_slice(extra);
    }

    /// True in raw mode.
    pub fn raw_mode(&self) -> bool {
        self.ctl.raw
    }

    /// Stops delivering lines (and raw data) after this callback, and stops reading from the
    /// transport, until a [`PauseHandle`] resumes (Twisted's `pauseProducing`). Bytes already
    /// read, and any the transport still delivers (what it had read before it stopped), are
    /// kept in order and delivered on resume.
    pub fn pause(&mut self) {
        self.pause_handle().pause();
    }

    /// True while paused.
    pub fn paused(&self) -> bool {
        self.shared.paused.get()
    }

    /// A handle that pauses and resumes this receiver from anywhere on the reactor thread (a
    /// timer, a Deferred's callback).
    pub fn pause_handle(&self) -> PauseHandle {
        PauseHandle {
            shared: Rc::downgrade(self.shared),
        }
    }

    /// The delimiter.
    pub fn delimiter(&self) -> &[u8] {
        &self.ctl.delimiter
    }

    /// Changes the delimiter for the lines that follow and for `send_line`.
    ///
    /// # Errors
    /// [`EmptyDelimiter`]; nothing changes.
    pub fn set_delimiter(&mut self, delimiter: &[u8]) -> Result<(), EmptyDelimiter> {
        if delimiter.is_empty() {
            return Err(EmptyDelimiter);
        }
        self.ctl.delimiter = delimiter.to_vec();
        self.ctl.settings_changed = true;
        Ok(())
    }

    /// The longest line accepted.
    pub fn max_length(&self) -> usize {
        self.ctl.max_length
    }

    /// Sets the longest line accepted, for the lines that follow.
    pub fn set_max_length(&mut self, max_length: usize) {
        self.ctl.max_length = max_length;
        self.ctl.settings_changed = true;
    }

    /// Takes the data received and not yet delivered (Twisted's `clearLineBuffer`): what
    /// followed the current line in the current read. It will not be delivered.
    pub fn clear_line_buffer(&mut self) -> Vec<u8> {
        self.ctl.cleared = true;
        std::mem::take(&mut self.rest).to_vec()
    }
}

/// Pauses and resumes a [`LineReceiver`] from anywhere on the reactor thread (a timer, a
/// Deferred's callback, another connection): Twisted's `pauseProducing` and `resumeProducing`
/// on the protocol. It is also a streaming [`Producer`], so a line receiver can be registered
/// with another transport (a proxy that stops reading lines while the far side is slow).
/// Cheap to clone; does nothing once the connection is gone.
///
/// # Examples
/// ```
/// use torsion::protocols::basic::{LineContext, LineHandler, LineReceiver};
/// use torsion::testing::StringTransport;
///
/// #[derive(Default)]
/// struct Lines(Vec<Vec<u8>>);
/// impl LineHandler for Lines {
///     fn line_received(&mut self, _: &mut LineContext<'_, '_>, line: &[u8]) {
///         self.0.push(line.to_vec());
///     }
/// }
///
/// let mut p = LineReceiver::new(Lines::default());
/// let t = StringTransport::new()?;
/// t.connect(&mut p);
/// let handle = p.pause_handle();
/// handle.pause();
/// assert!(t.reading_paused());
/// t.receive(&mut p, b"held\r\n");
/// assert!(p.handler().0.is_empty());
/// handle.resume(); // delivers what was held, at once
/// assert_eq!(p.handler().0, [b"held".to_vec()]);
/// # Ok::<(), torsion::Error>(())
/// ```
#[derive(Clone)]
pub struct PauseHandle {
    shared: Weak<Shared>,
}

impl std::fmt::Debug for PauseHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PauseHandle")
            .field("paused", &self.paused())
            .finish_non_exhaustive()
    }
}

impl PauseHandle {
    /// Stops delivering lines (and raw data) and stops the transport reading, until
    /// [`resume`](Self::resume). From inside one of the receiver's callbacks, takes effect when
    /// that callback returns.
    pub fn pause(&self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        if shared.closed.get() || shared.paused.replace(true) {
            return;
        }
        let transport = shared.transport.borrow().clone();
        if let Some(t) = transport {
            t.pause_producing();
        }
    }

    /// True while paused.
    pub fn paused(&self) -> bool {
        self.shared.upgrade().is_some_and(|s| s.paused.get())
    }

    /// Resumes reading and delivers the lines held back: at once when called from outside
    /// the receiver's own callbacks, right after the current callback when called from one.
    pub fn resume(&self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        if shared.closed.get() || !shared.paused.replace(false) {
            return;
        }
        let transport = shared.transport.borrow().clone();
        if let Some(t) = transport {
            t.resume_producing();
        }
        let core = shared.core.borrow().as_ref().and_then(Weak::upgrade);
        if let Some(core) = core {
            // Busy: we are inside one of its callbacks, whose loop sees `paused` cleared.
            if let Ok(mut core) = core.try_borrow_mut() {
                core.drain(&shared);
            }
        }
    }
}

impl Producer for PauseHandle {
    fn pause_producing(&self) {
        self.pause();
    }

    fn resume_producing(&self) {
        self.resume();
    }

    /// Closes the receiver's connection (Twisted's `stopProducing`).
    fn stop_producing(&self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        shared.paused.set(true);
        let transport = shared.transport.borrow().clone();
        if let Some(t) = transport {
            t.stop_producing();
        }
    }
}

impl<H: LineHandler> Drain for Core<H> {
    fn drain(&mut self, shared: &Rc<Shared>) {
        let reactor = self.reactor.upgrade().map(Reactor::from_inner);
        let (Some(reactor), Some(transport)) = (reactor, shared.transport.borrow().clone()) else {
            return;
        };
        let work = std::mem::take(&mut self.pending);
        if !work.is_empty() {
            let mut cx = Context::new(&reactor, &transport);
            self.process(&mut cx, shared, &work);
        }
    }
}

impl<H: LineHandler> Core<H> {
    fn lcx<'c, 'a>(
        cx: &'c mut Context<'a>,
        ctl: &'c mut Ctl,
        shared: &'c Rc<Shared>,
        rest: &'c [u8],
    ) -> LineContext<'c, 'a> {
        LineContext {
            cx,
            ctl,
            shared,
            rest,
        }
    }

    /// Delivers `data` (and whatever a mode switch hands back), in order.
    fn process(&mut self, cx: &mut Context<'_>, shared: &Rc<Shared>, data: &[u8]) {
        let mut again = self.run(cx, shared, data);
        while let Some(work) = again {
            again = self.run(cx, shared, &work);
        }
    }

    /// Delivers from `data` until it is used up, the receiver pauses, or the connection
    /// closes. Returns bytes to go on with when a callback handed some back (`extra`, or a
    /// partial line on a switch to raw mode).
    fn run(&mut self, cx: &mut Context<'_>, shared: &Rc<Shared>, data: &[u8]) -> Option<Vec<u8>> {
        let mut rest = data;
        loop {
            if shared.closed.get() || super::closing(cx.transport()) {
                return None;
            }
            if shared.paused.get() {
                self.pending.extend_from_slice(rest);
                return None;
            }
            if rest.is_empty() {
                return None;
            }
            let Core {
                handler,
                decoder,
                ctl,
                ..
            } = self;
            let was_raw = ctl.raw;
            if ctl.raw {
                let chunk = rest;
                rest = &[];
                handler.raw_data_received(&mut Self::lcx(cx, ctl, shared, &[]), chunk);
            } else {
                let (used, r) = decoder.decode(rest);
                let after = &rest[used..];
                match r {
                    Ok(Some(line)) => {
                        handler.line_received(&mut Self::lcx(cx, ctl, shared, after), line)
                    }
                    Ok(None) => {}
                    Err(e) => {
                        handler.line_length_exceeded(&mut Self::lcx(cx, ctl, shared, after), &e)
                    }
                }
                rest = after;
            }
            if ctl.settings_changed {
                ctl.settings_changed = false;
                // Checked non-empty by set_delimiter.
                let _ = decoder.set_delimiter(&ctl.delimiter);
                decoder.set_max_length(ctl.max_length);
            }
            if std::mem::take(&mut ctl.cleared) {
                rest = &[];
                decoder.take_buffered();
            }
            let held = if ctl.raw && !was_raw && decoder.buffered() > 0 {
                decoder.take_buffered()
            } else {
                Vec::new()
            };
            if !ctl.extra.is_empty() || !held.is_empty() {
                let mut work = held;
                work.extend_from_slice(rest);
                work.append(&mut ctl.extra);
                return Some(work);
            }
        }
    }
}

/// Twisted's `LineReceiver`: splits what a connection receives into lines (ended by `\r\n`
/// unless set otherwise, at most 16 KiB unless set otherwise) for a [`LineHandler`]; can
/// switch to raw mode and back mid-stream, and pause.
///
/// Works over any transport (TCP, the testing kit's, a wrapper's). The splitting is the
/// sans-I/O [`LineDecoder`]; a line that arrives whole is handed over without a copy.
///
/// # Examples
/// A server that answers each line with its length, tested on the string transport:
/// ```
/// use torsion::protocols::basic::{LineContext, LineHandler, LineReceiver};
/// use torsion::testing::StringTransport;
///
/// struct Measure;
/// impl LineHandler for Measure {
///     fn line_received(&mut self, cx: &mut LineContext<'_, '_>, line: &[u8]) {
///         cx.send_line(line.len().to_string().as_bytes());
///     }
/// }
///
/// let mut p = LineReceiver::new(Measure);
/// let t = StringTransport::new()?;
/// t.connect(&mut p);
/// t.receive(&mut p, b"hello\r\nwor");
/// t.receive(&mut p, b"ld!\r\n");
/// assert_eq!(t.value(), b"5\r\n6\r\n");
/// # Ok::<(), torsion::Error>(())
/// ```
///
/// Raw mode: a header line gives the size of a body that follows as raw bytes:
/// ```
/// use torsion::protocols::basic::{LineContext, LineHandler, LineReceiver};
/// use torsion::testing::StringTransport;
///
/// #[derive(Default)]
/// struct Upload { left: usize, body: Vec<u8>, lines: Vec<Vec<u8>> }
/// impl LineHandler for Upload {
///     fn line_received(&mut self, cx: &mut LineContext<'_, '_>, line: &[u8]) {
///         if let Some(n) = line.strip_prefix(b"SIZE ") {
///             self.left = std::str::from_utf8(n).unwrap().parse().unwrap();
///             cx.set_raw_mode();
///         } else {
///             self.lines.push(line.to_vec());
///         }
///     }
///     fn raw_data_received(&mut self, cx: &mut LineContext<'_, '_>, data: &[u8]) {
///         let n = self.left.min(data.len());
///         self.body.extend_from_slice(&data[..n]);
///         self.left -= n;
///         if self.left == 0 {
///             cx.set_line_mode_with(&data[n..]); // the rest is lines again
///         }
///     }
/// }
///
/// let mut p = LineReceiver::new(Upload::default());
/// let t = StringTransport::new()?;
/// t.connect(&mut p);
/// t.receive(&mut p, b"SIZE 4\r\nab\r\nBYE\r\n");
/// assert_eq!(p.handler().body, b"ab\r\n");
/// assert_eq!(p.handler().lines, [b"BYE".to_vec()]);
/// # Ok::<(), torsion::Error>(())
/// ```
pub struct LineReceiver<H: LineHandler + 'static> {
    core: Rc<RefCell<Core<H>>>,
    shared: Rc<Shared>,
}

impl<H: LineHandler + 'static> LineReceiver<H> {
    /// A receiver of `\r\n`-ended lines of at most
    /// [`DEFAULT_MAX_LINE_LENGTH`](super::DEFAULT_MAX_LINE_LENGTH) bytes.
    pub fn new(handler: H) -> LineReceiver<H> {
        let decoder = LineDecoder::new();
        let core = Rc::new(RefCell::new(Core {
            handler,
            ctl: Ctl {
                raw: false,
                delimiter: decoder.delimiter().to_vec(),
                max_length: decoder.max_length(),
                settings_changed: false,
                extra: Vec::new(),
                cleared: false,
            },
            decoder,
            pending: Vec::new(),
            reactor: Weak::new(),
        }));
        let dyn_core: Rc<RefCell<dyn Drain>> = core.clone();
        let shared = Rc::new(Shared {
            paused: Cell::new(false),
            closed: Cell::new(false),
            transport: RefCell::new(None),
            core: RefCell::new(Some(Rc::downgrade(&dyn_core))),
        });
        LineReceiver { core, shared }
    }

    /// Sets the delimiter (builder style).
    ///
    /// # Errors
    /// [`EmptyDelimiter`].
    pub fn with_delimiter(self, delimiter: &[u8]) -> Result<Self, EmptyDelimiter> {
        {
            let mut c = self.core.borrow_mut();
            c.decoder.set_delimiter(delimiter)?;
            c.ctl.delimiter = delimiter.to_vec();
        }
        Ok(self)
    }

    /// Sets the longest line accepted (builder style); Twisted's `MAX_LENGTH`.
    pub fn with_max_length(self, max_length: usize) -> Self {
        {
            let mut c = self.core.borrow_mut();
            c.decoder.set_max_length(max_length);
            c.ctl.max_length = max_length;
        }
        self
    }

    /// The handler.
    ///
    /// # Panics
    /// When called from inside one of the handler's own callbacks.
    pub fn handler(&self) -> Ref<'_, H> {
        Ref::map(self.core.borrow(), |c| &c.handler)
    }

    /// The handler, mutably.
    ///
    /// # Panics
    /// When called from inside one of the handler's own callbacks.
    pub fn handler_mut(&mut self) -> std::cell::RefMut<'_, H> {
        std::cell::RefMut::map(self.core.borrow_mut(), |c| &mut c.handler)
    }

    /// A [`PauseHandle`] for this receiver.
    pub fn pause_handle(&self) -> PauseHandle {
        PauseHandle {
            shared: Rc::downgrade(&self.shared),
        }
    }

    fn with_lcx<R>(
        &mut self,
        cx: &mut Context<'_>,
        f: impl FnOnce(&mut H, &mut LineContext<'_, '_>) -> R,
    ) -> R {
        let mut core = self.core.borrow_mut();
        let Core { handler, ctl, .. } = &mut *core;
        let r = f(
            handler,
            &mut LineContext {
                cx,
                ctl,
                shared: &self.shared,
                rest: &[],
            },
        );
        drop(core);
        r
    }

    /// Runs the receiver loop on `data`, after what a pause held back.
    fn deliver(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        let mut core = self.core.borrow_mut();
        if core.pending.is_empty() {
            core.process(cx, &self.shared, data);
        } else {
            let mut work = std::mem::take(&mut core.pending);
            work.extend_from_slice(data);
            if self.shared.paused.get() {
                core.pending = work;
            } else {
                core.process(cx, &self.shared, &work);
            }
        }
    }
}

impl<H: LineHandler + 'static> Protocol for LineReceiver<H> {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        *self.shared.transport.borrow_mut() = Some(cx.transport().clone());
        self.core.borrow_mut().reactor = Rc::downgrade(&cx.reactor().inner);
        self.with_lcx(cx, |h, lcx| h.connection_made(lcx));
        // Settings changed in connection_made apply to the first data.
        let mut core = self.core.borrow_mut();
        let Core { decoder, ctl, .. } = &mut *core;
        if std::mem::take(&mut ctl.settings_changed) {
            let _ = decoder.set_delimiter(&ctl.delimiter);
            decoder.set_max_length(ctl.max_length);
        }
        if !ctl.extra.is_empty() {
            let extra = std::mem::take(&mut ctl.extra);
            drop(core);
            self.deliver(cx, &extra);
        }
    }

    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        self.deliver(cx, data);
    }

    fn connection_lost(&mut self, cx: &mut Context<'_>, reason: Reason) {
        self.shared.closed.set(true);
        self.with_lcx(cx, |h, lcx| h.connection_lost(lcx, reason));
        *self.shared.transport.borrow_mut() = None;
        let mut core = self.core.borrow_mut();
        core.reactor = Weak::new();
        core.pending = Vec::new();
    }

    fn read_connection_lost(&mut self, cx: &mut Context<'_>) -> HalfClose {
        self.with_lcx(cx, |h, lcx| h.read_connection_lost(lcx))
    }

    fn write_connection_lost(&mut self, cx: &mut Context<'_>) {
        self.with_lcx(cx, |h, lcx| h.write_connection_lost(lcx));
    }
}

// ---------------------------------------------------------------------------------- LineOnly

/// The user's side of a [`LineOnlyReceiver`].
pub trait LineOnlyHandler {
    /// The connection is established.
    fn connection_made(&mut self, cx: &mut LineOnlyContext<'_, '_>) {
        let _ = cx;
    }

    /// A line arrived, without its delimiter.
    fn line_received(&mut self, cx: &mut LineOnlyContext<'_, '_>, line: &[u8]);

    /// A line was longer than the maximum (Twisted's `lineLengthExceeded`). The default logs
    /// the error and closes the connection; if it stays open, the rest of the line is skipped.
    fn line_length_exceeded(&mut self, cx: &mut LineOnlyContext<'_, '_>, error: &FrameError) {
        refuse(cx.transport(), error);
    }

    /// The connection is gone. An unfinished last line is not delivered.
    fn connection_lost(&mut self, cx: &mut LineOnlyContext<'_, '_>, reason: Reason) {
        let _ = (cx, reason);
    }
}

/// The context of a [`LineOnlyHandler`] callback.
pub struct LineOnlyContext<'c, 'a> {
    cx: &'c mut Context<'a>,
    delimiter: &'c [u8],
}

impl<'a> LineOnlyContext<'_, 'a> {
    /// The connection's transport.
    pub fn transport(&self) -> &'a Transport {
        self.cx.transport()
    }

    /// The reactor.
    pub fn reactor(&self) -> &'a Reactor {
        self.cx.reactor()
    }

    /// The connection's plain [`Context`].
    pub fn context(&mut self) -> &mut Context<'a> {
        self.cx
    }

    /// Writes `line` and the delimiter, in one write (Twisted's `sendLine`).
    pub fn send_line(&self, line: &[u8]) {
        self.transport().write_sequence(&[line, self.delimiter]);
    }
}

/// Twisted's `LineOnlyReceiver`: lines only (no raw mode, no pausing, the delimiter fixed
/// when built), for a [`LineOnlyHandler`]: simpler and a little faster than [`LineReceiver`].
///
/// # Examples
/// ```
/// use torsion::protocols::basic::{LineOnlyContext, LineOnlyHandler, LineOnlyReceiver};
/// use torsion::testing::StringTransport;
///
/// struct Upper;
/// impl LineOnlyHandler for Upper {
///     fn line_received(&mut self, cx: &mut LineOnlyContext<'_, '_>, line: &[u8]) {
///         cx.send_line(&line.to_ascii_uppercase());
///     }
/// }
///
/// let mut p = LineOnlyReceiver::new(Upper).with_delimiter(b"\n")?.with_max_length(80);
/// let t = StringTransport::new()?;
/// t.connect(&mut p);
/// t.receive(&mut p, b"one\ntw");
/// t.receive(&mut p, b"o\n");
/// assert_eq!(t.value(), b"ONE\nTWO\n");
/// t.receive(&mut p, &[b'x'; 81]); // over the limit: the default closes
/// assert!(t.disconnecting());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct LineOnlyReceiver<H> {
    handler: H,
    decoder: LineDecoder,
    /// The decoder's delimiter, for `send_line` while the decoder is busy.
    delimiter: Vec<u8>,
}

impl<H: LineOnlyHandler> LineOnlyReceiver<H> {
    /// A receiver of `\r\n`-ended lines of at most
    /// [`DEFAULT_MAX_LINE_LENGTH`](super::DEFAULT_MAX_LINE_LENGTH) bytes.
    pub fn new(handler: H) -> LineOnlyReceiver<H> {
        LineOnlyReceiver {
            handler,
            decoder: LineDecoder::new(),
            delimiter: super::DEFAULT_DELIMITER.to_vec(),
        }
    }

    /// Sets the delimiter (builder style).
    ///
    /// # Errors
    /// [`EmptyDelimiter`].
    pub fn with_delimiter(mut self, delimiter: &[u8]) -> Result<Self, EmptyDelimiter> {
        self.decoder.set_delimiter(delimiter)?;
        self.delimiter = delimiter.to_vec();
        Ok(self)
    }

    /// Sets the longest line accepted (builder style).
    pub fn with_max_length(mut self, max_length: usize) -> Self {
        self.decoder.set_max_length(max_length);
        self
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The handler, mutably.
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }
}

impl<H: LineOnlyHandler> Protocol for LineOnlyReceiver<H> {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        self.handler.connection_made(&mut LineOnlyContext {
            cx,
            delimiter: &self.delimiter,
        });
    }

    fn data_received(&mut self, cx: &mut Context<'_>, mut data: &[u8]) {
        let LineOnlyReceiver {
            handler,
            decoder,
            delimiter,
        } = self;
        while !data.is_empty() {
            if super::closing(cx.transport()) {
                return;
            }
            let (used, r) = decoder.decode(data);
            data = &data[used..];
            match r {
                Ok(Some(line)) => {
                    handler.line_received(&mut LineOnlyContext { cx, delimiter }, line)
                }
                Ok(None) => {}
                Err(e) => handler.line_length_exceeded(&mut LineOnlyContext { cx, delimiter }, &e),
            }
        }
    }

    fn connection_lost(&mut self, cx: &mut Context<'_>, reason: Reason) {
        self.handler.connection_lost(
            &mut LineOnlyContext {
                cx,
                delimiter: &self.delimiter,
            },
            reason,
        );
    }
}

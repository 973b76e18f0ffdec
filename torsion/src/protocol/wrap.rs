//! Protocol wrapping (Twisted's `policies.ProtocolWrapper` and `WrappingFactory`): a protocol
//! that sits between a transport and another protocol, and hands that protocol a transport of
//! its own. This is how layers are written (TLS, timeouts, throttling, framing, accounting):
//! the wrapped protocol does not know it is wrapped.
//!
//! * [`ForwardingTransport`]: a transport that forwards every call to the transport it wraps;
//!   implement [`wrapped`](ForwardingTransport::wrapped) and override what the layer changes,
//!   and it is a [`TransportImpl`].
//! * [`ProtocolWrapper`]: a protocol that builds the wrapped protocol's transport when the
//!   connection is made, and forwards every callback to it with that transport.
//! * [`WrappingFactory`]: a factory that wraps each protocol another factory builds.
//!
//! # Examples
//! A layer that counts the bytes written by the protocol it wraps, on a string transport (the
//! same code runs over TCP unchanged):
//! ```
//! use std::cell::Cell;
//! use std::rc::Rc;
//! use torsion::protocol::wrap::{ForwardingTransport, ProtocolWrapper};
//! use torsion::testing::StringTransport;
//! use torsion::{Context, Protocol, Transport};
//!
//! struct Counting { outer: Transport, written: Rc<Cell<usize>> }
//! impl ForwardingTransport for Counting {
//!     fn wrapped(&self) -> &Transport { &self.outer }
//!     fn write_sequence(&self, data: &[&[u8]]) {
//!         self.written.set(self.written.get() + data.iter().map(|d| d.len()).sum::<usize>());
//!         self.outer.write_sequence(data);
//!     }
//! }
//!
//! struct Hello;
//! impl Protocol for Hello {
//!     fn connection_made(&mut self, cx: &mut Context<'_>) { cx.transport().write(b"hello") }
//!     fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
//! }
//!
//! let written = Rc::new(Cell::new(0));
//! let w = written.clone();
//! let mut wrapper = ProtocolWrapper::new(Box::new(Hello), move |outer| {
//!     Transport::new(Rc::new(Counting { outer: outer.clone(), written: w }))
//! });
//! let t = StringTransport::new()?;
//! t.connect(&mut wrapper);
//! assert_eq!(t.value(), b"hello");
//! assert_eq!(written.get(), 5);
//! # Ok::<(), torsion::Error>(())
//! ```

use std::fmt;
use std::rc::Rc;

use crate::interfaces::{
    Address, ClientFactory, Connector, Context, HalfClose, Producer, Protocol, ProtocolFactory,
    TcpOptions, Transport, TransportImpl,
};
use crate::{ConnectError, Error, Reason};

/// A transport that forwards every call to the transport it wraps; a layer overrides the calls
/// it changes. Every type that implements it is a [`TransportImpl`].
pub trait ForwardingTransport {
    /// The transport under this one.
    fn wrapped(&self) -> &Transport;

    /// See [`Transport::write_sequence`].
    fn write_sequence(&self, data: &[&[u8]]) {
        self.wrapped().write_sequence(data);
    }

    /// See [`Transport::write_shared`].
    fn write_shared(&self, data: Rc<[u8]>) {
        self.write_sequence(&[&data]);
    }

    /// See [`Transport::lose_connection`].
    fn lose_connection(&self) {
        self.wrapped().lose_connection();
    }

    /// See [`Transport::abort_connection`].
    fn abort_connection(&self) {
        self.wrapped().abort_connection();
    }

    /// See [`Transport::lose_write_connection`].
    fn lose_write_connection(&self) {
        self.wrapped().lose_write_connection();
    }

    /// See [`Transport::register_producer`].
    ///
    /// # Errors
    /// As the wrapped transport's.
    fn register_producer(&self, producer: Rc<dyn Producer>, streaming: bool) -> Result<(), Error> {
        self.wrapped().register_producer(producer, streaming)
    }

    /// See [`Transport::unregister_producer`].
    fn unregister_producer(&self) {
        self.wrapped().unregister_producer();
    }

    /// See [`Transport::pause_producing`].
    fn pause_producing(&self) {
        self.wrapped().pause_producing();
    }

    /// See [`Transport::resume_producing`].
    fn resume_producing(&self) {
        self.wrapped().resume_producing();
    }

    /// See [`Transport::stop_producing`].
    fn stop_producing(&self) {
        self.wrapped().stop_producing();
    }

    /// See [`Transport::peer`].
    fn peer(&self) -> Address {
        self.wrapped().peer()
    }

    /// See [`Transport::host`].
    fn host(&self) -> Address {
        self.wrapped().host()
    }

    /// See [`Transport::buffered`].
    fn buffered(&self) -> usize {
        self.wrapped().buffered()
    }

    /// See [`Transport::set_write_buffer_limits`].
    fn set_write_buffer_limits(&self, high: usize, low: usize) {
        self.wrapped().set_write_buffer_limits(high, low);
    }

    /// See [`Transport::connected`].
    fn connected(&self) -> bool {
        self.wrapped().connected()
    }

    /// See [`Transport::disconnecting`].
    fn disconnecting(&self) -> bool {
        self.wrapped().disconnecting()
    }

    /// See [`Transport::tcp`].
    fn tcp(&self) -> Option<&dyn TcpOptions> {
        self.wrapped().tcp()
    }

    /// See [`Transport::unix`].
    fn unix(&self) -> Option<&dyn crate::interfaces::UnixTransport> {
        self.wrapped().unix()
    }
}

impl<T: ForwardingTransport> TransportImpl for T {
    fn write_sequence(&self, data: &[&[u8]]) {
        ForwardingTransport::write_sequence(self, data);
    }

    fn write_shared(&self, data: Rc<[u8]>) {
        ForwardingTransport::write_shared(self, data);
    }

    fn lose_connection(&self) {
        ForwardingTransport::lose_connection(self);
    }

    fn abort_connection(&self) {
        ForwardingTransport::abort_connection(self);
    }

    fn lose_write_connection(&self) {
        ForwardingTransport::lose_write_connection(self);
    }

    fn register_producer(&self, producer: Rc<dyn Producer>, streaming: bool) -> Result<(), Error> {
        ForwardingTransport::register_producer(self, producer, streaming)
    }

    fn unregister_producer(&self) {
        ForwardingTransport::unregister_producer(self);
    }

    fn pause_producing(&self) {
        ForwardingTransport::pause_producing(self);
    }

    fn resume_producing(&self) {
        ForwardingTransport::resume_producing(self);
    }

    fn stop_producing(&self) {
        ForwardingTransport::stop_producing(self);
    }

    fn peer(&self) -> Address {
        ForwardingTransport::peer(self)
    }

    fn host(&self) -> Address {
        ForwardingTransport::host(self)
    }

    fn buffered(&self) -> usize {
        ForwardingTransport::buffered(self)
    }

    fn set_write_buffer_limits(&self, high: usize, low: usize) {
        ForwardingTransport::set_write_buffer_limits(self, high, low);
    }

    fn connected(&self) -> bool {
        ForwardingTransport::connected(self)
    }

    fn disconnecting(&self) -> bool {
        ForwardingTransport::disconnecting(self)
    }

    fn tcp(&self) -> Option<&dyn TcpOptions> {
        ForwardingTransport::tcp(self)
    }

    fn unix(&self) -> Option<&dyn crate::interfaces::UnixTransport> {
        ForwardingTransport::unix(self)
    }
}

type MakeTransport = Box<dyn FnOnce(&Transport) -> Transport>;
type Inbound = Box<dyn FnMut(&mut Context<'_>, &[u8])>;

/// A protocol that wraps another (Twisted's `ProtocolWrapper`): when the connection is made it
/// builds the wrapped protocol's transport over the real one, then forwards every callback to
/// the wrapped protocol with that transport. [`on_data`](Self::on_data) sees the bytes on their
/// way in.
pub struct ProtocolWrapper {
    inner: Box<dyn Protocol>,
    make: Option<MakeTransport>,
    transport: Option<Transport>,
    inbound: Option<Inbound>,
}

impl fmt::Debug for ProtocolWrapper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProtocolWrapper")
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl ProtocolWrapper {
    /// Wraps `inner`; `make_transport(outer)` builds the transport `inner` sees (typically a
    /// [`ForwardingTransport`] over `outer`).
    pub fn new(
        inner: Box<dyn Protocol>,
        make_transport: impl FnOnce(&Transport) -> Transport + 'static,
    ) -> ProtocolWrapper {
        ProtocolWrapper {
            inner,
            make: Some(Box::new(make_transport)),
            transport: None,
            inbound: None,
        }
    }

    /// Runs `f` on every chunk of bytes before the wrapped protocol gets it (`cx` is the outer
    /// connection's context).
    pub fn on_data(mut self, f: impl FnMut(&mut Context<'_>, &[u8]) + 'static) -> Self {
        self.inbound = Some(Box::new(f));
        self
    }

    /// The transport the wrapped protocol sees (once the connection is made).
    pub fn wrapped_transport(&self) -> Option<&Transport> {
        self.transport.as_ref()
    }

    /// Calls the wrapped protocol with its own transport (the outer one before it is built).
    fn forward<R>(
        &mut self,
        cx: &mut Context<'_>,
        f: impl FnOnce(&mut dyn Protocol, &mut Context<'_>) -> R,
    ) -> R {
        let t = self.transport.clone();
        let t = t.as_ref().unwrap_or(cx.transport());
        f(&mut *self.inner, &mut Context::new(cx.reactor(), t))
    }
}

impl Protocol for ProtocolWrapper {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        if let Some(make) = self.make.take() {
            self.transport = Some(make(cx.transport()));
        }
        self.forward(cx, |p, cx| p.connection_made(cx));
    }

    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        if let Some(f) = &mut self.inbound {
            f(cx, data);
        }
        self.forward(cx, |p, cx| p.data_received(cx, data));
    }

    fn connection_lost(&mut self, cx: &mut Context<'_>, reason: Reason) {
        self.forward(cx, |p, cx| p.connection_lost(cx, reason));
        // The wrapped transport holds the outer one: let both go.
        self.transport = None;
    }

    fn read_connection_lost(&mut self, cx: &mut Context<'_>) -> HalfClose {
        self.forward(cx, |p, cx| p.read_connection_lost(cx))
    }

    fn write_connection_lost(&mut self, cx: &mut Context<'_>) {
        self.forward(cx, |p, cx| p.write_connection_lost(cx));
    }

    fn file_descriptor_received(&mut self, cx: &mut Context<'_>, fd: std::os::fd::OwnedFd) {
        self.forward(cx, |p, cx| p.file_descriptor_received(cx, fd));
    }
}

type Wrap = Box<dyn Fn(Box<dyn Protocol>, &Address) -> Box<dyn Protocol>>;

/// A factory that wraps every protocol another factory builds (Twisted's `WrappingFactory`).
/// Start, stop and client callbacks go to the wrapped factory.
///
/// # Examples
/// ```
/// use std::rc::Rc;
/// use torsion::protocol::wrap::{ProtocolWrapper, WrappingFactory};
/// use torsion::{Context, Factory, Protocol};
///
/// struct Echo;
/// impl Protocol for Echo {
///     fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
///         cx.transport().write(data);
///     }
/// }
///
/// // Logs every chunk on its way in; the echo protocol does not know.
/// let factory = WrappingFactory::new(Factory::for_protocol(|| Echo), |inner, peer| {
///     let peer = peer.to_string();
///     Box::new(ProtocolWrapper::new(inner, |outer| outer.clone())
///         .on_data(move |_, data| println!("{peer}: {} bytes", data.len())))
/// });
/// # let _ = factory;
/// ```
pub struct WrappingFactory<F> {
    wrapped: Rc<F>,
    wrap: Wrap,
}

impl<F> fmt::Debug for WrappingFactory<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappingFactory").finish_non_exhaustive()
    }
}

impl<F: ProtocolFactory> WrappingFactory<F> {
    /// Wraps the protocols `wrapped` builds with `wrap(protocol, peer)`.
    pub fn new(
        wrapped: impl super::IntoFactory<F>,
        wrap: impl Fn(Box<dyn Protocol>, &Address) -> Box<dyn Protocol> + 'static,
    ) -> WrappingFactory<F> {
        WrappingFactory {
            wrapped: wrapped.into_factory(),
            wrap: Box::new(wrap),
        }
    }

    /// The wrapped factory.
    pub fn wrapped(&self) -> &Rc<F> {
        &self.wrapped
    }
}

impl<F: ProtocolFactory> ProtocolFactory for WrappingFactory<F> {
    fn build_protocol(&self, addr: &Address) -> Option<Box<dyn Protocol>> {
        let inner = self.wrapped.build_protocol(addr)?;
        Some((self.wrap)(inner, addr))
    }

    fn start_factory(&self) {
        self.wrapped.start_factory();
    }

    fn stop_factory(&self) {
        self.wrapped.stop_factory();
    }
}

impl<F: ClientFactory> ClientFactory for WrappingFactory<F> {
    fn started_connecting(&self, connector: &Connector) {
        self.wrapped.started_connecting(connector);
    }

    fn client_connection_failed(&self, connector: &Connector, reason: ConnectError) {
        self.wrapped.client_connection_failed(connector, reason);
    }

    fn client_connection_lost(&self, connector: &Connector, reason: Reason) {
        self.wrapped.client_connection_lost(connector, reason);
    }
}

//! What a download may cost: a server that stops sending, or never stops, must not hold the
//! client for ever or fill its memory. [`Limited`] puts both limits around any protocol.

use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use torsion::defer::TimedOut;
use torsion::protocol::wrap::WrappingFactory;
use torsion::protocol::IntoFactory;
use torsion::{ClientFactory, Context, DelayedCall, HalfClose, Protocol, Reason};

/// The limits of one download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The server sent nothing for this long: the download fails (default 60 s).
    pub idle_timeout: Duration,
    /// The poem grew past this many bytes: the download fails (default 16 MiB).
    pub max_poem: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            idle_timeout: Duration::from_secs(60),
            max_poem: 16 << 20,
        }
    }
}

/// The error of a download that went past [`Limits::max_poem`].
pub(crate) fn too_large(max: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the poem is larger than {max} bytes"),
    )
}

/// Why a [`Limited`] connection was ended early, told to its protocol instead of the abort.
#[derive(Default)]
struct Broken {
    idle: Cell<bool>,
    too_large: Cell<bool>,
}

/// A protocol wrapper that aborts the connection when the server is silent for
/// `idle_timeout` or sends more than `max_poem` bytes; the wrapped protocol's
/// `connection_lost` then says which ([`Reason::TimedOut`], or a lost connection with the
/// size error), never a clean close.
pub(crate) struct Limited {
    inner: Box<dyn Protocol>,
    limits: Limits,
    received: usize,
    timer: Option<DelayedCall>,
    broken: Rc<Broken>,
}

impl Limited {
    pub(crate) fn new(inner: Box<dyn Protocol>, limits: Limits) -> Limited {
        Limited {
            inner,
            limits,
            received: 0,
            timer: None,
            broken: Rc::default(),
        }
    }

    /// Wraps every protocol `factory` builds.
    pub(crate) fn factory<F: ClientFactory + 'static>(
        factory: impl IntoFactory<F>,
        limits: Limits,
    ) -> WrappingFactory<F> {
        WrappingFactory::new(factory, move |inner, _| {
            Box::new(Limited::new(inner, limits)) as Box<dyn Protocol>
        })
    }
}

impl Protocol for Limited {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        let t = cx.transport().clone();
        let broken = self.broken.clone();
        self.timer = Some(cx.reactor().call_later(self.limits.idle_timeout, move |_| {
            broken.idle.set(true);
            t.abort_connection();
        }));
        self.inner.connection_made(cx);
    }

    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        if self.broken.idle.get() || self.broken.too_large.get() {
            return;
        }
        self.received = self.received.saturating_add(data.len());
        if self.received > self.limits.max_poem {
            self.broken.too_large.set(true);
            cx.transport().abort_connection();
            return;
        }
        if let Some(t) = &self.timer {
            let _ = t.reset(self.limits.idle_timeout);
        }
        self.inner.data_received(cx, data);
    }

    fn connection_lost(&mut self, cx: &mut Context<'_>, reason: Reason) {
        if let Some(t) = self.timer.take() {
            let _ = t.cancel();
        }
        let reason = if self.broken.idle.get() {
            Reason::TimedOut(TimedOut {
                after: self.limits.idle_timeout,
            })
        } else if self.broken.too_large.get() {
            Reason::lost(too_large(self.limits.max_poem))
        } else {
            reason
        };
        self.inner.connection_lost(cx, reason);
    }

    fn read_connection_lost(&mut self, cx: &mut Context<'_>) -> HalfClose {
        self.inner.read_connection_lost(cx)
    }

    fn write_connection_lost(&mut self, cx: &mut Context<'_>) {
        self.inner.write_connection_lost(cx);
    }
}

//! A plain [`Protocol`] over a child's stdin and stdout (Twisted's `_ProcessEndpointTransport`
//! with `_WrapIProtocol`).

use std::cell::RefCell;
use std::os::fd::RawFd;
use std::rc::Rc;

use super::{ExitStatus, ProcessContext, ProcessProtocol, ProcessTransport};
use crate::interfaces::{Address, Context, HalfClose, Producer, Transport, TransportImpl};
use crate::{Error, Reactor, Reason};

/// Runs a [`Protocol`](crate::Protocol) over a child process: what the protocol writes goes
/// to the child's stdin, what the child writes on stdout reaches `data_received`; what it
/// writes on stderr is logged (`tracing`, debug level) and dropped. The child's stdout closing
/// is `read_connection_lost` (return [`HalfClose::KeepWriting`] to go on writing to stdin);
/// `connection_lost` comes when the process has ended, with [`Reason::ConnectionDone`] for
/// exit code 0 and [`Reason::ConnectionLost`] otherwise. The protocol's
/// `lose_write_connection` closes stdin once flushed and goes on reading; `lose_connection`
/// closes every pipe, stdin once flushed and the output pipes at once, as Twisted's does (a
/// child still writing then gets SIGPIPE); `abort_connection` kills the child.
///
/// # Examples
/// A protocol written for TCP, talking to `cat`: it half-closes (the child's stdin closes,
/// its output is still read) and the connection ends when `cat` has exited:
/// ```
/// use torsion::process::{ProtocolProcess, Spawn};
/// use torsion::{Context, Protocol, Reason};
///
/// struct Hello(Vec<u8>);
/// impl Protocol for Hello {
///     fn connection_made(&mut self, cx: &mut Context<'_>) {
///         cx.transport().write(b"hello\n");
///         cx.transport().lose_write_connection();
///     }
///     fn data_received(&mut self, _: &mut Context<'_>, data: &[u8]) {
///         self.0.extend_from_slice(data);
///     }
///     fn connection_lost(&mut self, cx: &mut Context<'_>, reason: Reason) {
///         assert!(reason.is_clean());
///         assert_eq!(self.0, b"hello\n");
///         cx.reactor().stop().unwrap();
///     }
/// }
///
/// let reactor = torsion::Reactor::new()?;
/// reactor.spawn_process(ProtocolProcess::new(Hello(Vec::new())), &Spawn::new("cat"))?;
/// reactor.run()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ProtocolProcess {
    protocol: Box<dyn crate::Protocol>,
    transport: Option<(Transport, Rc<Bridge>)>,
    half_closed: bool,
}

impl ProtocolProcess {
    /// Wraps `protocol`.
    pub fn new<P: crate::Protocol + 'static>(protocol: P) -> ProtocolProcess {
        ProtocolProcess {
            protocol: Box::new(protocol),
            transport: None,
            half_closed: false,
        }
    }
}

/// The [`TransportImpl`] the wrapped protocol sees.
struct Bridge {
    process: RefCell<Option<ProcessTransport>>,
    pid: Option<u32>,
}

impl Bridge {
    fn process(&self) -> Option<ProcessTransport> {
        self.process.borrow().clone()
    }
}

impl TransportImpl for Bridge {
    fn write_sequence(&self, data: &[&[u8]]) {
        if let Some(p) = self.process() {
            p.write_sequence(data);
        }
    }

    fn lose_connection(&self) {
        if let Some(p) = self.process() {
            p.lose_connection();
        }
    }

    fn abort_connection(&self) {
        if let Some(p) = self.process() {
            let _ = p.signal_process(super::Signal::KILL);
            p.lose_connection();
        }
    }

    fn lose_write_connection(&self) {
        if let Some(p) = self.process() {
            p.close_stdin();
        }
    }

    fn register_producer(&self, producer: Rc<dyn Producer>, streaming: bool) -> Result<(), Error> {
        match self.process() {
            Some(p) => p.register_producer(producer, streaming),
            None => {
                producer.stop_producing();
                Ok(())
            }
        }
    }

    fn unregister_producer(&self) {
        if let Some(p) = self.process() {
            p.unregister_producer();
        }
    }

    fn pause_producing(&self) {
        if let Some(p) = self.process() {
            p.pause_producing();
        }
    }

    fn resume_producing(&self) {
        if let Some(p) = self.process() {
            p.resume_producing();
        }
    }

    fn peer(&self) -> Address {
        Address::Process { pid: self.pid }
    }

    fn host(&self) -> Address {
        Address::Process { pid: None }
    }

    fn buffered(&self) -> usize {
        self.process().map_or(0, |p| p.buffered())
    }

    fn set_write_buffer_limits(&self, high: usize, low: usize) {
        if let Some(p) = self.process() {
            p.set_write_buffer_limits(high, low);
        }
    }

    fn connected(&self) -> bool {
        self.process().is_some_and(|p| p.stdin_open())
    }

    fn disconnecting(&self) -> bool {
        self.process().is_some_and(|p| !p.stdin_open())
    }
}

impl ProtocolProcess {
    fn call(&mut self, r: &Reactor, f: impl FnOnce(&mut dyn crate::Protocol, &mut Context<'_>)) {
        if let Some((t, _)) = &self.transport {
            let t = t.clone();
            f(&mut *self.protocol, &mut Context::new(r, &t));
        }
    }
}

impl ProcessProtocol for ProtocolProcess {
    fn connection_made(&mut self, cx: &mut ProcessContext<'_>) {
        let bridge = Rc::new(Bridge {
            process: RefCell::new(Some(cx.process().clone())),
            pid: cx.process().pid(),
        });
        let t = Transport::new(bridge.clone());
        self.transport = Some((t, bridge));
        self.call(cx.reactor(), |p, cx| p.connection_made(cx));
    }

    fn child_data_received(&mut self, cx: &mut ProcessContext<'_>, fd: RawFd, data: &[u8]) {
        match fd {
            1 => self.call(cx.reactor(), |p, cx| p.data_received(cx, data)),
            _ => tracing::debug!(
                fd,
                text = %String::from_utf8_lossy(data),
                "a child's output on a descriptor other than stdout"
            ),
        }
    }

    fn child_connection_lost(&mut self, cx: &mut ProcessContext<'_>, fd: RawFd) {
        if fd == 1 && !self.half_closed {
            self.half_closed = true;
            let mut choice = HalfClose::Close;
            self.call(cx.reactor(), |p, cx| choice = p.read_connection_lost(cx));
            if choice == HalfClose::Close {
                cx.process().lose_connection();
            }
        } else if fd == 0 {
            self.call(cx.reactor(), |p, cx| p.write_connection_lost(cx));
        }
    }

    fn process_ended(&mut self, cx: &mut ProcessContext<'_>, status: ExitStatus) {
        let reason = if status.success() {
            Reason::ConnectionDone
        } else {
            Reason::lost(std::io::Error::other(format!("the child ended: {status}")))
        };
        self.call(cx.reactor(), |p, cx| p.connection_lost(cx, reason));
        if let Some((_, bridge)) = self.transport.take() {
            bridge.process.borrow_mut().take();
        }
    }
}

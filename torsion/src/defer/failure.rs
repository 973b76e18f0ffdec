//! [`Failure`] (Twisted's `twisted.python.failure.Failure`) and the typed errors of Deferreds.

use std::any::Any;
use std::backtrace::{Backtrace, BacktraceStatus};
use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

/// An error travelling down a [`Deferred`](super::Deferred)'s errback chain.
///
/// A `Failure` holds any error type (`Box<dyn Error>`, not necessarily `Send`), the name of that
/// type, and the [`Backtrace`] of the place where it was made. The backtrace is captured with
/// [`Backtrace::capture`], which costs almost nothing unless `RUST_BACKTRACE` or
/// `RUST_LIB_BACKTRACE` asks for backtraces; [`Failure::with_backtrace`] takes one you captured
/// yourself (for example with [`Backtrace::force_capture`]).
///
/// Like Twisted's `Failure`, it can be inspected by type: [`check`](Failure::check) tells whether
/// the error is of a type, [`trap`](Failure::trap) extracts it or gives the failure back, so that
/// `?` re-raises it down the chain:
///
/// ```
/// use torsion::defer::{Cancelled, Deferred, Failure};
///
/// let d = Deferred::<u32>::new();
/// let d = d.add_errback(|f: Failure| {
///     f.trap::<Cancelled>()?; // any other error goes on down the chain
///     Ok(0)
/// });
/// d.cancel();
/// assert_eq!(d.try_result().unwrap().unwrap(), 0);
/// ```
///
/// Every `E: Error + 'static` converts into a `Failure` (so `?` works in callbacks). For that
/// reason `Failure` itself does not implement [`std::error::Error`] (the same trade-off as
/// `anyhow::Error`); [`error`](Failure::error) gives the wrapped error as `&dyn Error`.
pub struct Failure {
    inner: Box<Inner>,
}

struct Inner {
    error: Box<dyn StdError + 'static>,
    type_name: &'static str,
    backtrace: Backtrace,
    /// The rendered backtrace of the original, for copies made by [`Failure::shadow`].
    shadowed_backtrace: Option<String>,
}

impl Failure {
    /// Wraps `error`, capturing the backtrace of the caller (when backtraces are enabled).
    pub fn new<E: StdError + 'static>(error: E) -> Failure {
        Failure::with_backtrace(error, Backtrace::capture())
    }

    /// Wraps `error` with a backtrace captured by the caller.
    pub fn with_backtrace<E: StdError + 'static>(error: E, backtrace: Backtrace) -> Failure {
        Failure {
            inner: Box::new(Inner {
                error: Box::new(error),
                type_name: std::any::type_name::<E>(),
                backtrace,
                shadowed_backtrace: None,
            }),
        }
    }

    /// A failure carrying only a message (its error type is [`Message`]).
    pub fn msg(message: impl fmt::Display) -> Failure {
        Failure::new(Message(message.to_string()))
    }

    /// Wraps an already boxed error. Its type name is that of the box, since the concrete type
    /// is unknown; [`check`](Failure::check) and [`trap`](Failure::trap) still see the concrete
    /// type.
    pub fn from_boxed(error: Box<dyn StdError + 'static>) -> Failure {
        Failure {
            inner: Box::new(Inner {
                error,
                type_name: "Box<dyn Error>",
                backtrace: Backtrace::capture(),
                shadowed_backtrace: None,
            }),
        }
    }

    /// The failure for a caught panic: its error is [`Panicked`] with the panic's message.
    /// The backtrace is the one of the place that caught the panic.
    pub fn from_panic(payload: Box<dyn Any + Send>) -> Failure {
        Failure::new(Panicked(crate::error::panic_message(&*payload)))
    }

    /// True when the wrapped error is an `E` (Twisted's `check`).
    pub fn check<E: StdError + 'static>(&self) -> bool {
        self.inner.error.is::<E>()
    }

    /// Extracts the error if it is an `E`, or gives the failure back unchanged (Twisted's `trap`,
    /// which re-raises the failure when it does not match): in an errback, `f.trap::<E>()?`
    /// handles `E` and passes every other failure on.
    ///
    /// # Errors
    /// The failure itself, when its error is not an `E`.
    pub fn trap<E: StdError + 'static>(self) -> Result<E, Failure> {
        if !self.check::<E>() {
            return Err(self);
        }
        match self.inner.error.downcast::<E>() {
            Ok(e) => Ok(*e),
            Err(_) => unreachable!("checked above"),
        }
    }

    /// The wrapped error as an `E`, if it is one.
    pub fn downcast_ref<E: StdError + 'static>(&self) -> Option<&E> {
        self.inner.error.downcast_ref::<E>()
    }

    /// The wrapped error.
    pub fn error(&self) -> &(dyn StdError + 'static) {
        &*self.inner.error
    }

    /// Unwraps the boxed error, dropping the backtrace.
    pub fn into_error(self) -> Box<dyn StdError + 'static> {
        self.inner.error
    }

    /// The error's message (its `Display`), Twisted's `getErrorMessage`.
    pub fn message(&self) -> String {
        self.inner.error.to_string()
    }

    /// The name of the error type given to [`new`](Failure::new).
    pub fn type_name(&self) -> &'static str {
        self.inner.type_name
    }

    /// The backtrace of the place where the failure was made. Its
    /// [`status`](Backtrace::status) is `Disabled` unless backtraces were enabled then.
    pub fn backtrace(&self) -> &Backtrace {
        &self.inner.backtrace
    }

    /// The type, the message and (when captured) the backtrace, as Twisted's `getTraceback`.
    pub fn traceback(&self) -> String {
        let mut s = format!("{}: {}", self.inner.type_name, self.inner.error);
        let mut source = self.inner.error.source();
        while let Some(e) = source {
            s.push_str(&format!("\ncaused by: {e}"));
            source = e.source();
        }
        if let Some(bt) = &self.inner.shadowed_backtrace {
            s.push_str(&format!("\nbacktrace:\n{bt}"));
        } else if self.inner.backtrace.status() == BacktraceStatus::Captured {
            s.push_str(&format!("\nbacktrace:\n{}", self.inner.backtrace));
        }
        s
    }

    /// A stand-in with the same type name, message and rendered backtrace, left in an input
    /// Deferred whose failure was also handed to an aggregate (DeferredList without
    /// `consume_errors`): it is what gets logged as unhandled, as Twisted logs the very same
    /// failure object.
    pub(crate) fn shadow(&self) -> Failure {
        let bt =
            self.inner
                .shadowed_backtrace
                .clone()
                .or_else(|| match self.inner.backtrace.status() {
                    BacktraceStatus::Captured => Some(self.inner.backtrace.to_string()),
                    _ => None,
                });
        Failure {
            inner: Box::new(Inner {
                error: Box::new(Message(self.message())),
                type_name: self.inner.type_name,
                backtrace: Backtrace::disabled(),
                shadowed_backtrace: bt,
            }),
        }
    }
}

impl<E: StdError + 'static> From<E> for Failure {
    fn from(error: E) -> Failure {
        Failure::new(error)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.inner.type_name, self.inner.error)
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.traceback())
    }
}

impl AsRef<dyn StdError + 'static> for Failure {
    fn as_ref(&self) -> &(dyn StdError + 'static) {
        self.error()
    }
}

/// An error that is only a message (made by [`Failure::msg`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message(pub String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Message {}

/// A callback panicked; the panic's message. The panic was caught, so it did not unwind through
/// the reactor, and went on down the chain as a [`Failure`] (Twisted turns an exception raised by
/// a callback into a `Failure` the same way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Panicked(pub String);

impl fmt::Display for Panicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "panicked: {}", self.0)
    }
}

impl StdError for Panicked {}

/// The Deferred was cancelled (Twisted's `CancelledError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cancelled;

impl fmt::Display for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the Deferred was cancelled")
    }
}

impl StdError for Cancelled {}

/// A timeout set by [`Deferred::add_timeout`](super::Deferred::add_timeout) expired (Twisted's
/// `defer.TimeoutError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut {
    /// The timeout that expired.
    pub after: Duration,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the Deferred timed out after {:?}", self.after)
    }
}

impl StdError for TimedOut {}

/// A Deferred was fired a second time (Twisted's `AlreadyCalledError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AlreadyCalled;

impl fmt::Display for AlreadyCalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the Deferred has already been called")
    }
}

impl StdError for AlreadyCalled {}

/// The first failure among several Deferreds, and the index of the Deferred that failed
/// (Twisted's `FirstError`, from `DeferredList(fireOnOneErrback=True)` and `gatherResults`).
#[derive(Debug)]
pub struct FirstError {
    /// Position of the failed Deferred in the input.
    pub index: usize,
    /// Its failure.
    pub failure: Failure,
}

impl fmt::Display for FirstError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FirstError[#{}, {}]", self.index, self.failure)
    }
}

impl StdError for FirstError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(self.failure.error())
    }
}

/// Every Deferred given to [`race`](super::race) failed; their failures in input order
/// (Twisted's `FailureGroup`).
#[derive(Debug)]
pub struct FailureGroup {
    /// The failures, in the order of the input Deferreds.
    pub failures: Vec<Failure>,
}

impl fmt::Display for FailureGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "all {} Deferreds failed", self.failures.len())?;
        for (i, fl) in self.failures.iter().enumerate() {
            write!(f, "; #{i}: {fl}")?;
        }
        Ok(())
    }
}

impl StdError for FailureGroup {}

//! [`Failure`] (Twisted's `twisted.python.failure.Failure`) and the typed errors of Deferreds.

use std::any::Any;
use std::backtrace::{Backtrace, BacktraceStatus};
use std::cell::Cell;
use std::error::Error as StdError;
use std::fmt;
use std::marker::PhantomData;
use std::rc::Rc;
use std::time::Duration;

/// An error travelling down a [`Deferred`](super::Deferred)'s errback chain.
///
/// A `Failure` holds any error type (`Box<dyn Error>`, not necessarily `Send`), the name of that
/// type, and the [`Backtrace`] of the place where it was made. The backtrace is captured with
/// [`Backtrace::capture`], which costs almost nothing unless `RUST_BACKTRACE` or
/// `RUST_LIB_BACKTRACE` asks for backtraces; [`Failure::with_backtrace`] takes one you captured
/// yourself (for example with [`Backtrace::force_capture`]).
///
/// **Cloning is cheap**: clones share the error and the backtrace (one reference count), as
/// Twisted hands the very same `Failure` object to every observer of a Deferred (see
/// [`Deferred::observe`](super::Deferred::observe) and [`DeferredList`](super::DeferredList)).
/// For the same reason the error is only ever lent out (by [`error`](Failure::error),
/// [`downcast_ref`](Failure::downcast_ref) or [`trap`](Failure::trap)), never moved out.
///
/// Like Twisted's `Failure`, it can be inspected by type: [`check`](Failure::check) tells whether
/// the error is of a type, [`trap`](Failure::trap) gives it (as a [`Trapped`]) or gives the
/// failure back, so that `?` re-raises it down the chain:
///
/// ```
/// use torsion::defer::{Cancelled, Deferred, Failure};
///
/// let (d, _fire) = Deferred::<u32>::new();
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
#[derive(Clone)]
pub struct Failure {
    inner: Rc<Inner>,
}

struct Inner {
    error: Box<dyn StdError + 'static>,
    type_name: &'static str,
    backtrace: Backtrace,
    /// Handed to a [`DeferredList`](super::DeferredList) with `consume_errors`: a Deferred left
    /// holding it does not log it as unhandled.
    consumed: Cell<bool>,
}

impl Failure {
    /// Wraps `error`, capturing the backtrace of the caller (when backtraces are enabled).
    pub fn new<E: StdError + 'static>(error: E) -> Failure {
        Failure::with_backtrace(error, Backtrace::capture())
    }

    /// Wraps `error` with a backtrace captured by the caller.
    pub fn with_backtrace<E: StdError + 'static>(error: E, backtrace: Backtrace) -> Failure {
        Failure::build(Box::new(error), std::any::type_name::<E>(), backtrace)
    }

    fn build(
        error: Box<dyn StdError + 'static>,
        type_name: &'static str,
        backtrace: Backtrace,
    ) -> Failure {
        Failure {
            inner: Rc::new(Inner {
                error,
                type_name,
                backtrace,
                consumed: Cell::new(false),
            }),
        }
    }

    /// A failure carrying only a message (its error type is [`Message`]).
    pub fn msg(message: impl fmt::Display) -> Failure {
        Failure::new(Message(message.to_string()))
    }

    /// Wraps an already boxed error. Its type name is that of the box, since the concrete type
    /// is unknown; [`check`](Failure::check), [`trap`](Failure::trap) and
    /// [`downcast_ref`](Failure::downcast_ref) still see the concrete type.
    pub fn from_boxed(error: Box<dyn StdError + 'static>) -> Failure {
        Failure::build(error, "Box<dyn Error>", Backtrace::capture())
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

    /// Gives the error as a [`Trapped<E>`] if it is an `E` (it derefs to `&E`), or gives the
    /// failure back unchanged (Twisted's `trap`, which re-raises the failure when it does not
    /// match): in an errback, `f.trap::<E>()?` handles `E` and passes every other failure on.
    ///
    /// # Errors
    /// The failure itself, when its error is not an `E`.
    pub fn trap<E: StdError + 'static>(self) -> Result<Trapped<E>, Failure> {
        if self.check::<E>() {
            Ok(Trapped {
                failure: self,
                _e: PhantomData,
            })
        } else {
            Err(self)
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

    /// The error's message (its `Display`), Twisted's `getErrorMessage`.
    #[doc(alias = "getErrorMessage")]
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

    /// True when `self` and `other` are clones of one failure (Twisted's `is`).
    pub fn same(&self, other: &Failure) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }

    /// The type, the message and (when captured) the backtrace, as Twisted's `getTraceback`.
    #[doc(alias = "getTraceback")]
    pub fn traceback(&self) -> String {
        let mut s = format!("{}: {}", self.inner.type_name, self.inner.error);
        let mut source = self.inner.error.source();
        while let Some(e) = source {
            s.push_str(&format!("\ncaused by: {e}"));
            source = e.source();
        }
        if self.inner.backtrace.status() == BacktraceStatus::Captured {
            s.push_str(&format!("\nbacktrace:\n{}", self.inner.backtrace));
        }
        s
    }

    /// Marks the failure as handled by a list with `consume_errors`: a Deferred still holding
    /// it (an observed input) does not log it as unhandled.
    pub(crate) fn mark_consumed(&self) {
        self.inner.consumed.set(true);
    }

    /// Logs the failure as an unhandled error of a Deferred, unless a list consumed it. With no
    /// `tracing` subscriber installed it goes to stderr instead (as Twisted prints to stderr
    /// before logging starts): an error nobody handled is never silent.
    pub(crate) fn log_unhandled(&self) {
        if self.inner.consumed.get() {
            return;
        }
        if tracing::dispatcher::has_been_set() {
            tracing::error!("Unhandled error in Deferred:\n{:?}", self);
        } else {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "Unhandled error in Deferred:\n{self:?}");
        }
    }
}

/// The error of a [`Failure`] known to be an `E`, from [`Failure::trap`]. It derefs to `E`,
/// and still holds the failure (errors are shared by clones of a failure, so they are lent, not
/// moved out).
pub struct Trapped<E> {
    failure: Failure,
    _e: PhantomData<fn() -> E>,
}

impl<E: StdError + 'static> Trapped<E> {
    /// The failure the error came from.
    pub fn failure(&self) -> &Failure {
        &self.failure
    }

    /// Gives the failure back (to re-raise it after all).
    pub fn into_failure(self) -> Failure {
        self.failure
    }
}

impl<E: StdError + 'static> std::ops::Deref for Trapped<E> {
    type Target = E;
    fn deref(&self) -> &E {
        self.failure
            .downcast_ref::<E>()
            .expect("torsion: unreachable: trap checked the type")
    }
}

impl<E: StdError + 'static> fmt::Debug for Trapped<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
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
#[doc(alias = "CancelledError")]
pub struct Cancelled;

impl fmt::Display for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the Deferred was cancelled")
    }
}

impl StdError for Cancelled {}

/// A timeout expired: the one set by [`Deferred::add_timeout`](super::Deferred::add_timeout)
/// (Twisted's `defer.TimeoutError`), or any other (its message is neutral: "timed out after
/// ...").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[doc(alias = "TimeoutError")]
pub struct TimedOut {
    /// The timeout that expired.
    pub after: Duration,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "timed out after {:?}", self.after)
    }
}

impl StdError for TimedOut {}

/// A Deferred was fired a second time (Twisted's `AlreadyCalledError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[doc(alias = "AlreadyCalledError")]
pub struct AlreadyCalled;

impl fmt::Display for AlreadyCalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the Deferred has already been called")
    }
}

impl StdError for AlreadyCalled {}

/// A callback returned the very Deferred it was added to; waiting on itself would never end, so
/// the chain goes on with this failure instead (Twisted warns and the chain hangs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChainedToItself;

impl fmt::Display for ChainedToItself {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a callback returned the Deferred it was added to")
    }
}

impl StdError for ChainedToItself {}

/// The first failure among several Deferreds, and the index of the Deferred that failed
/// (Twisted's `FirstError`, from `DeferredList(fireOnOneErrback=True)` and `gatherResults`).
#[derive(Debug, Clone)]
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
#[derive(Debug, Clone)]
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

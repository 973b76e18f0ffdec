//! Futures to Deferreds: [`ensure_deferred`] / [`Deferred::from_future`] (Twisted's
//! `ensureDeferred` / `Deferred.fromCoroutine`).
//!
//! The other direction, awaiting a Deferred, is [`IntoFuture`](std::future::IntoFuture) on
//! [`Deferred`] (see [`DeferredFuture`](super::DeferredFuture)).
//!
//! Cancellation crosses both ways: cancelling the Deferred of a future drops the future (and so
//! cancels, through [`DeferredFuture`](super::DeferredFuture)'s drop, the Deferred it was
//! awaiting); a failure or a panic inside the future becomes the Deferred's [`Failure`].
//!
//! One difference from Twisted: a cancelled coroutine in Twisted gets `CancelledError` raised at
//! its `await` and may catch it and go on; a Rust future is simply dropped (its destructors
//! run), which is how Rust cancels futures.

use std::any::Any;
use std::cell::RefCell;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::{Deferred, Failure};

/// A future to run on the current thread (not `Send`).
pub type LocalFuture = Pin<Box<dyn Future<Output = ()>>>;

/// Runs `!Send` futures on the current thread: the reactor's local executor (Twisted runs
/// coroutines on the reactor thread the same way).
///
/// [`Reactor`](crate::Reactor) implements it with `spawn_local`; a test may implement it with
/// any single-threaded executor.
pub trait LocalSpawn {
    /// Starts `fut` (polling it once at once, like Twisted's `ensureDeferred`, is allowed and
    /// expected) and returns a function that drops it if it has not finished.
    fn spawn_local_boxed(&self, fut: LocalFuture) -> Box<dyn FnOnce()>;
}

/// Drops a spawned future (as returned by [`LocalSpawn::spawn_local_boxed`]).
type CancelFn = Box<dyn FnOnce()>;

/// Polls the inner future inside `catch_unwind`, so that a panic becomes a value.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(move || inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

/// Runs `fut` on `spawner` and returns a Deferred of its result (Twisted's `ensureDeferred`).
///
/// The future's `Err` (or a panic in it) becomes the Deferred's failure. Cancelling the Deferred
/// drops the future (if it has not finished) and the Deferred fails with
/// [`Cancelled`](super::Cancelled).
#[doc(alias = "ensureDeferred")]
#[doc(alias = "inlineCallbacks")]
pub fn ensure_deferred<S, F, T>(spawner: &S, fut: F) -> Deferred<T>
where
    S: LocalSpawn + ?Sized,
    F: Future<Output = Result<T, Failure>> + 'static,
    T: 'static,
{
    let cancel_slot: Rc<RefCell<Option<CancelFn>>> = Rc::default();
    let slot = cancel_slot.clone();
    let (d, fire) = Deferred::<T>::with_canceller(move |_| {
        let cancel = slot.borrow_mut().take();
        if let Some(cancel) = cancel {
            cancel();
        }
    });
    let fired = fire.clone();
    let guarded = CatchUnwind(Box::pin(fut));
    let cancel = spawner.spawn_local_boxed(Box::pin(async move {
        let out = match guarded.await {
            Ok(r) => r,
            Err(payload) => Err(Failure::from_panic(payload)),
        };
        let _ = fire.fire(out);
    }));
    if !fired.called() {
        *cancel_slot.borrow_mut() = Some(cancel);
    }
    d
}

impl<T: 'static> Deferred<T> {
    /// Runs `fut` on `spawner` and returns a Deferred of its result (Twisted's
    /// `Deferred.fromCoroutine`); the same as [`ensure_deferred`].
    #[doc(alias = "fromCoroutine")]
    pub fn from_future<S, F>(spawner: &S, fut: F) -> Deferred<T>
    where
        S: LocalSpawn + ?Sized,
        F: Future<Output = Result<T, Failure>> + 'static,
    {
        ensure_deferred(spawner, fut)
    }
}

/// What an async `main` (or any entry point taking either form) may return: a [`Deferred`], or
/// a future of `Result<T, Failure>` that is run on the spawner.
pub trait IntoDeferred<T> {
    /// The Deferred of this result, running it on `spawner` if it is a future.
    fn into_deferred(self, spawner: &dyn LocalSpawn) -> Deferred<T>;
}

impl<T: 'static> IntoDeferred<T> for Deferred<T> {
    fn into_deferred(self, _spawner: &dyn LocalSpawn) -> Deferred<T> {
        self
    }
}

impl<T, F> IntoDeferred<T> for F
where
    T: 'static,
    F: Future<Output = Result<T, Failure>> + 'static,
{
    fn into_deferred(self, spawner: &dyn LocalSpawn) -> Deferred<T> {
        ensure_deferred(spawner, self)
    }
}

impl LocalSpawn for crate::Reactor {
    fn spawn_local_boxed(&self, fut: LocalFuture) -> Box<dyn FnOnce()> {
        let task = self.spawn_local(fut);
        Box::new(move || task.cancel())
    }
}

//! Awaiting a Deferred: [`IntoFuture`] for [`Deferred`].

use std::cell::RefCell;
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use super::chain::{put_value, Chain, Outcome};
use super::{outcome_into, Deferred, Failure};

struct Slot {
    result: Option<Outcome>,
    waker: Option<Waker>,
    /// The result was delivered to the future (so it must not cancel on drop).
    done: bool,
}

/// The future of an awaited [`Deferred`]: resolves to its result as a `Result<T, Failure>`.
///
/// Awaiting adds a final stage that takes the result, so the Deferred's failure counts as
/// handled by the awaiting code. Dropping the future before the Deferred fired cancels the
/// Deferred: this is how cancelling a task (or the Deferred of an
/// [`ensure_deferred`](crate::defer::ensure_deferred) coroutine) reaches the Deferred it awaits, as
/// in Twisted. The Deferred does not need a reactor: whoever fires it wakes the task.
///
/// ```
/// use std::future::{Future, IntoFuture};
/// use std::pin::pin;
/// use std::task::{Context, Poll, Waker};
/// use torsion::defer::Deferred;
///
/// let (d, fire) = Deferred::<u8>::new();
/// let mut fut = pin!(d.into_future());
/// let mut cx = Context::from_waker(Waker::noop());
/// assert!(fut.as_mut().poll(&mut cx).is_pending());
/// fire.callback(7).unwrap();
/// assert!(matches!(fut.as_mut().poll(&mut cx), Poll::Ready(Ok(7))));
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct DeferredFuture<T> {
    slot: Rc<RefCell<Slot>>,
    chain: Rc<Chain>,
    _t: PhantomData<fn() -> T>,
}

impl<T: 'static> IntoFuture for Deferred<T> {
    type Output = Result<T, Failure>;
    type IntoFuture = DeferredFuture<T>;

    fn into_future(self) -> DeferredFuture<T> {
        let slot = Rc::new(RefCell::new(Slot {
            result: None,
            waker: None,
            done: false,
        }));
        let s = slot.clone();
        let chain = self.chain.clone();
        let _ = self.add_raw(Box::new(move |o: &mut Outcome| {
            let o = std::mem::replace(o, Ok(put_value(())));
            let waker = {
                let mut slot = s.borrow_mut();
                slot.result = Some(o);
                slot.done = true;
                slot.waker.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
            None
        }));
        DeferredFuture {
            slot,
            chain,
            _t: PhantomData,
        }
    }
}

impl<T: 'static> Future for DeferredFuture<T> {
    type Output = Result<T, Failure>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self.slot.borrow_mut();
        if let Some(o) = slot.result.take() {
            return Poll::Ready(outcome_into::<T>(o));
        }
        match &slot.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => slot.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> Drop for DeferredFuture<T> {
    fn drop(&mut self) {
        let (done, unread) = {
            let mut slot = self.slot.borrow_mut();
            (slot.done, slot.result.take())
        };
        if !done {
            self.chain.cancel();
        }
        if let Some(Err(f)) = unread {
            f.log_unhandled();
        }
    }
}

//! The local executor: futures run on the reactor thread, woken from any thread.
//!
//! A task is polled once synchronously when it is spawned (as Twisted's `ensureDeferred` runs a
//! coroutine up to its first `await`), then each time its waker fires. A wake-up is a call
//! through the reactor's thread queue, so wakers are `Send + Sync` and may be used anywhere;
//! repeated wakes before the next poll are coalesced.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Weak;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use super::handle::Shared;
use super::{Inner, Reactor};

type LocalFuture = Pin<Box<dyn Future<Output = ()>>>;

struct TaskWaker {
    shared: Arc<Shared>,
    slot: u32,
    generation: u32,
    /// True while a poll is already queued for this task.
    queued: AtomicBool,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            let (slot, generation) = (self.slot, self.generation);
            // A gone reactor cannot run the task any more: nothing to do.
            let _ = self.shared.push(Box::new(move |r: &Reactor| {
                r.inner.executor.poll(r, slot, generation)
            }));
        }
    }
}

enum State {
    /// Waiting for its waker; the future is here.
    Idle(LocalFuture),
    /// Being polled (the future is on the poller's stack).
    Running,
    /// Cancelled while being polled: drop the future when the poll returns.
    CancelledWhileRunning,
}

struct Slot {
    generation: u32,
    task: Option<(State, Arc<TaskWaker>)>,
}

#[derive(Default)]
pub(crate) struct Executor {
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<u32>>,
}

impl Executor {
    /// Number of unfinished tasks.
    pub(crate) fn len(&self) -> usize {
        self.slots
            .borrow()
            .iter()
            .filter(|s| s.task.is_some())
            .count()
    }

    pub(crate) fn spawn(&self, reactor: &Reactor, fut: LocalFuture) -> Task {
        let slot = match self.free.borrow_mut().pop() {
            Some(s) => s,
            None => {
                let mut slots = self.slots.borrow_mut();
                slots.push(Slot {
                    generation: 0,
                    task: None,
                });
                (slots.len() - 1) as u32
            }
        };
        let generation = {
            let mut slots = self.slots.borrow_mut();
            let s = &mut slots[slot as usize];
            let waker = Arc::new(TaskWaker {
                shared: reactor.inner.shared.clone(),
                slot,
                generation: s.generation,
                queued: AtomicBool::new(true),
            });
            s.task = Some((State::Idle(fut), waker));
            s.generation
        };
        // This first poll is a callback of the reactor like any other, even when `spawn_local`
        // is called from outside the loop: `iterate`/`run` from it are refused (a nested
        // iteration would run this task's own wake-up while it is being polled, and lose it).
        let _looping = reactor.enter().ok();
        self.poll(reactor, slot, generation);
        Task {
            reactor: std::rc::Rc::downgrade(&reactor.inner),
            slot,
            generation,
        }
    }

    /// Polls the task if it still exists. No borrow is held while the future runs.
    pub(crate) fn poll(&self, reactor: &Reactor, slot: u32, generation: u32) {
        let (mut fut, waker) = {
            let mut slots = self.slots.borrow_mut();
            let Some(s) = slots.get_mut(slot as usize) else {
                return;
            };
            if s.generation != generation {
                return;
            }
            let Some((state, waker)) = s.task.as_mut() else {
                return;
            };
            let fut = match std::mem::replace(state, State::Running) {
                State::Idle(f) => f,
                other => {
                    *state = other;
                    return;
                }
            };
            (fut, waker.clone())
        };
        waker.queued.store(false, Ordering::Release);
        let w = Waker::from(waker);
        let mut cx = Context::from_waker(&w);
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.as_mut().poll(&mut cx)));
        let finished = match result {
            Ok(Poll::Ready(())) => true,
            Ok(Poll::Pending) => false,
            Err(payload) => {
                tracing::error!(
                    message = %crate::error::panic_message(&*payload),
                    "a task spawned on the reactor panicked; the task is dropped"
                );
                true
            }
        };
        let _ = reactor;
        let dropped = {
            let mut slots = self.slots.borrow_mut();
            let s = &mut slots[slot as usize];
            let cancelled = matches!(s.task.as_ref(), Some((State::CancelledWhileRunning, _)));
            if finished || cancelled {
                s.task = None;
                s.generation = s.generation.wrapping_add(1);
                self.free.borrow_mut().push(slot);
                Some(fut)
            } else {
                if let Some((state, _)) = s.task.as_mut() {
                    *state = State::Idle(fut);
                }
                None
            }
        };
        // The future may own anything (even a Task handle): drop it with no borrow held.
        drop(dropped);
    }

    fn cancel(&self, slot: u32, generation: u32) {
        let fut = {
            let mut slots = self.slots.borrow_mut();
            let Some(s) = slots.get_mut(slot as usize) else {
                return;
            };
            if s.generation != generation {
                return;
            }
            match s.task.as_mut() {
                Some((state @ State::Running, _)) => {
                    *state = State::CancelledWhileRunning;
                    None
                }
                Some((State::Idle(_), _)) => {
                    let task = s.task.take();
                    s.generation = s.generation.wrapping_add(1);
                    self.free.borrow_mut().push(slot);
                    task
                }
                _ => None,
            }
        };
        drop(fut);
    }

    fn is_finished(&self, slot: u32, generation: u32) -> bool {
        let slots = self.slots.borrow();
        match slots.get(slot as usize) {
            Some(s) => s.generation != generation || s.task.is_none(),
            None => true,
        }
    }

    /// Drops every task (when the reactor is dropped).
    pub(crate) fn clear(&self) {
        let tasks: Vec<_> = self
            .slots
            .borrow_mut()
            .iter_mut()
            .filter_map(|s| s.task.take())
            .collect();
        drop(tasks);
    }
}

/// A handle to a future spawned with [`Reactor::spawn_local`].
///
/// Dropping the handle does not cancel the task.
#[derive(Clone, Debug)]
pub struct Task {
    reactor: Weak<Inner>,
    slot: u32,
    generation: u32,
}

impl Task {
    /// Drops the future if it has not finished. Cancelling from inside the task's own poll
    /// drops it as soon as that poll returns.
    pub fn cancel(&self) {
        if let Some(inner) = self.reactor.upgrade() {
            inner.executor.cancel(self.slot, self.generation);
        }
    }

    /// True once the future has completed, panicked or been cancelled.
    pub fn is_finished(&self) -> bool {
        match self.reactor.upgrade() {
            Some(inner) => inner.executor.is_finished(self.slot, self.generation),
            None => true,
        }
    }
}

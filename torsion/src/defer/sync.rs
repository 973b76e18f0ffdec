//! Coordination with Deferreds: [`DeferredLock`], [`DeferredSemaphore`] and [`DeferredQueue`].
//!
//! Waiters are served in FIFO order. Handing the lock, a token or an item to a waiter runs the
//! waiter's callbacks, which often release or put again at once; in Twisted that recurses (one
//! stack frame per waiter served). Here a release or put made while another one is already
//! handing out is left to the outer loop, so any number of waiters is served without recursion.
//! The observable order of callbacks is the same; only code that runs in a callback *after* its
//! own `release`/`put` now runs before the next waiter's callbacks instead of after them.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::rc::{Rc, Weak};

use super::{maybe_deferred, Deferred, IntoStep, Resolver};

/// Tokens shared by the lock and the semaphore.
struct Tokens {
    tokens: usize,
    limit: usize,
    waiting: VecDeque<(u64, Resolver<()>)>,
    next_id: u64,
    dispatching: bool,
}

fn acquire_token(core: &Rc<RefCell<Tokens>>) -> Deferred<()> {
    let mut st = core.borrow_mut();
    let id = st.next_id;
    st.next_id += 1;
    let weak: Weak<RefCell<Tokens>> = Rc::downgrade(core);
    let (d, fire) = Deferred::<()>::with_canceller(move |_| {
        if let Some(core) = weak.upgrade() {
            core.borrow_mut().waiting.retain(|(i, _)| *i != id);
        }
    });
    if st.tokens > 0 && st.waiting.is_empty() {
        st.tokens -= 1;
        drop(st);
        let _ = fire.callback(());
    } else {
        st.waiting.push_back((id, fire));
    }
    d
}

fn release_token(core: &Rc<RefCell<Tokens>>, too_many: &str) {
    {
        let mut st = core.borrow_mut();
        assert!(st.tokens < st.limit, "{}", too_many);
        st.tokens += 1;
        if st.dispatching {
            return;
        }
        st.dispatching = true;
    }
    loop {
        let next = {
            let mut st = core.borrow_mut();
            if st.tokens == 0 {
                None
            } else {
                let next = st.waiting.pop_front();
                if next.is_some() {
                    st.tokens -= 1;
                }
                next
            }
        };
        match next {
            Some((_, waiter)) => {
                let _ = waiter.callback(());
            }
            None => break,
        }
    }
    core.borrow_mut().dispatching = false;
}

fn run_holding<F, R>(
    acquired: Deferred<()>,
    release: impl FnOnce() + 'static,
    f: F,
) -> Deferred<R::Output>
where
    F: FnOnce() -> R + 'static,
    R: IntoStep,
{
    acquired.add_callback_deferred(move |()| {
        maybe_deferred(f).add_both(move |r| {
            release();
            r
        })
    })
}

/// A lock for code that runs across callbacks (Twisted's `DeferredLock`). Clones share the lock.
///
/// ```
/// use torsion::defer::DeferredLock;
///
/// let lock = DeferredLock::new();
/// let first = lock.acquire();       // fires at once
/// let second = lock.acquire();      // waits
/// assert!(first.has_result() && !second.called());
/// lock.release();                   // hands the lock to `second`
/// assert!(second.has_result() && lock.locked());
/// ```
#[derive(Clone)]
pub struct DeferredLock {
    core: Rc<RefCell<Tokens>>,
}

impl Default for DeferredLock {
    fn default() -> Self {
        DeferredLock::new()
    }
}

impl DeferredLock {
    /// An unlocked lock.
    pub fn new() -> DeferredLock {
        DeferredLock {
            core: Rc::new(RefCell::new(Tokens {
                tokens: 1,
                limit: 1,
                waiting: VecDeque::new(),
                next_id: 0,
                dispatching: false,
            })),
        }
    }

    /// A Deferred that fires when the lock is acquired (at once if it is free). Cancelling it
    /// while it waits removes it from the waiters.
    pub fn acquire(&self) -> Deferred<()> {
        acquire_token(&self.core)
    }

    /// Releases the lock, handing it to the first waiter if any.
    ///
    /// # Panics
    /// When the lock is not locked (Twisted asserts the same).
    pub fn release(&self) {
        release_token(&self.core, "Tried to release an unlocked lock");
    }

    /// True while the lock is held.
    pub fn locked(&self) -> bool {
        self.core.borrow().tokens == 0
    }

    /// Number of acquirers waiting.
    pub fn waiting(&self) -> usize {
        self.core.borrow().waiting.len()
    }

    /// Acquires the lock, runs `f` (which may return a Deferred), and releases the lock when
    /// `f`'s result is ready, whether a value or a failure (Twisted's `run`).
    pub fn run<F, R>(&self, f: F) -> Deferred<R::Output>
    where
        F: FnOnce() -> R + 'static,
        R: IntoStep,
    {
        let lock = self.clone();
        run_holding(self.acquire(), move || lock.release(), f)
    }
}

impl fmt::Debug for DeferredLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeferredLock")
            .field("locked", &self.locked())
            .field("waiting", &self.waiting())
            .finish()
    }
}

/// A semaphore for code that runs across callbacks (Twisted's `DeferredSemaphore`). Clones
/// share the semaphore.
#[derive(Clone)]
pub struct DeferredSemaphore {
    core: Rc<RefCell<Tokens>>,
}

impl DeferredSemaphore {
    /// A semaphore with `tokens` tokens.
    ///
    /// # Panics
    /// When `tokens` is 0 (Twisted raises `ValueError`).
    pub fn new(tokens: usize) -> DeferredSemaphore {
        assert!(tokens >= 1, "DeferredSemaphore requires tokens >= 1");
        DeferredSemaphore {
            core: Rc::new(RefCell::new(Tokens {
                tokens,
                limit: tokens,
                waiting: VecDeque::new(),
                next_id: 0,
                dispatching: false,
            })),
        }
    }

    /// A Deferred that fires when a token is acquired. Cancelling it while it waits removes it
    /// from the waiters.
    pub fn acquire(&self) -> Deferred<()> {
        acquire_token(&self.core)
    }

    /// Gives a token back, handing it to the first waiter if any.
    ///
    /// # Panics
    /// When more tokens are released than were acquired.
    pub fn release(&self) {
        release_token(
            &self.core,
            "Someone released me too many times: too many tokens!",
        );
    }

    /// Tokens available now.
    pub fn tokens(&self) -> usize {
        self.core.borrow().tokens
    }

    /// The number of tokens the semaphore was made with.
    pub fn limit(&self) -> usize {
        self.core.borrow().limit
    }

    /// Number of acquirers waiting.
    pub fn waiting(&self) -> usize {
        self.core.borrow().waiting.len()
    }

    /// Acquires a token, runs `f`, and releases the token when `f`'s result is ready.
    pub fn run<F, R>(&self, f: F) -> Deferred<R::Output>
    where
        F: FnOnce() -> R + 'static,
        R: IntoStep,
    {
        let sem = self.clone();
        run_holding(self.acquire(), move || sem.release(), f)
    }
}

impl fmt::Debug for DeferredSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeferredSemaphore")
            .field("tokens", &self.tokens())
            .field("limit", &self.limit())
            .field("waiting", &self.waiting())
            .finish()
    }
}

/// [`DeferredQueue::put`] on a full queue (Twisted's `QueueOverflow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueOverflow;

impl fmt::Display for QueueOverflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the DeferredQueue is full")
    }
}

impl std::error::Error for QueueOverflow {}

/// [`DeferredQueue::get`] with too many getters already waiting (Twisted's `QueueUnderflow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueUnderflow;

impl fmt::Display for QueueUnderflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("too many getters are waiting on the DeferredQueue")
    }
}

impl std::error::Error for QueueUnderflow {}

struct QueueState<T> {
    pending: VecDeque<T>,
    waiting: VecDeque<(u64, Resolver<T>)>,
    size: Option<usize>,
    backlog: Option<usize>,
    next_id: u64,
    dispatching: bool,
}

/// A queue whose `get` returns a Deferred (Twisted's `DeferredQueue`). Clones share the queue.
///
/// ```
/// use torsion::defer::DeferredQueue;
///
/// let q = DeferredQueue::new();
/// let item = q.get().unwrap(); // nothing yet: waits
/// q.put("hello").unwrap();     // goes straight to the waiting getter
/// assert_eq!(item.try_result().unwrap().unwrap(), "hello");
/// ```
pub struct DeferredQueue<T> {
    state: Rc<RefCell<QueueState<T>>>,
}

impl<T> Clone for DeferredQueue<T> {
    fn clone(&self) -> Self {
        DeferredQueue {
            state: self.state.clone(),
        }
    }
}

impl<T: 'static> Default for DeferredQueue<T> {
    fn default() -> Self {
        DeferredQueue::new()
    }
}

impl<T: 'static> DeferredQueue<T> {
    /// An unbounded queue with no limit on waiting getters.
    pub fn new() -> DeferredQueue<T> {
        DeferredQueue::with_limits(None, None)
    }

    /// A queue holding at most `size` items, with at most `backlog` getters waiting.
    pub fn with_limits(size: Option<usize>, backlog: Option<usize>) -> DeferredQueue<T> {
        DeferredQueue {
            state: Rc::new(RefCell::new(QueueState {
                pending: VecDeque::new(),
                waiting: VecDeque::new(),
                size,
                backlog,
                next_id: 0,
                dispatching: false,
            })),
        }
    }

    /// Gives `item` to the first waiting getter, or queues it.
    ///
    /// # Errors
    /// [`QueueOverflow`] when no getter waits and the queue holds `size` items.
    pub fn put(&self, item: T) -> Result<(), QueueOverflow> {
        {
            let mut st = self.state.borrow_mut();
            // While handing out, some pending items are already promised to waiting getters.
            let unmatched = st.pending.len().saturating_sub(st.waiting.len());
            let has_getter = st.waiting.len() > st.pending.len();
            if !has_getter && st.size.is_some_and(|size| unmatched >= size) {
                return Err(QueueOverflow);
            }
            st.pending.push_back(item);
        }
        self.dispatch();
        Ok(())
    }

    /// A Deferred that fires with the next item (at once if one is queued). Cancelling it while
    /// it waits removes it from the getters.
    ///
    /// # Errors
    /// [`QueueUnderflow`] when `backlog` getters are already waiting.
    pub fn get(&self) -> Result<Deferred<T>, QueueUnderflow> {
        let mut st = self.state.borrow_mut();
        if st.waiting.is_empty() {
            if let Some(item) = st.pending.pop_front() {
                return Ok(Deferred::succeed(item));
            }
        }
        let unmatched = st.waiting.len().saturating_sub(st.pending.len());
        if st.backlog.is_some_and(|b| unmatched >= b) {
            return Err(QueueUnderflow);
        }
        let id = st.next_id;
        st.next_id += 1;
        let weak = Rc::downgrade(&self.state);
        let (d, fire) = Deferred::<T>::with_canceller(move |_| {
            if let Some(state) = weak.upgrade() {
                state.borrow_mut().waiting.retain(|(i, _)| *i != id);
            }
        });
        st.waiting.push_back((id, fire));
        drop(st);
        self.dispatch();
        Ok(d)
    }

    /// Items queued and not yet taken.
    pub fn pending(&self) -> usize {
        let st = self.state.borrow();
        st.pending.len().saturating_sub(st.waiting.len())
    }

    /// Getters waiting for an item.
    pub fn waiting(&self) -> usize {
        let st = self.state.borrow();
        st.waiting.len().saturating_sub(st.pending.len())
    }

    /// Matches queued items with waiting getters in a loop (never recursively).
    fn dispatch(&self) {
        {
            let mut st = self.state.borrow_mut();
            if st.dispatching {
                return;
            }
            st.dispatching = true;
        }
        loop {
            let next = {
                let mut st = self.state.borrow_mut();
                if st.pending.is_empty() || st.waiting.is_empty() {
                    None
                } else {
                    let item = st.pending.pop_front().expect("checked");
                    let (_, getter) = st.waiting.pop_front().expect("checked");
                    Some((item, getter))
                }
            };
            match next {
                Some((item, getter)) => {
                    let _ = getter.callback(item);
                }
                None => break,
            }
        }
        self.state.borrow_mut().dispatching = false;
    }
}

impl<T> fmt::Debug for DeferredQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.state.borrow();
        f.debug_struct("DeferredQueue")
            .field("pending", &st.pending.len())
            .field("waiting", &st.waiting.len())
            .finish()
    }
}

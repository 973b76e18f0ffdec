//! Flow control shared by the transports: the producer registered with a transport and its
//! write buffer's water marks (the bookkeeping behind [`Consumer`](crate::Consumer)).
//!
//! A transport keeps one [`ProducerSlot`] in its state and asks it what to do; the slot
//! returns the producer to call, and the transport calls it once its own borrow is released
//! (producers are user code).

use std::rc::Rc;

use crate::interfaces::Producer;
use crate::Error;

/// Default high-water mark of a write buffer: a streaming producer is paused above it.
pub const DEFAULT_HIGH_WATER: usize = 64 * 1024;
/// Default low-water mark: a paused streaming producer is resumed at or below it.
pub const DEFAULT_LOW_WATER: usize = 16 * 1024;

/// What to tell a producer that was just registered.
pub(crate) enum OnRegister {
    /// The transport is closed: `stop_producing`.
    Stop,
    /// A pull producer: `resume_producing` (write the first piece now).
    Resume,
    /// A streaming producer registered over a full buffer: `pause_producing`.
    Pause,
    /// A streaming producer under the high-water mark: nothing.
    Nothing,
}

/// The registered producer, whether it is streaming and paused, and the water marks.
pub(crate) struct ProducerSlot {
    producer: Option<Rc<dyn Producer>>,
    streaming: bool,
    paused: bool,
    high: usize,
    low: usize,
}

impl Default for ProducerSlot {
    fn default() -> Self {
        ProducerSlot {
            producer: None,
            streaming: false,
            paused: false,
            high: DEFAULT_HIGH_WATER,
            low: DEFAULT_LOW_WATER,
        }
    }
}

impl ProducerSlot {
    /// A producer is registered.
    pub(crate) fn is_registered(&self) -> bool {
        self.producer.is_some()
    }

    /// A pull producer is registered (it is asked for more each time the buffer empties).
    pub(crate) fn wants_pull(&self) -> bool {
        self.producer.is_some() && !self.streaming
    }

    /// Registers `producer` with a transport holding `buffered` bytes (`closed`: a closed
    /// transport keeps nothing); says what to tell it.
    ///
    /// # Errors
    /// [`Error::ProducerAlreadyRegistered`] when one is registered.
    pub(crate) fn register(
        &mut self,
        producer: Rc<dyn Producer>,
        streaming: bool,
        closed: bool,
        buffered: usize,
    ) -> Result<OnRegister, Error> {
        if self.producer.is_some() {
            return Err(Error::ProducerAlreadyRegistered);
        }
        if closed {
            return Ok(OnRegister::Stop);
        }
        self.producer = Some(producer);
        self.streaming = streaming;
        self.paused = streaming && buffered > self.high;
        Ok(if !streaming {
            OnRegister::Resume
        } else if self.paused {
            OnRegister::Pause
        } else {
            OnRegister::Nothing
        })
    }

    /// Unregisters (or forgets, at close) the producer; the caller drops it with no borrow
    /// held.
    pub(crate) fn take(&mut self) -> Option<Rc<dyn Producer>> {
        self.paused = false;
        self.producer.take()
    }

    /// The pull producer to ask for more, if one is registered.
    pub(crate) fn pull(&self) -> Option<Rc<dyn Producer>> {
        self.producer.clone().filter(|_| !self.streaming)
    }

    /// After a write left `buffered` bytes: the streaming producer to pause, once, when the
    /// buffer passed the high-water mark.
    pub(crate) fn pause_if_over(&mut self, buffered: usize) -> Option<Rc<dyn Producer>> {
        if self.streaming && !self.paused && buffered > self.high {
            self.paused = true;
            return self.producer.clone();
        }
        None
    }

    /// After a flush left `buffered` bytes: the paused streaming producer to resume, once the
    /// buffer is at the low-water mark.
    pub(crate) fn resume_if_under(&mut self, buffered: usize) -> Option<Rc<dyn Producer>> {
        if self.streaming && self.paused && buffered <= self.low {
            self.paused = false;
            return self.producer.clone();
        }
        None
    }

    /// Sets the water marks (`low` capped at `high`).
    pub(crate) fn set_limits(&mut self, high: usize, low: usize) {
        self.high = high;
        self.low = low.min(high);
    }
}

/// Tells a just-registered producer what [`ProducerSlot::register`] said (no borrow held).
pub(crate) fn tell(producer: &Rc<dyn Producer>, what: OnRegister) {
    match what {
        OnRegister::Stop => producer.stop_producing(),
        OnRegister::Resume => producer.resume_producing(),
        OnRegister::Pause => producer.pause_producing(),
        OnRegister::Nothing => {}
    }
}

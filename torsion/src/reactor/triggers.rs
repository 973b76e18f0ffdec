//! System event triggers (Twisted's `addSystemEventTrigger`).

use std::collections::VecDeque;

use super::LocalCall;

/// A system event of the reactor's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SystemEvent {
    /// Fired by `run` before the loop starts.
    Startup,
    /// Fired on the iteration after `stop`.
    Shutdown,
}

/// When a trigger runs relative to the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Before the event proper.
    Before,
    /// The event itself (at shutdown, descriptors are disconnected at the end of this phase).
    During,
    /// After the event.
    After,
}

/// Identifies a trigger for [`Reactor::remove_system_event_trigger`](super::Reactor::remove_system_event_trigger).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TriggerId(u64);

#[derive(Default)]
pub(super) struct Triggers {
    next: u64,
    queue: VecDeque<(TriggerId, Phase, SystemEvent, LocalCall)>,
}

impl Triggers {
    pub(super) fn add(&mut self, phase: Phase, event: SystemEvent, f: LocalCall) -> TriggerId {
        let id = TriggerId(self.next);
        self.next += 1;
        self.queue.push_back((id, phase, event, f));
        id
    }

    pub(super) fn remove(&mut self, id: TriggerId) -> Option<LocalCall> {
        let pos = self.queue.iter().position(|t| t.0 == id)?;
        self.queue.remove(pos).map(|t| t.3)
    }

    /// Takes the first trigger of `phase` for `event`.
    pub(super) fn pop(&mut self, phase: Phase, event: SystemEvent) -> Option<LocalCall> {
        let pos = self
            .queue
            .iter()
            .position(|t| t.1 == phase && t.2 == event)?;
        self.queue.remove(pos).map(|t| t.3)
    }
}

//! The descriptor registry: a slab of watched descriptors with generation-tagged tokens.
//!
//! A token is `generation << 32 | slot`. When a slot is freed its generation is bumped, so an
//! event still in flight for the old descriptor (or for a new descriptor that reuses its fd
//! number) carries a token that no longer matches and is skipped.

use std::os::fd::RawFd;
use std::rc::Rc;

use super::FileDescriptor;
use crate::poller::{Interest, Token, Trigger};

/// The token of the reactor's own waker (never a slab token: slot `u32::MAX` is never used).
pub(crate) const WAKER_TOKEN: Token = u64::MAX;

pub(crate) struct Entry {
    pub(crate) fd: RawFd,
    pub(crate) desc: Rc<dyn FileDescriptor>,
    pub(crate) interest: Interest,
    /// An edge-triggered registration was reported hung up: it is read again after every read
    /// until it stops reading (the end of the stream is then seen, or it was paused).
    pub(crate) hup: bool,
    /// Queued to be dispatched for reading again (see `Reactor::read_again`), at most once:
    /// the iteration in which that was asked.
    pub(crate) again: Option<u64>,
    /// How the poller reports it: [`Trigger::Edge`] only when asked for and the backend
    /// honours it.
    pub(crate) trigger: Trigger,
}

struct Slot {
    generation: u32,
    entry: Option<Entry>,
}

/// Invariant: `by_fd[fd] == slot` exactly for occupied slots; `free` lists the empty ones.
#[derive(Default)]
pub(crate) struct Registry {
    slots: Vec<Slot>,
    free: Vec<u32>,
    by_fd: Vec<u32>,
    len: usize,
}

const NONE: u32 = u32::MAX;

fn token(slot: u32, generation: u32) -> Token {
    (u64::from(generation) << 32) | u64::from(slot)
}

impl Registry {
    /// Number of registered descriptors.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The slot watching `fd`, if any.
    pub(crate) fn slot_of(&self, fd: RawFd) -> Option<u32> {
        let s = *self.by_fd.get(usize::try_from(fd).ok()?)?;
        (s != NONE).then_some(s)
    }

    /// The token and entry of the descriptor watching `fd`.
    pub(crate) fn get_mut(&mut self, fd: RawFd) -> Option<(Token, &mut Entry)> {
        let s = self.slot_of(fd)?;
        let slot = &mut self.slots[s as usize];
        let t = token(s, slot.generation);
        slot.entry.as_mut().map(|e| (t, e))
    }

    /// The slot of a token, if that registration is still the live one.
    fn live_slot(&self, t: Token) -> Option<usize> {
        let s = (t & 0xffff_ffff) as usize;
        let slot = self.slots.get(s)?;
        (u64::from(slot.generation) == t >> 32).then_some(s)
    }

    /// The entry a token refers to, if that registration is still the live one.
    pub(crate) fn lookup(&self, t: Token) -> Option<&Entry> {
        let s = self.live_slot(t)?;
        self.slots[s].entry.as_ref()
    }

    /// The entry a token refers to, mutably.
    pub(crate) fn lookup_mut(&mut self, t: Token) -> Option<&mut Entry> {
        let s = self.live_slot(t)?;
        self.slots[s].entry.as_mut()
    }

    /// Adds a descriptor; the caller has checked that `fd` is not registered.
    pub(crate) fn insert(&mut self, entry: Entry) -> Token {
        let fd = entry.fd as usize;
        let s = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    entry: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        if self.by_fd.len() <= fd {
            self.by_fd.resize(fd + 1, NONE);
        }
        self.by_fd[fd] = s;
        let slot = &mut self.slots[s as usize];
        slot.entry = Some(entry);
        self.len += 1;
        token(s, slot.generation)
    }

    /// Removes the descriptor watching `fd`.
    pub(crate) fn remove(&mut self, fd: RawFd) -> Option<Entry> {
        let s = self.slot_of(fd)?;
        self.by_fd[fd as usize] = NONE;
        let slot = &mut self.slots[s as usize];
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(s);
        self.len -= 1;
        slot.entry.take()
    }

    /// Removes every descriptor.
    pub(crate) fn drain(&mut self) -> Vec<Entry> {
        let fds: Vec<RawFd> = self
            .slots
            .iter()
            .filter_map(|s| s.entry.as_ref().map(|e| e.fd))
            .collect();
        fds.into_iter().filter_map(|fd| self.remove(fd)).collect()
    }
}

//! The registry: a slab of registrations with generation-tagged tokens.
//!
//! A token is `generation << 32 | slot`. When a slot is freed its generation is bumped, so an
//! event still in flight for the old registration (or for a new one that reuses its fd number)
//! carries a token that no longer matches and is skipped. Every operation but the
//! `add_reader`/`add_writer` facade goes by token; the facade finds a descriptor by fd number
//! through `by_fd`, then checks identity.

use std::os::fd::RawFd;
use std::rc::Rc;

use super::FileDescriptor;
use crate::poller::{Interest, Token, Trigger};

/// The token of the reactor's own waker (never a slab token: slot `u32::MAX` is never used).
pub(crate) const WAKER_TOKEN: Token = u64::MAX;

/// The token of the stop-signal eventfd, registered by the reactor that handles SIGINT and
/// SIGTERM while it runs (slot `u32::MAX - 1` is never used either).
pub(crate) const SIGNAL_TOKEN: Token = u64::MAX - 1;

pub(crate) struct Entry {
    /// The descriptor number it was registered with (what the poller knows it by).
    pub(crate) fd: RawFd,
    pub(crate) desc: Rc<dyn FileDescriptor>,
    /// What the owner wants reported; empty is allowed (the registration stays, the poller
    /// does not watch it).
    pub(crate) interest: Interest,
    /// How the poller reports it: [`Trigger::Edge`] only when asked for and the backend
    /// honours it.
    pub(crate) trigger: Trigger,
    /// Registered with the poller: exactly when `interest` is not empty.
    pub(crate) polled: bool,
    /// Made by `add_reader`/`add_writer` (Twisted's facade): removed when its interest empties.
    /// Otherwise it lives from `register` to `deregister` (or the reactor's shutdown).
    pub(crate) facade: bool,
    /// Queued to be dispatched for reading again (its read said more may be waiting), at most
    /// once: the iteration in which that was asked.
    pub(crate) again: Option<u64>,
}

struct Slot {
    generation: u32,
    entry: Option<Entry>,
}

/// Invariant: `by_fd[fd] == slot` for every occupied slot registered with `fd`, unless a later
/// registration of the same fd number evicted it (a stale descriptor, closed while registered);
/// `free` lists the empty slots; `len` counts the occupied ones.
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
    /// Number of registrations.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The token of the registration made with `fd`, if any.
    pub(crate) fn by_fd(&self, fd: RawFd) -> Option<Token> {
        let s = *self.by_fd.get(usize::try_from(fd).ok()?)?;
        if s == NONE {
            return None;
        }
        Some(token(s, self.slots[s as usize].generation))
    }

    /// The token of the registration holding exactly `desc` (Twisted's identity search, for a
    /// descriptor whose `fileno()` changed).
    pub(crate) fn by_identity(&self, desc: *const u8) -> Option<Token> {
        self.slots.iter().enumerate().find_map(|(s, slot)| {
            let e = slot.entry.as_ref()?;
            std::ptr::addr_eq(Rc::as_ptr(&e.desc), desc).then(|| token(s as u32, slot.generation))
        })
    }

    /// The slot of a token, if that registration is still the live one.
    fn live_slot(&self, t: Token) -> Option<usize> {
        let s = (t & 0xffff_ffff) as usize;
        let slot = self.slots.get(s)?;
        (u64::from(slot.generation) == t >> 32 && slot.entry.is_some()).then_some(s)
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

    /// Adds a registration; the caller has checked that `fd` is not registered (or evicted the
    /// stale registration that held it).
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

    /// Removes the registration a token refers to.
    pub(crate) fn remove(&mut self, t: Token) -> Option<Entry> {
        let s = self.live_slot(t)?;
        let slot = &mut self.slots[s];
        slot.generation = slot.generation.wrapping_add(1);
        let entry = slot.entry.take()?;
        if self.by_fd.get(entry.fd as usize) == Some(&(s as u32)) {
            self.by_fd[entry.fd as usize] = NONE;
        }
        self.free.push(s as u32);
        self.len -= 1;
        Some(entry)
    }

    /// Forgets the fd number of the registration `t` (evicted by a new registration of the same
    /// number); the registration itself stays until removed.
    pub(crate) fn unindex(&mut self, t: Token) {
        if let Some(e) = self.lookup(t) {
            let fd = e.fd as usize;
            if self.by_fd.get(fd) == Some(&((t & 0xffff_ffff) as u32)) {
                self.by_fd[fd] = NONE;
            }
        }
    }

    /// The tokens of every registration, in slot order.
    pub(crate) fn tokens(&self) -> Vec<Token> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.entry.is_some())
            .map(|(i, s)| token(i as u32, s.generation))
            .collect()
    }
}

//! The write buffer of a stream transport: chunks sent with one vectored system call.

use std::collections::VecDeque;
use std::io;
use std::ops::Deref;
use std::os::fd::RawFd;
use std::rc::Rc;

use crate::sys;

/// Small writes are appended to the last chunk up to this size, so that many tiny writes do not
/// become many tiny chunks.
const COALESCE: usize = 16 * 1024;

/// One piece of the buffer: bytes of its own, or bytes shared with other writers (a payload
/// written to many connections is held once, whatever their number).
pub(crate) enum Chunk {
    Owned(Vec<u8>),
    /// Shared bytes from an offset on (what a first send left).
    Shared(Rc<[u8]>, usize),
}

impl Deref for Chunk {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Shared(s, start) => &s[*start..],
        }
    }
}

/// Invariant: `len` is the number of unsent bytes: the sum of the chunks' lengths minus
/// `offset`, which indexes into the front chunk (and is below its length), plus `in_flight`;
/// no chunk is empty.
#[derive(Default)]
pub(crate) struct WriteBuffer {
    chunks: VecDeque<Chunk>,
    offset: usize,
    len: usize,
    /// Bytes moved into an io_uring SEND still in flight (they come before `chunks`).
    in_flight: usize,
    /// A small chunk's vector a SEND gave back, reused by the next write (a ping-pong then
    /// allocates nothing per message).
    spare: Option<Vec<u8>>,
}

/// The largest vector kept as [`WriteBuffer::spare`] (an idle connection keeps at most this).
const SPARE_MAX: usize = 1024;

/// What a flush achieved.
pub(crate) enum Flush {
    /// Everything was sent.
    Empty,
    /// The socket is full; bytes remain.
    WouldBlock,
}

impl WriteBuffer {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn push(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.len += data.len();
        if let Some(Chunk::Owned(back)) = self.chunks.back_mut() {
            if back.len() + data.len() <= COALESCE {
                back.extend_from_slice(data);
                return;
            }
        }
        let v = match self.spare.take() {
            Some(mut v) if v.capacity() >= data.len() => {
                v.clear();
                v.extend_from_slice(data);
                v
            }
            _ => data.to_vec(),
        };
        self.chunks.push_back(Chunk::Owned(v));
    }

    /// Appends shared bytes from `start` on, without copying them (a small rest is copied).
    pub(crate) fn push_shared(&mut self, data: Rc<[u8]>, start: usize) {
        if start >= data.len() {
            return;
        }
        if data.len() - start <= 256 {
            return self.push(&data[start..]);
        }
        self.len += data.len() - start;
        self.chunks.push_back(Chunk::Shared(data, start));
    }

    /// Discards everything (a SEND in flight is forgotten: its completion is ignored).
    pub(crate) fn clear(&mut self) {
        self.chunks.clear();
        self.offset = 0;
        self.len = 0;
        self.in_flight = 0;
    }

    /// Whether an io_uring SEND of this buffer's bytes is in flight.
    pub(crate) fn sending(&self) -> bool {
        self.in_flight > 0
    }

    /// Moves the front of the buffer (up to [`sys::MAX_IOV`] chunks) into an io_uring SEND,
    /// unless one is in flight or nothing is buffered. Its bytes still count in
    /// [`len`](Self::len) until [`complete_send`](Self::complete_send).
    pub(crate) fn take_send(&mut self) -> Option<sys::uring::SendOp> {
        if self.in_flight > 0 || self.chunks.is_empty() {
            return None;
        }
        let first = self.chunks.pop_front()?;
        let n = self.chunks.len().min(sys::MAX_IOV - 1);
        let rest: Vec<Chunk> = if n == 0 {
            Vec::new()
        } else {
            self.chunks.drain(..n).collect()
        };
        let offset = std::mem::take(&mut self.offset);
        let op = sys::uring::SendOp::new(first, rest, offset);
        self.in_flight = op.len();
        Some(op)
    }

    /// The SEND `op` completed having sent `sent` bytes: those are gone, the rest goes back to
    /// the front, before anything written since. Ignored when the buffer was cleared meanwhile.
    pub(crate) fn complete_send(&mut self, op: sys::uring::SendOp, sent: usize) {
        let total = std::mem::take(&mut self.in_flight);
        if total == 0 {
            return;
        }
        let sent = sent.min(total);
        self.len -= sent;
        let (first, others, offset) = op.into_parts();
        if sent == total && others.is_empty() {
            // All sent, the common case: keep a small vector for the next write.
            if let Chunk::Owned(v) = first {
                if v.capacity() <= SPARE_MAX {
                    self.spare = Some(v);
                }
            }
            return;
        }
        let mut skip = sent + offset;
        let mut rest: Vec<(Chunk, usize)> = Vec::new();
        for c in std::iter::once(first).chain(others) {
            if skip >= c.len() {
                skip -= c.len();
                continue;
            }
            rest.push((c, skip));
            skip = 0;
        }
        for (c, off) in rest.into_iter().rev() {
            self.chunks.push_front(c);
            self.offset = off;
        }
    }

    fn consume(&mut self, mut n: usize) {
        debug_assert_eq!(
            self.in_flight, 0,
            "a readiness flush while a SEND is in flight"
        );
        self.len -= n;
        while n > 0 {
            let front_left = self.chunks[0].len() - self.offset;
            if n < front_left {
                self.offset += n;
                return;
            }
            n -= front_left;
            self.offset = 0;
            self.chunks.pop_front();
        }
    }

    /// Sends as much as the socket takes.
    ///
    /// # Errors
    /// The socket's error (EPIPE, ECONNRESET, ...); WouldBlock is `Ok(Flush::WouldBlock)`.
    pub(crate) fn flush(&mut self, fd: RawFd) -> io::Result<Flush> {
        self.flush_by(fd, sys::send, sys::send_vectored)
    }

    /// As [`flush`](Self::flush), for a descriptor that is not a socket (a pipe): write(2)
    /// and writev(2).
    pub(crate) fn flush_pipe(&mut self, fd: RawFd) -> io::Result<Flush> {
        self.flush_by(fd, sys::write_fd, sys::writev_fd)
    }

    fn flush_by(
        &mut self,
        fd: RawFd,
        one: fn(RawFd, &[u8]) -> io::Result<usize>,
        many: fn(RawFd, &[&[u8]]) -> io::Result<usize>,
    ) -> io::Result<Flush> {
        while !self.is_empty() {
            let sent = if self.chunks.len() == 1 {
                one(fd, &self.chunks[0][self.offset..])
            } else {
                let mut slices: [&[u8]; sys::MAX_IOV] = [&[]; sys::MAX_IOV];
                let mut n = 0;
                for (i, c) in self.chunks.iter().take(sys::MAX_IOV).enumerate() {
                    slices[i] = if i == 0 { &c[self.offset..] } else { c };
                    n += 1;
                }
                many(fd, &slices[..n])
            };
            match sent {
                Ok(n) => self.consume(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flush::WouldBlock),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // Give memory back after a burst, so an idle connection stays small.
        if self.chunks.capacity() > 8 {
            self.chunks = VecDeque::new();
        }
        Ok(Flush::Empty)
    }

    /// One send of at most `limit` bytes from the front, through `send` (given the buffer's
    /// leading slices, at most [`sys::MAX_IOV`] of them, cut at `limit`); what it reports sent
    /// is consumed. For transports whose stream must be cut at given points (descriptors sent
    /// with a Unix socket's bytes).
    ///
    /// # Errors
    /// `send`'s error (nothing consumed).
    pub(crate) fn send_some(
        &mut self,
        limit: usize,
        send: impl FnOnce(&[&[u8]]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let mut slices: [&[u8]; sys::MAX_IOV] = [&[]; sys::MAX_IOV];
        let mut n = 0;
        let mut left = limit;
        for (i, c) in self.chunks.iter().take(sys::MAX_IOV).enumerate() {
            if left == 0 {
                break;
            }
            let s: &[u8] = if i == 0 { &c[self.offset..] } else { c };
            let s = &s[..s.len().min(left)];
            left -= s.len();
            slices[i] = s;
            n += 1;
        }
        let sent = send(&slices[..n])?;
        self.consume(sent.min(self.len));
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consume_walks_chunks_and_offsets() {
        let mut b = WriteBuffer::default();
        b.push(&vec![1u8; COALESCE]);
        b.push(b"abc");
        b.push(b"de");
        assert_eq!(b.len(), COALESCE + 5);
        assert_eq!(b.chunks.len(), 2);
        b.consume(COALESCE - 1);
        assert_eq!(b.offset, COALESCE - 1);
        b.consume(3);
        assert_eq!(b.chunks.len(), 1);
        assert_eq!(&b.chunks[0][b.offset..], b"cde");
        b.consume(3);
        assert!(b.is_empty() && b.chunks.is_empty());
    }

    /// An io_uring SEND takes the front chunks; a short send puts the rest back in front of
    /// what was written meanwhile, at the right offset, and the length counts in-flight bytes.
    #[test]
    fn a_short_send_puts_the_rest_back_in_order() {
        let mut b = WriteBuffer::default();
        b.push(&vec![1u8; COALESCE]);
        b.push(b"abcdef");
        b.consume(10);
        let op = b.take_send().expect("something to send");
        assert!(b.sending());
        assert_eq!(op.len(), COALESCE - 10 + 6);
        assert_eq!(b.len(), COALESCE - 10 + 6, "in-flight bytes still count");
        assert!(b.take_send().is_none(), "one SEND in flight at a time");
        b.push(b"later");
        assert_eq!(b.len(), COALESCE - 10 + 6 + 5);
        // The kernel took the first chunk and two bytes of the second.
        b.complete_send(op, COALESCE - 10 + 2);
        assert!(!b.sending());
        assert_eq!(b.len(), 4 + 5);
        let op = b.take_send().unwrap();
        let (first, others, offset) = op.into_parts();
        let mut rest = first[offset..].to_vec();
        for c in &others {
            rest.extend_from_slice(c);
        }
        assert_eq!(rest, b"cdeflater");
    }

    #[test]
    fn a_send_completing_after_a_clear_is_dropped() {
        let mut b = WriteBuffer::default();
        b.push(b"doomed");
        let op = b.take_send().unwrap();
        b.clear();
        b.complete_send(op, 0);
        assert!(b.is_empty() && !b.sending() && b.chunks.is_empty());
    }

    #[test]
    fn shared_chunks_are_held_not_copied() {
        let poem: Rc<[u8]> = vec![7u8; 100_000].into();
        let mut b = WriteBuffer::default();
        b.push(b"header");
        b.push_shared(poem.clone(), 0);
        b.push_shared(poem.clone(), 40_000); // what a first send left: shared too
        b.push_shared(poem.clone(), 99_990); // a small rest: copied
        assert_eq!(Rc::strong_count(&poem), 3);
        assert_eq!(b.len(), 6 + 100_000 + 60_000 + 10);
        b.consume(6 + 50_000);
        assert_eq!(&b.chunks[0][b.offset..], &poem[50_000..]);
        b.consume(50_000);
        assert_eq!(&b.chunks[0][b.offset..], &poem[40_000..]);
        b.consume(60_010);
        assert!(b.is_empty());
        assert_eq!(Rc::strong_count(&poem), 1, "the shared chunk was let go");
    }
}

//! The write buffer of a stream transport: chunks sent with one vectored system call.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;

use crate::sys;

/// Small writes are appended to the last chunk up to this size, so that many tiny writes do not
/// become many tiny chunks.
const COALESCE: usize = 16 * 1024;

/// Invariant: `len` is the number of unsent bytes: the sum of the chunks' lengths minus
/// `offset`, which indexes into the front chunk (and is below its length).
#[derive(Default)]
pub(crate) struct WriteBuffer {
    chunks: VecDeque<Vec<u8>>,
    offset: usize,
    len: usize,
}

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
        if let Some(back) = self.chunks.back_mut() {
            if back.len() + data.len() <= COALESCE {
                back.extend_from_slice(data);
                return;
            }
        }
        self.chunks.push_back(data.to_vec());
    }

    /// Discards everything.
    pub(crate) fn clear(&mut self) {
        self.chunks.clear();
        self.offset = 0;
        self.len = 0;
    }

    fn consume(&mut self, mut n: usize) {
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
        while !self.is_empty() {
            let sent = if self.chunks.len() == 1 {
                sys::send(fd, &self.chunks[0][self.offset..])
            } else {
                let mut slices: [&[u8]; sys::MAX_IOV] = [&[]; sys::MAX_IOV];
                let mut n = 0;
                for (i, c) in self.chunks.iter().take(sys::MAX_IOV).enumerate() {
                    slices[i] = if i == 0 { &c[self.offset..] } else { c };
                    n += 1;
                }
                sys::send_vectored(fd, &slices[..n])
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
}

//! The sans-I/O decoders: pure state machines that split a byte stream into frames, with no
//! transport, no reactor and no callbacks. The receivers of this module drive them; the
//! property tests, the fuzz harness and the benchmark drive them directly.
//!
//! Every decoder has the same shape, [`Decoder::decode`]: give it the bytes that arrived, get
//! back how many of them it used and at most one frame. A frame that arrived whole in one call
//! is returned as a slice of the input (no copy); only the unfinished frame at the end of a
//! read is copied into the decoder, and never more than the maximum length allows.

use std::fmt;

/// Twisted's `LineReceiver.MAX_LENGTH`: the default longest line, 16 KiB.
pub const DEFAULT_MAX_LINE_LENGTH: usize = 16 * 1024;

/// Twisted's `IntNStringReceiver.MAX_LENGTH` and `NetstringReceiver.MAX_LENGTH`: the default
/// longest string of the length-prefixed and netstring receivers, 99,999 bytes.
pub const DEFAULT_MAX_STRING_LENGTH: usize = 99_999;

/// The most memory reserved ahead for an announced length: beyond it the buffer grows with
/// the bytes that actually arrive, so a peer cannot make a decoder with a large limit allocate
/// it all by sending a prefix alone.
const RESERVE_AHEAD: usize = 64 * 1024;

/// The default line delimiter, `b"\r\n"` (Twisted's `LineReceiver.delimiter`).
pub const DEFAULT_DELIMITER: &[u8] = b"\r\n";

// ---------------------------------------------------------------------------------- errors

/// What was wrong with a frame a peer sent. The receivers give it to their hook
/// (`line_length_exceeded`, `frame_error`), whose default closes the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// A line was longer than the maximum. `length` is the line's length when its delimiter
    /// arrived, or, when the limit was passed before the delimiter, the bytes seen so far
    /// (at least `max + 1`). The rest of the line is skipped: decoding resumes after its
    /// delimiter.
    LineTooLong {
        /// Bytes of the line (so far).
        length: usize,
        /// The limit.
        max: usize,
    },
    /// A length prefix or a netstring's length announced more than the maximum. Refused as
    /// soon as it was read: none of the announced body was buffered. For a netstring, `length`
    /// is the value of the digits read until the limit was passed (the digits after it are
    /// never read). The stream cannot be resynchronised: the decoder discards what follows.
    LengthTooLong {
        /// The announced length (so far).
        length: u64,
        /// The limit.
        max: usize,
    },
    /// A netstring broke the `<digits>:<bytes>,` syntax. The decoder discards what follows.
    Malformed(Malformed),
}

/// How a netstring broke its syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Malformed {
    /// `:` came before any digit.
    EmptyLength,
    /// The length had a leading zero (`01:`); only `0:` itself may start with one.
    LeadingZero,
    /// A byte other than a digit or `:` in the length.
    BadLengthByte(u8),
    /// The byte after the body was not `,`.
    MissingComma(u8),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::LineTooLong { length, max } => write!(
                f,
                "line too long: {length} bytes without a delimiter within the {max}-byte limit"
            ),
            FrameError::LengthTooLong { length, max } => write!(
                f,
                "frame too long: the peer announced {length} bytes, the limit is {max}"
            ),
            FrameError::Malformed(m) => write!(f, "malformed netstring: {m}"),
        }
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::EmptyLength => f.write_str("':' before any length digit"),
            Malformed::LeadingZero => f.write_str("the length has a leading zero"),
            Malformed::BadLengthByte(b) => {
                write!(f, "byte {b:#04x} in the length (only digits and ':')")
            }
            Malformed::MissingComma(b) => {
                write!(f, "byte {b:#04x} after the body instead of ','")
            }
        }
    }
}

impl std::error::Error for FrameError {}

impl From<Malformed> for FrameError {
    fn from(m: Malformed) -> FrameError {
        FrameError::Malformed(m)
    }
}

/// A line delimiter must have at least one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmptyDelimiter;

impl fmt::Display for EmptyDelimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a line delimiter cannot be empty")
    }
}

impl std::error::Error for EmptyDelimiter {}

/// A string too long for its length prefix (more than 255 bytes with an 8-bit prefix, ...);
/// nothing was sent (Twisted's `StringTooLongError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StringTooLong {
    /// The string's length.
    pub length: usize,
    /// The longest the prefix can announce.
    pub max: u64,
}

impl fmt::Display for StringTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a {}-byte string does not fit a length prefix (at most {})",
            self.length, self.max
        )
    }
}

impl std::error::Error for StringTooLong {}

// ---------------------------------------------------------------------------------- the trait

/// What one [`Decoder::decode`] call did: how many input bytes it used, and the frame it
/// completed or the error it found.
pub type Decoded<'a> = (usize, Result<Option<&'a [u8]>, FrameError>);

/// A sans-I/O frame decoder.
///
/// # Contract
/// `decode(data)` returns `(used, result)`: it used the first `used` bytes of `data` (the
/// caller passes the rest, `&data[used..]`, next time) and
/// * `Ok(Some(frame))`: a complete frame, which ended inside `data`;
/// * `Ok(None)`: no frame; the used bytes were buffered or skipped;
/// * `Err(e)`: the peer broke the framing ([`FrameError`]).
///
/// With non-empty `data` every call makes progress (`used > 0`, or a frame or an error), so
/// `while !data.is_empty()` loops end. The frame borrows the decoder and `data` until the next
/// call. At most one unfinished frame is held between calls, and never more than
/// [`max_length`](Decoder::max_length) plus a few bytes of framing ([`buffered`](Decoder::buffered)).
pub trait Decoder {
    /// Decodes from `data`; see the [trait documentation](Decoder).
    fn decode<'a>(&'a mut self, data: &'a [u8]) -> Decoded<'a>;

    /// Bytes held between calls (an unfinished frame).
    fn buffered(&self) -> usize;

    /// The longest frame accepted.
    fn max_length(&self) -> usize;

    /// Decodes all of `data`, calling `on_frame` for each frame; stops at the first error.
    ///
    /// # Errors
    /// The first [`FrameError`]; the bytes after it are not decoded.
    fn decode_all(
        &mut self,
        mut data: &[u8],
        mut on_frame: impl FnMut(&[u8]),
    ) -> Result<(), FrameError>
    where
        Self: Sized,
    {
        while !data.is_empty() {
            let (used, r) = self.decode(data);
            data = &data[used..];
            if let Some(frame) = r? {
                on_frame(frame);
            }
        }
        Ok(())
    }
}

/// The start of the first `delim` in `hay`.
#[inline]
fn find(hay: &[u8], delim: &[u8]) -> Option<usize> {
    let dl = delim.len();
    if dl == 1 {
        return memchr::memchr(delim[0], hay);
    }
    // Look for the delimiter's last byte, then check the bytes before it: for "\r\n" this is
    // one memchr per line.
    let last = delim[dl - 1];
    let mut from = dl - 1;
    while from < hay.len() {
        let end = from + memchr::memchr(last, &hay[from..])?;
        let start = end + 1 - dl;
        if &hay[start..=end] == delim {
            return Some(start);
        }
        from = end + 1;
    }
    None
}

// ---------------------------------------------------------------------------------- lines

/// Splits a stream into lines ended by a delimiter (`\r\n` by default), the decoder of
/// [`LineReceiver`](super::LineReceiver) and [`LineOnlyReceiver`](super::LineOnlyReceiver).
///
/// A line longer than the maximum is an error ([`FrameError::LineTooLong`]), reported once, as
/// soon as it is known: when its delimiter arrives, or as soon as the bytes without a delimiter
/// pass `max + delimiter length - 1` (so a line of exactly `max` bytes whose delimiter arrives
/// split is still accepted). The rest of the over-long line is skipped without being buffered,
/// and decoding resumes after its delimiter.
///
/// # Examples
/// ```
/// use torsion::protocols::basic::{Decoder, LineDecoder};
///
/// let mut lines = LineDecoder::new();
/// let mut got = Vec::new();
/// lines.decode_all(b"hello\r\nwor", |l| got.push(l.to_vec()))?;
/// lines.decode_all(b"ld\r\n", |l| got.push(l.to_vec()))?;
/// assert_eq!(got, [b"hello".to_vec(), b"world".to_vec()]);
/// # Ok::<(), torsion::protocols::basic::FrameError>(())
/// ```
#[derive(Debug, Clone)]
pub struct LineDecoder {
    delimiter: Vec<u8>,
    max_length: usize,
    /// The unfinished line (or, while skipping, the last `delimiter.len() - 1` bytes seen);
    /// after a frame returned from here, that frame until the next call.
    buf: Vec<u8>,
    frame_out: bool,
    skipping: bool,
}

impl Default for LineDecoder {
    fn default() -> Self {
        LineDecoder::new()
    }
}

impl LineDecoder {
    /// A decoder for `\r\n`-ended lines of at most [`DEFAULT_MAX_LINE_LENGTH`] bytes.
    pub fn new() -> LineDecoder {
        LineDecoder {
            delimiter: DEFAULT_DELIMITER.to_vec(),
            max_length: DEFAULT_MAX_LINE_LENGTH,
            buf: Vec::new(),
            frame_out: false,
            skipping: false,
        }
    }

    /// A decoder for lines ended by `delimiter`, of at most `max_length` bytes.
    ///
    /// # Errors
    /// [`EmptyDelimiter`].
    pub fn with_delimiter(
        delimiter: &[u8],
        max_length: usize,
    ) -> Result<LineDecoder, EmptyDelimiter> {
        let mut d = LineDecoder::new();
        d.set_delimiter(delimiter)?;
        d.set_max_length(max_length);
        Ok(d)
    }

    /// The delimiter.
    pub fn delimiter(&self) -> &[u8] {
        &self.delimiter
    }

    /// Changes the delimiter for the bytes decoded from now on. An unfinished line already
    /// held stays part of the line (it is not searched again), except that its last bytes may
    /// begin the new delimiter.
    ///
    /// # Errors
    /// [`EmptyDelimiter`]; the delimiter is unchanged.
    pub fn set_delimiter(&mut self, delimiter: &[u8]) -> Result<(), EmptyDelimiter> {
        if delimiter.is_empty() {
            return Err(EmptyDelimiter);
        }
        self.delimiter = delimiter.to_vec();
        Ok(())
    }

    /// Sets the longest line accepted (any value; 0 accepts only empty lines).
    pub fn set_max_length(&mut self, max_length: usize) {
        self.max_length = max_length;
    }

    /// Takes the unfinished line held (Twisted's `clearLineBuffer`), and stops skipping an
    /// over-long one.
    pub fn take_buffered(&mut self) -> Vec<u8> {
        if self.frame_out {
            self.buf.clear();
            self.frame_out = false;
        }
        let was_skipping = std::mem::replace(&mut self.skipping, false);
        let held = std::mem::take(&mut self.buf);
        if was_skipping {
            Vec::new()
        } else {
            held
        }
    }

    /// True while the rest of an over-long line is being skipped.
    pub fn skipping(&self) -> bool {
        self.skipping
    }

    /// Finds a delimiter that begins in `self.buf` and ends in `data`: the number of its bytes
    /// in `data`.
    fn straddling(&self, data: &[u8]) -> Option<usize> {
        let d = &self.delimiter[..];
        // k delimiter bytes at the end of buf, the other dl - k at the start of data; the
        // largest k is the earliest delimiter.
        (1..d.len()).rev().find_map(|k| {
            let in_data = d.len() - k;
            let found = self.buf.ends_with(&d[..k]) && data.starts_with(&d[k..]);
            found.then_some(in_data)
        })
    }

    /// Keeps only the last `delimiter.len() - 1` bytes of `buf ++ data` (while skipping).
    fn keep_tail(&mut self, data: &[u8]) {
        let keep = self.delimiter.len() - 1;
        if data.len() >= keep {
            self.buf.clear();
            self.buf.extend_from_slice(&data[data.len() - keep..]);
        } else {
            self.buf.extend_from_slice(data);
            let excess = self.buf.len().saturating_sub(keep);
            self.buf.drain(..excess);
        }
    }
}

impl Decoder for LineDecoder {
    fn decode<'a>(&'a mut self, data: &'a [u8]) -> Decoded<'a> {
        if self.frame_out {
            self.buf.clear();
            self.frame_out = false;
        }
        let dl = self.delimiter.len();
        let max = self.max_length;
        // A delimiter that began in the bytes held.
        if !self.buf.is_empty() {
            if let Some(in_data) = self.straddling(data) {
                let line_len = self.buf.len() - (dl - in_data);
                if self.skipping {
                    self.skipping = false;
                    self.buf.clear();
                    return (in_data, Ok(None));
                }
                self.buf.truncate(line_len);
                if line_len > max {
                    self.buf.clear();
                    return (
                        in_data,
                        Err(FrameError::LineTooLong {
                            length: line_len,
                            max,
                        }),
                    );
                }
                self.frame_out = true;
                return (in_data, Ok(Some(&self.buf)));
            }
        }
        match find(data, &self.delimiter) {
            Some(i) => {
                let used = i + dl;
                if self.skipping {
                    self.skipping = false;
                    self.buf.clear();
                    return (used, Ok(None));
                }
                let line_len = self.buf.len() + i;
                if line_len > max {
                    self.buf.clear();
                    return (
                        used,
                        Err(FrameError::LineTooLong {
                            length: line_len,
                            max,
                        }),
                    );
                }
                if self.buf.is_empty() {
                    (used, Ok(Some(&data[..i])))
                } else {
                    self.buf.extend_from_slice(&data[..i]);
                    self.frame_out = true;
                    (used, Ok(Some(&self.buf)))
                }
            }
            None => {
                if self.skipping {
                    self.keep_tail(data);
                    return (data.len(), Ok(None));
                }
                let held = self.buf.len() + data.len();
                // The last dl - 1 bytes may begin the delimiter: the line is at least the rest.
                if held > max.saturating_add(dl - 1) {
                    let length = held - (dl - 1);
                    self.skipping = true;
                    self.keep_tail(data);
                    return (data.len(), Err(FrameError::LineTooLong { length, max }));
                }
                self.buf.extend_from_slice(data);
                (data.len(), Ok(None))
            }
        }
    }

    fn buffered(&self) -> usize {
        if self.frame_out {
            0
        } else {
            self.buf.len()
        }
    }

    fn max_length(&self) -> usize {
        self.max_length
    }
}

// ---------------------------------------------------------------------------------- prefixes

/// The size of a big-endian length prefix (Twisted's `Int8StringReceiver`,
/// `Int16StringReceiver`, `Int32StringReceiver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prefix {
    /// One byte: strings of at most 255 bytes.
    U8,
    /// Two bytes, big-endian: at most 65,535.
    U16,
    /// Four bytes, big-endian: at most 4,294,967,295.
    U32,
}

impl Prefix {
    /// The prefix's size in bytes.
    pub fn size(self) -> usize {
        match self {
            Prefix::U8 => 1,
            Prefix::U16 => 2,
            Prefix::U32 => 4,
        }
    }

    /// The longest string the prefix can announce.
    pub fn max_announced(self) -> u64 {
        match self {
            Prefix::U8 => u8::MAX.into(),
            Prefix::U16 => u16::MAX.into(),
            Prefix::U32 => u32::MAX.into(),
        }
    }

    fn read(self, b: &[u8]) -> u64 {
        match self {
            Prefix::U8 => b[0].into(),
            Prefix::U16 => u16::from_be_bytes([b[0], b[1]]).into(),
            Prefix::U32 => u32::from_be_bytes([b[0], b[1], b[2], b[3]]).into(),
        }
    }

    /// The prefix for a `length`-byte string.
    ///
    /// # Errors
    /// [`StringTooLong`] when it does not fit.
    pub fn encode(self, length: usize) -> Result<([u8; 4], usize), StringTooLong> {
        let too_long = StringTooLong {
            length,
            max: self.max_announced(),
        };
        let mut out = [0; 4];
        match self {
            Prefix::U8 => out[0] = u8::try_from(length).map_err(|_| too_long)?,
            Prefix::U16 => out[..2]
                .copy_from_slice(&u16::try_from(length).map_err(|_| too_long)?.to_be_bytes()),
            Prefix::U32 => {
                out.copy_from_slice(&u32::try_from(length).map_err(|_| too_long)?.to_be_bytes())
            }
        }
        Ok((out, self.size()))
    }
}

/// Appends `data` with its big-endian length prefix to `out`.
///
/// # Errors
/// [`StringTooLong`] when `data` does not fit the prefix; `out` is unchanged.
///
/// # Examples
/// ```
/// use torsion::protocols::basic::{encode_prefixed, Prefix};
///
/// let mut out = Vec::new();
/// encode_prefixed(Prefix::U16, b"hi", &mut out)?;
/// assert_eq!(out, b"\x00\x02hi");
/// assert!(encode_prefixed(Prefix::U8, &[0; 256], &mut out).is_err());
/// # Ok::<(), torsion::protocols::basic::StringTooLong>(())
/// ```
pub fn encode_prefixed(
    prefix: Prefix,
    data: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), StringTooLong> {
    let (p, n) = prefix.encode(data.len())?;
    out.extend_from_slice(&p[..n]);
    out.extend_from_slice(data);
    Ok(())
}

/// Appends `data` as a netstring (`<length>:<data>,`) to `out`.
///
/// # Examples
/// ```
/// let mut out = Vec::new();
/// torsion::protocols::basic::encode_netstring(b"hello", &mut out);
/// assert_eq!(out, b"5:hello,");
/// ```
pub fn encode_netstring(data: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(data.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(data);
    out.push(b',');
}

/// Splits a stream of strings, each after a big-endian length prefix of 1, 2 or 4 bytes.
///
/// A prefix announcing more than the maximum is refused as soon as the prefix is read
/// ([`FrameError::LengthTooLong`]), before any of the body is buffered; the decoder then
/// discards everything (the stream cannot be resynchronised) until [`reset`](Self::reset).
///
/// # Examples
/// ```
/// use torsion::protocols::basic::{Decoder, FrameError, LengthPrefixedDecoder, Prefix};
///
/// let mut d = LengthPrefixedDecoder::new(Prefix::U16, 100);
/// let mut got = Vec::new();
/// d.decode_all(b"\x00\x03abc\x00\x00\x00", |s| got.push(s.to_vec()))?;
/// assert_eq!(got, [b"abc".to_vec(), b"".to_vec()]);
/// assert_eq!(d.buffered(), 1); // half of the next prefix
/// assert_eq!(
///     d.decode_all(b"\xff", |_| ()),
///     Err(FrameError::LengthTooLong { length: 255, max: 100 }),
/// );
/// # Ok::<(), FrameError>(())
/// ```
#[derive(Debug, Clone)]
pub struct LengthPrefixedDecoder {
    prefix: Prefix,
    max_length: usize,
    buf: Vec<u8>,
    frame_out: bool,
    broken: bool,
}

impl LengthPrefixedDecoder {
    /// A decoder for `prefix`-sized prefixes and strings of at most `max_length` bytes (the
    /// prefix's own range bounds it too).
    pub fn new(prefix: Prefix, max_length: usize) -> LengthPrefixedDecoder {
        LengthPrefixedDecoder {
            prefix,
            max_length,
            buf: Vec::new(),
            frame_out: false,
            broken: false,
        }
    }

    /// The prefix size.
    pub fn prefix(&self) -> Prefix {
        self.prefix
    }

    /// Sets the longest string accepted.
    pub fn set_max_length(&mut self, max_length: usize) {
        self.max_length = max_length;
    }

    /// True after an error: everything is discarded until [`reset`](Self::reset).
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Forgets any unfinished string and a past error.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.frame_out = false;
        self.broken = false;
    }

    fn refuse(&mut self, length: u64) -> FrameError {
        self.broken = true;
        self.buf = Vec::new();
        FrameError::LengthTooLong {
            length,
            max: self.max_length,
        }
    }
}

impl Decoder for LengthPrefixedDecoder {
    fn decode<'a>(&'a mut self, data: &'a [u8]) -> Decoded<'a> {
        if self.frame_out {
            self.buf.clear();
            self.frame_out = false;
        }
        if self.broken {
            return (data.len(), Ok(None));
        }
        let n = self.prefix.size();
        let max = self.max_length as u64;
        if self.buf.is_empty() {
            if data.len() < n {
                self.buf.extend_from_slice(data);
                return (data.len(), Ok(None));
            }
            let len = self.prefix.read(data);
            if len > max {
                return (data.len(), Err(self.refuse(len)));
            }
            let end = n + len as usize;
            if data.len() >= end {
                return (end, Ok(Some(&data[n..end])));
            }
            self.buf.reserve(end.min(RESERVE_AHEAD));
            self.buf.extend_from_slice(data);
            return (data.len(), Ok(None));
        }
        let mut used = 0;
        if self.buf.len() < n {
            used = (n - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..used]);
            if self.buf.len() < n {
                return (used, Ok(None));
            }
            let len = self.prefix.read(&self.buf);
            if len > max {
                return (data.len(), Err(self.refuse(len)));
            }
        }
        let end = n + self.prefix.read(&self.buf) as usize;
        let take = (end - self.buf.len()).min(data.len() - used);
        self.buf.extend_from_slice(&data[used..used + take]);
        used += take;
        if self.buf.len() == end {
            self.frame_out = true;
            (used, Ok(Some(&self.buf[n..])))
        } else {
            (used, Ok(None))
        }
    }

    fn buffered(&self) -> usize {
        if self.frame_out {
            0
        } else {
            self.buf.len()
        }
    }

    fn max_length(&self) -> usize {
        self.max_length
    }
}

// ---------------------------------------------------------------------------------- netstrings

#[derive(Debug, Clone, Copy)]
enum Net {
    Length { value: u64, digits: u32 },
    Body { len: usize },
    Comma,
}

/// Splits a stream of netstrings (`<decimal length>:<bytes>,`, D. J. Bernstein's format,
/// Twisted's `NetstringReceiver`).
///
/// The length is read digit by digit and refused as soon as it passes the maximum
/// ([`FrameError::LengthTooLong`]), so no more digits are ever read than the maximum has, and
/// none of the body is buffered. A length with a leading zero (other than `0:` itself), a
/// non-digit, an empty length or a missing `,` is [`FrameError::Malformed`]. After an error the
/// decoder discards everything until [`reset`](Self::reset).
///
/// # Examples
/// ```
/// use torsion::protocols::basic::{Decoder, FrameError, Malformed, NetstringDecoder};
///
/// let mut d = NetstringDecoder::new(100);
/// let mut got = Vec::new();
/// d.decode_all(b"5:hello,0:,", |s| got.push(s.to_vec()))?;
/// assert_eq!(got, [b"hello".to_vec(), b"".to_vec()]);
/// assert_eq!(
///     d.decode_all(b"01:x,", |_| ()),
///     Err(FrameError::Malformed(Malformed::LeadingZero)),
/// );
/// # Ok::<(), FrameError>(())
/// ```
#[derive(Debug, Clone)]
pub struct NetstringDecoder {
    max_length: usize,
    state: Net,
    buf: Vec<u8>,
    frame_out: bool,
    broken: bool,
}

impl NetstringDecoder {
    /// A decoder for netstrings of at most `max_length` bytes.
    pub fn new(max_length: usize) -> NetstringDecoder {
        NetstringDecoder {
            max_length,
            state: Net::Length {
                value: 0,
                digits: 0,
            },
            buf: Vec::new(),
            frame_out: false,
            broken: false,
        }
    }

    /// Sets the longest string accepted.
    pub fn set_max_length(&mut self, max_length: usize) {
        self.max_length = max_length;
    }

    /// True after an error: everything is discarded until [`reset`](Self::reset).
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Forgets any unfinished netstring and a past error.
    pub fn reset(&mut self) {
        *self = NetstringDecoder::new(self.max_length);
    }

    fn fail(&mut self, e: FrameError) -> FrameError {
        self.broken = true;
        self.buf = Vec::new();
        e
    }
}

impl Decoder for NetstringDecoder {
    fn decode<'a>(&'a mut self, data: &'a [u8]) -> Decoded<'a> {
        if self.frame_out {
            self.buf.clear();
            self.frame_out = false;
        }
        if self.broken {
            return (data.len(), Ok(None));
        }
        let mut i = 0;
        loop {
            match self.state {
                Net::Length {
                    mut value,
                    mut digits,
                } => {
                    loop {
                        let Some(&b) = data.get(i) else {
                            self.state = Net::Length { value, digits };
                            return (i, Ok(None));
                        };
                        i += 1;
                        match b {
                            b':' if digits == 0 => {
                                return (data.len(), Err(self.fail(Malformed::EmptyLength.into())))
                            }
                            b':' => break,
                            b'0'..=b'9' => {
                                if digits == 1 && value == 0 {
                                    return (
                                        data.len(),
                                        Err(self.fail(Malformed::LeadingZero.into())),
                                    );
                                }
                                digits += 1;
                                value = value
                                    .checked_mul(10)
                                    .and_then(|v| v.checked_add(u64::from(b - b'0')))
                                    .unwrap_or(u64::MAX);
                                if value > self.max_length as u64 {
                                    let e = FrameError::LengthTooLong {
                                        length: value,
                                        max: self.max_length,
                                    };
                                    return (data.len(), Err(self.fail(e)));
                                }
                            }
                            other => {
                                let e = Malformed::BadLengthByte(other).into();
                                return (data.len(), Err(self.fail(e)));
                            }
                        }
                    }
                    self.state = Net::Body {
                        len: value as usize,
                    };
                }
                Net::Body { len } => {
                    let rest = &data[i..];
                    if self.buf.is_empty() && rest.len() > len {
                        // Whole body and its comma here: no copy.
                        if rest[len] != b',' {
                            let e = Malformed::MissingComma(rest[len]).into();
                            return (data.len(), Err(self.fail(e)));
                        }
                        self.state = Net::Length {
                            value: 0,
                            digits: 0,
                        };
                        return (i + len + 1, Ok(Some(&rest[..len])));
                    }
                    if self.buf.is_empty() {
                        self.buf.reserve(len.min(RESERVE_AHEAD));
                    }
                    let take = (len - self.buf.len()).min(rest.len());
                    self.buf.extend_from_slice(&rest[..take]);
                    i += take;
                    if self.buf.len() < len {
                        return (i, Ok(None));
                    }
                    self.state = Net::Comma;
                }
                Net::Comma => {
                    let Some(&b) = data.get(i) else {
                        return (i, Ok(None));
                    };
                    i += 1;
                    if b != b',' {
                        return (
                            data.len(),
                            Err(self.fail(Malformed::MissingComma(b).into())),
                        );
                    }
                    self.state = Net::Length {
                        value: 0,
                        digits: 0,
                    };
                    self.frame_out = true;
                    return (i, Ok(Some(&self.buf)));
                }
            }
        }
    }

    fn buffered(&self) -> usize {
        if self.frame_out {
            0
        } else {
            self.buf.len()
        }
    }

    fn max_length(&self) -> usize {
        self.max_length
    }
}

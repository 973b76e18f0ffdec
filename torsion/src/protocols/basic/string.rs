//! [`StringReceiver`]: length-prefixed strings (Twisted's `Int8StringReceiver`,
//! `Int16StringReceiver`, `Int32StringReceiver`) and netstrings (`NetstringReceiver`).

use super::decode::{
    Decoded, Decoder, FrameError, LengthPrefixedDecoder, NetstringDecoder, Prefix, StringTooLong,
    DEFAULT_MAX_STRING_LENGTH,
};
use super::refuse;
use crate::interfaces::{Context, HalfClose, Protocol, Transport};
use crate::{Reactor, Reason};

/// How strings are framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// A big-endian length prefix of this size, then the bytes.
    Prefixed(Prefix),
    /// A netstring: `<decimal length>:<bytes>,`.
    Netstring,
}

impl Encoding {
    /// Writes `data` framed this way to `transport`, in one write.
    ///
    /// # Errors
    /// [`StringTooLong`] when `data` does not fit the prefix; nothing is written.
    pub fn send(self, transport: &Transport, data: &[u8]) -> Result<(), StringTooLong> {
        match self {
            Encoding::Prefixed(p) => {
                let (prefix, n) = p.encode(data.len())?;
                transport.write_sequence(&[&prefix[..n], data]);
            }
            Encoding::Netstring => {
                let mut head = data.len().to_string().into_bytes();
                head.push(b':');
                transport.write_sequence(&[&head, data, b","]);
            }
        }
        Ok(())
    }
}

/// The user's side of a [`StringReceiver`] (Twisted's `stringReceived` and friends). The same
/// handler works over every encoding.
pub trait StringHandler {
    /// The connection is established.
    fn connection_made(&mut self, cx: &mut StringContext<'_, '_>) {
        let _ = cx;
    }

    /// A string arrived.
    fn string_received(&mut self, cx: &mut StringContext<'_, '_>, data: &[u8]);

    /// The peer announced a string longer than the maximum, or broke the netstring syntax
    /// (Twisted's `lengthLimitExceeded`, and the `NetstringParseError` path). The default logs
    /// the error and closes the connection. Whatever this does, the rest of the stream cannot
    /// be framed any more and is discarded.
    fn frame_error(&mut self, cx: &mut StringContext<'_, '_>, error: &FrameError) {
        refuse(cx.transport(), error);
    }

    /// The connection is gone. An unfinished last string is not delivered.
    fn connection_lost(&mut self, cx: &mut StringContext<'_, '_>, reason: Reason) {
        let _ = (cx, reason);
    }

    /// The peer closed its sending side; see [`Protocol::read_connection_lost`].
    fn read_connection_lost(&mut self, cx: &mut StringContext<'_, '_>) -> HalfClose {
        let _ = cx;
        HalfClose::Close
    }
}

/// The context of a [`StringHandler`] callback.
pub struct StringContext<'c, 'a> {
    cx: &'c mut Context<'a>,
    encoding: Encoding,
}

impl<'a> StringContext<'_, 'a> {
    /// The connection's transport.
    pub fn transport(&self) -> &'a Transport {
        self.cx.transport()
    }

    /// The reactor.
    pub fn reactor(&self) -> &'a Reactor {
        self.cx.reactor()
    }

    /// The connection's plain [`Context`].
    pub fn context(&mut self) -> &mut Context<'a> {
        self.cx
    }

    /// The receiver's encoding.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Writes `data` framed in the receiver's encoding (Twisted's `sendString`).
    ///
    /// # Errors
    /// [`StringTooLong`] when `data` does not fit the length prefix; nothing is written.
    pub fn send_string(&self, data: &[u8]) -> Result<(), StringTooLong> {
        self.encoding.send(self.transport(), data)
    }
}

#[derive(Debug, Clone)]
enum AnyDecoder {
    Prefixed(LengthPrefixedDecoder),
    Netstring(NetstringDecoder),
}

impl AnyDecoder {
    fn decode<'a>(&'a mut self, data: &'a [u8]) -> Decoded<'a> {
        match self {
            AnyDecoder::Prefixed(d) => d.decode(data),
            AnyDecoder::Netstring(d) => d.decode(data),
        }
    }
}

/// Receives framed strings for a [`StringHandler`]: length-prefixed (Twisted's
/// `Int8StringReceiver`, `Int16StringReceiver`, `Int32StringReceiver`: [`int8`](Self::int8),
/// [`int16`](Self::int16), [`int32`](Self::int32)) or netstrings (Twisted's
/// `NetstringReceiver`: [`netstring`](Self::netstring)).
///
/// The longest string accepted is 99,999 bytes unless set ([`with_max_length`](Self::with_max_length));
/// a longer announced length is refused as soon as it is read, before any of the body is
/// buffered. Strings that arrive whole are handed over without a copy.
///
/// # Examples
/// An echo of 32-bit-prefixed strings:
/// ```
/// use torsion::protocols::basic::{StringContext, StringHandler, StringReceiver};
/// use torsion::testing::StringTransport;
///
/// struct Echo;
/// impl StringHandler for Echo {
///     fn string_received(&mut self, cx: &mut StringContext<'_, '_>, s: &[u8]) {
///         cx.send_string(s).unwrap();
///     }
/// }
///
/// let mut p = StringReceiver::int32(Echo);
/// let t = StringTransport::new()?;
/// t.connect(&mut p);
/// t.receive(&mut p, b"\0\0\0\x05hel");
/// t.receive(&mut p, b"lo");
/// assert_eq!(t.value(), b"\0\0\0\x05hello");
/// # Ok::<(), torsion::Error>(())
/// ```
///
/// Netstrings, and the default answer to a malformed one:
/// ```
/// use torsion::protocols::basic::{StringContext, StringHandler, StringReceiver};
/// use torsion::testing::StringTransport;
///
/// #[derive(Default)]
/// struct Collect(Vec<Vec<u8>>);
/// impl StringHandler for Collect {
///     fn string_received(&mut self, _: &mut StringContext<'_, '_>, s: &[u8]) {
///         self.0.push(s.to_vec());
///     }
/// }
///
/// let mut p = StringReceiver::netstring(Collect::default());
/// let t = StringTransport::new()?;
/// t.connect(&mut p);
/// t.receive(&mut p, b"3:abc,0:,");
/// assert_eq!(p.handler().0, [b"abc".to_vec(), b"".to_vec()]);
/// t.receive(&mut p, b"3:abcX");
/// assert!(t.disconnecting());
/// # Ok::<(), torsion::Error>(())
/// ```
pub struct StringReceiver<H> {
    handler: H,
    decoder: AnyDecoder,
    encoding: Encoding,
}

impl<H: StringHandler> StringReceiver<H> {
    /// A receiver of strings framed with `encoding`, of at most 99,999 bytes.
    pub fn new(encoding: Encoding, handler: H) -> StringReceiver<H> {
        let decoder = match encoding {
            Encoding::Prefixed(p) => {
                AnyDecoder::Prefixed(LengthPrefixedDecoder::new(p, DEFAULT_MAX_STRING_LENGTH))
            }
            Encoding::Netstring => {
                AnyDecoder::Netstring(NetstringDecoder::new(DEFAULT_MAX_STRING_LENGTH))
            }
        };
        StringReceiver {
            handler,
            decoder,
            encoding,
        }
    }

    /// 8-bit length prefixes (Twisted's `Int8StringReceiver`).
    #[doc(alias = "Int8StringReceiver")]
    pub fn int8(handler: H) -> StringReceiver<H> {
        StringReceiver::new(Encoding::Prefixed(Prefix::U8), handler)
    }

    /// 16-bit big-endian length prefixes (Twisted's `Int16StringReceiver`).
    #[doc(alias = "Int16StringReceiver")]
    pub fn int16(handler: H) -> StringReceiver<H> {
        StringReceiver::new(Encoding::Prefixed(Prefix::U16), handler)
    }

    /// 32-bit big-endian length prefixes (Twisted's `Int32StringReceiver`).
    #[doc(alias = "Int32StringReceiver")]
    pub fn int32(handler: H) -> StringReceiver<H> {
        StringReceiver::new(Encoding::Prefixed(Prefix::U32), handler)
    }

    /// Netstrings (Twisted's `NetstringReceiver`).
    #[doc(alias = "NetstringReceiver")]
    pub fn netstring(handler: H) -> StringReceiver<H> {
        StringReceiver::new(Encoding::Netstring, handler)
    }

    /// Sets the longest string accepted (builder style); Twisted's `MAX_LENGTH`.
    pub fn with_max_length(mut self, max_length: usize) -> Self {
        match &mut self.decoder {
            AnyDecoder::Prefixed(d) => d.set_max_length(max_length),
            AnyDecoder::Netstring(d) => d.set_max_length(max_length),
        }
        self
    }

    /// The encoding.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The handler, mutably.
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }
}

impl<H: StringHandler> Protocol for StringReceiver<H> {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        let encoding = self.encoding;
        self.handler
            .connection_made(&mut StringContext { cx, encoding });
    }

    fn data_received(&mut self, cx: &mut Context<'_>, mut data: &[u8]) {
        let encoding = self.encoding;
        while !data.is_empty() {
            if super::closing(cx.transport()) {
                return;
            }
            let (used, r) = self.decoder.decode(data);
            data = &data[used..];
            match r {
                Ok(Some(s)) => self
                    .handler
                    .string_received(&mut StringContext { cx, encoding }, s),
                Ok(None) => {}
                Err(e) => self
                    .handler
                    .frame_error(&mut StringContext { cx, encoding }, &e),
            }
        }
    }

    fn connection_lost(&mut self, cx: &mut Context<'_>, reason: Reason) {
        let encoding = self.encoding;
        self.handler
            .connection_lost(&mut StringContext { cx, encoding }, reason);
    }

    fn read_connection_lost(&mut self, cx: &mut Context<'_>) -> HalfClose {
        let encoding = self.encoding;
        self.handler
            .read_connection_lost(&mut StringContext { cx, encoding })
    }
}

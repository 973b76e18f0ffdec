//! Framing (Twisted's `twisted.protocols.basic`): lines, length-prefixed strings and
//! netstrings, on any transport.
//!
//! Two layers:
//! * **Sans-I/O decoders** ([`LineDecoder`], [`LengthPrefixedDecoder`], [`NetstringDecoder`],
//!   all [`Decoder`]s): pure state machines that split bytes into frames. Each has a maximum
//!   frame length; a length prefix over it is refused before anything is buffered, so a peer
//!   cannot make a decoder hold more than the maximum plus a few bytes.
//! * **Receivers**, [`Protocol`](crate::Protocol)s that drive a decoder for a handler trait:
//!   [`LineReceiver`] + [`LineHandler`] (raw mode, pausing), [`LineOnlyReceiver`] +
//!   [`LineOnlyHandler`], and [`StringReceiver`] + [`StringHandler`] (8-, 16-, 32-bit length
//!   prefixes and netstrings). Each has a hook for a frame over the limit or malformed; the
//!   default logs it (`tracing`, warn level) and closes the connection.
//!
//! A receiver is a protocol like any other: build it in a [`Factory`](crate::Factory).
//!
//! ```
//! use torsion::protocols::basic::{LineContext, LineHandler, LineReceiver};
//! use torsion::Factory;
//!
//! struct Echo;
//! impl LineHandler for Echo {
//!     fn line_received(&mut self, cx: &mut LineContext<'_, '_>, line: &[u8]) {
//!         cx.send_line(line);
//!     }
//! }
//!
//! let factory = Factory::for_protocol(|| LineReceiver::new(Echo));
//! # let _ = factory;
//! ```

mod decode;
mod line;
mod string;

pub use decode::{
    encode_netstring, encode_prefixed, Decoded, Decoder, EmptyDelimiter, FrameError,
    LengthPrefixedDecoder, LineDecoder, Malformed, NetstringDecoder, Prefix, StringTooLong,
    DEFAULT_DELIMITER, DEFAULT_MAX_LINE_LENGTH, DEFAULT_MAX_STRING_LENGTH,
};
pub use line::{
    LineContext, LineHandler, LineOnlyContext, LineOnlyHandler, LineOnlyReceiver, LineReceiver,
    PauseHandle,
};
pub use string::{Encoding, StringContext, StringHandler, StringReceiver};

use crate::Transport;

/// True once the connection is closing or closed: receivers deliver nothing more (as
/// Twisted's, which stop at `transport.disconnecting`).
fn closing(transport: &Transport) -> bool {
    transport.disconnecting() || !transport.connected()
}

/// The default answer to a bad frame: log it and close the connection.
fn refuse(transport: &Transport, error: &FrameError) {
    tracing::warn!(peer = %transport.peer(), %error, "bad frame from the peer: closing the connection");
    transport.lose_connection();
}

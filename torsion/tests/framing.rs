//! The framing receivers (`protocols::basic`) over the string transport, over an in-memory
//! connected pair, and over TCP on every backend.
//!
//! Every plain `#[test]` here takes `testing::serial()`: its reactors and transports open
//! descriptors, which would disturb the descriptor counts of the `reactor_test!` leak checks
//! running in parallel.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use torsion::protocol::wrap::{ForwardingTransport, ProtocolWrapper};
use torsion::protocols::basic::{
    Encoding, FrameError, LineContext, LineHandler, LineOnlyContext, LineOnlyHandler,
    LineOnlyReceiver, LineReceiver, Malformed, PauseHandle, Prefix, StringContext, StringHandler,
    StringReceiver, StringTooLong,
};
use torsion::testing::{connected_pair, run_until, MemoryReactor, StringTransport};
use torsion::{reactor_test, Factory, Producer, Reactor, Reason};

type LineHook = Box<dyn FnMut(&mut LineContext<'_, '_>, &[u8])>;

/// What a handler saw.
#[derive(Default)]
struct Log {
    lines: RefCell<Vec<Vec<u8>>>,
    raw: RefCell<Vec<Vec<u8>>>,
    errors: RefCell<Vec<FrameError>>,
    lost: RefCell<Option<Reason>>,
    pause_handle: RefCell<Option<PauseHandle>>,
}

impl Log {
    fn lines(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.lines.borrow_mut())
    }
    fn raw(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.raw.borrow_mut())
    }
}

/// A line handler that records everything and runs `hook` on each line.
struct Rec {
    log: Rc<Log>,
    hook: Option<LineHook>,
    /// Keep the connection open on an over-long line.
    tolerant: bool,
    /// In raw mode, go back to line mode after this many raw bytes.
    raw_left: usize,
}

impl Rec {
    fn new(log: &Rc<Log>) -> Rec {
        Rec {
            log: log.clone(),
            hook: None,
            tolerant: false,
            raw_left: 0,
        }
    }
    fn on_line(mut self, f: impl FnMut(&mut LineContext<'_, '_>, &[u8]) + 'static) -> Rec {
        self.hook = Some(Box::new(f));
        self
    }
}

impl LineHandler for Rec {
    fn connection_made(&mut self, cx: &mut LineContext<'_, '_>) {
        *self.log.pause_handle.borrow_mut() = Some(cx.pause_handle());
    }
    fn line_received(&mut self, cx: &mut LineContext<'_, '_>, line: &[u8]) {
        self.log.lines.borrow_mut().push(line.to_vec());
        if let Some(line) = line.strip_prefix(b"RAW ") {
            self.raw_left = std::str::from_utf8(line).unwrap().parse().unwrap();
            cx.set_raw_mode();
        }
        if let Some(h) = &mut self.hook {
            h(cx, line);
        }
    }
    fn raw_data_received(&mut self, cx: &mut LineContext<'_, '_>, data: &[u8]) {
        let n = self.raw_left.min(data.len());
        self.log.raw.borrow_mut().push(data[..n].to_vec());
        self.raw_left -= n;
        if self.raw_left == 0 {
            cx.set_line_mode_with(&data[n..]);
        }
    }
    fn line_length_exceeded(&mut self, cx: &mut LineContext<'_, '_>, error: &FrameError) {
        self.log.errors.borrow_mut().push(error.clone());
        if !self.tolerant {
            cx.transport().lose_connection();
        }
    }
    fn connection_lost(&mut self, _: &mut LineContext<'_, '_>, reason: Reason) {
        *self.log.lost.borrow_mut() = Some(reason);
    }
}

fn v(items: &[&[u8]]) -> Vec<Vec<u8>> {
    items.iter().map(|s| s.to_vec()).collect()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

// ---------------------------------------------------------------------- string transport

#[test]
fn lines_are_joined_across_reads_and_split_within_one() {
    let _serial = torsion::testing::serial();
    let log = Rc::new(Log::default());
    let mut p = LineReceiver::new(Rec::new(&log));
    let t = StringTransport::new().unwrap();
    t.connect(&mut p);
    t.receive(&mut p, b"one\r\ntwo\r");
    assert_eq!(log.lines(), v(&[b"one"]));
    t.receive(&mut p, b"\n\r\nthr");
    assert_eq!(log.lines(), v(&[b"two", b""]));
    t.receive(&mut p, b"ee\r\n");
    assert_eq!(log.lines(), v(&[b"three"]));
    // A lone \n or \r is part of the line with the default delimiter.
    t.receive(&mut p, b"a\nb\rc\r\n");
    assert_eq!(log.lines(), v(&[b"a\nb\rc"]));
}

#[test]
fn send_line_appends_the_delimiter_and_a_custom_delimiter_splits() {
    let _serial = torsion::testing::serial();
    let log = Rc::new(Log::default());
    let rec = Rec::new(&log).on_line(|cx, line| cx.send_line(line));
    let mut p = LineReceiver::new(rec).with_delimiter(b"||").unwrap();
    let t = StringTransport::new().unwrap();
    t.connect(&mut p);
    t.receive(&mut p, b"a|b||c|");
    t.receive(&mut p, b"|");
    assert_eq!(log.lines(), v(&[b"a|b", b"c"]));
    assert_eq!(t.value(), b"a|b||c||");
    assert!(LineReceiver::new(Rec::new(&log))
        .with_delimiter(b"")
        .is_err());
}

#[test]
fn a_line_of_exactly_the_limit_is_accepted_and_one_more_byte_closes() {
    let _serial = torsion::testing::serial();
    let log = Rc::new(Log::default());
    let mut p = LineReceiver::new(Rec::new(&log)).with_max_length(10);
    let t = StringTransport::new().unwrap();
    t.connect(&mut p);
    // Exactly 10 bytes, then "\r" (may be the delimiter's start): still waiting.
    t.receive(&mut p, b"0123456789\r");
    assert!(log.errors.borrow().is_empty());
    t.receive(&mut p, b"\n");
    assert_eq!(log.lines(), v(&[b"0123456789"]));
    // 11 bytes and a delimiter in one read.
    t.receive(&mut p, b"01234567890\r\n");
    assert_eq!(
        log.errors.borrow()[0],
        FrameError::LineTooLong {
            length: 11,
            max: 10
        }
    );
    assert!(t.disconnecting());
    // Nothing more is delivered after the close.
    t.receive(&mut p, b"late\r\n");
    assert!(log.lines().is_empty());
}

#[test]
fn an_unterminated_line_past_the_limit_is_refused_before_its_end() {
    let _serial = torsion::testing::serial();
    let log = Rc::new(Log::default());
    let mut p = LineReceiver::new(Rec::new(&log)).with_max_length(10);
    let t = StringTransport::new().unwrap();
    t.connect(&mut p);
    t.receive(&mut p, b"0123456789\r");
    assert!(!t.disconnecting());
    t.receive(&mut p, b"x");
    assert_eq!(
        log.errors.borrow()[0],
        FrameError::LineTooLong {
            length: 11,
            max: 10
        }
    );
    assert!(t.disconnecting());
}

#[test]
fn the_default_hook_closes_the_connection() {
    let _serial = torsion::testing::serial();
    struct Quiet;
    impl LineHandler for Quiet {
        fn line_received(&mut self, _: &mut LineContext<'_, '_>, _: &[u8]) {}
    }
    let mut p = LineReceiver::new(Quiet);
    let t = StringTransport::new().unwrap();
    t.connect(&mut p);
    t.receive(&mut p, &vec![b'x'; 16 * 1024]);
    assert!(!t.disconnecting(), "16 KiB is the default limit");
    t.receive(&mut p, b"xx");
    assert!(t.disconnecting());
}

#[test]
fn a_tolerant_hook_skips_the_rest_of_the_long_line() {
    let _serial = torsion::testing::serial();
    let log = Rc::new(Log::default());
    let mut rec = Rec::new(&log);
    rec.tolerant = true;
    let mut p = LineReceiver::new(rec).with_max_length(4);
    let t = StringTransport::new().unwrap();
    t.connect(&mut p);
    t.receive(&mut p, b"ok\r\n0123456");
    t.receive(&mut p, b"789");
    t.receive(&mut p, b"\r");
    t.receive(&mut p, b"\nfine\r\ntoolong\r\nend\r\n");
    assert_eq!(log.lines(), v(&[b"ok", b"fine", b"end"]));
    assert_eq!(
        *log.errors.borrow(),
        [
            FrameError::LineTooLong { length: 6, max: 4 },
            FrameError::LineTooLong { length: 7, max: 4 }
        ]
    );
    assert!(!t.disconnecting());
}

#[test]
fn raw_mode_from_a_line_callback_gets_the_rest_of_the_read_in_order() {
    let _serial = torsion::testing::serial();
    let log = Rc::new(Log::default());
    let mut p = LineReceiver::new(Rec::new(&log));
    let t = StringTransport::new().unwrap();
    t.connect(&mut p);
    // The raw bytes contain delimiters; they are not split. The raw part ends mid-read and the
    // rest are lines again.
    t.receive(&mut p, b"a\r\nRAW 10\r\n12\r\n56");
    assert_eq!(log.lines(), v(&[b"a", b"RAW 10"]));
    assert_eq!(log.raw(), v(&[b"12\r\n56"]));
    t.receive(&mut p, b"7890b\r\nRAW 2\r\nxyc\r");
    t.receive(&mut p, b"\n");
    assert_eq!(log.raw(), v(&[b"7890", b"xy"]));
    assert_eq!(log.lines(), v(&[b"b", b"RAW 2", b"c"]));
    // Byte by byte, the same stream gives the same lines and raw bytes.
    for b in b"RAW 3\r\n\r\n\rz\r\n" {
        t.receive(&mut p, &[*b]);
    }
    assert_eq!(log.lines(), v(&[b"RAW 3", b"z"]));
    assert_eq!(log.raw().concat(), b"\r\n\r");
}

#[test]
fn pausing_holds_lines_and_reading_until_resumed() {
    let _serial = torsion::testing::serial();
    let log = Rc::new(Log::default());
    let rec = Rec::new(&log).on_line(|cx, line| {
        if line == b"wait" {
            cx.pause();
        }
    });
    let mut p = LineReceiver::new(rec);
    let t = StringTransport::new().unwrap();
    t.connect(&mut p);
    t.receive(&mut p, b"a\r\nwait\r\nb\r\nc");
    assert_eq!(log.lines(), v(&[b"a", b"wait"]));
    assert!(t.reading_paused());
    // Data that still arrives (the string transport does not stop) is kept in order.
    t.receive(&mut p, b"\r\nwait\r\nd\r\n");
    assert!(log.lines().is_empty());
    let handle = log.pause_handle.borrow().clone().unwrap();
    handle.resume();
    assert_eq!(
        log.lines(),
        v(&[b"b", b"c", b"wait"]),
        "paused again by the second wait"
    );
    assert!(t.reading_paused());
    handle.resume();
    assert_eq!(log.lines(), v(&[b"d"]));
    assert!(!t.reading_paused());
    t.receive(&mut p, b"e\r\n");
    assert_eq!(log.lines(), v(&[b"e"]));
    // Resuming when not paused, or after the connection is gone, does nothing.
    handle.resume();
    t.lose(&mut p, Reason::ConnectionDone);
    handle.resume();
    assert!(log.lost.borrow().as_ref().unwrap().is_clean());
}

#[test]
fn the_delimiter_and_limit_can_change_between_lines() {
    let _serial = torsion::testing::serial();
    let log = Rc::new(Log::default());
    let rec = Rec::new(&log).on_line(|cx, line| {
        if line == b"NL" {
            cx.set_delimiter(b"\n").unwrap();
            cx.set_max_length(3);
            assert!(cx.set_delimiter(b"").is_err());
            cx.send_line(b"ok");
        }
    });
    let mut p = LineReceiver::new(rec);
    let t = StringTransport::new().unwrap();
    t.connect(&mut p);
    t.receive(&mut p, b"NL\r\nx\ny\nlong\n");
    assert_eq!(log.lines(), v(&[b"NL", b"x", b"y"]));
    assert_eq!(t.value(), b"ok\n");
    assert_eq!(
        log.errors.borrow()[0],
        FrameError::LineTooLong { length: 4, max: 3 }
    );
}

#[test]
fn clear_line_buffer_takes_the_rest_of_the_read() {
    let _serial = torsion::testing::serial();
    let log = Rc::new(Log::default());
    let taken = Rc::new(RefCell::new(Vec::new()));
    let tk = taken.clone();
    let rec = Rec::new(&log).on_line(move |cx, line| {
        if line == b"clear" {
            *tk.borrow_mut() = cx.clear_line_buffer();
        }
    });
    let mut p = LineReceiver::new(rec);
    let t = StringTransport::new().unwrap();
    t.connect(&mut p);
    t.receive(&mut p, b"clear\r\nx\r\ny");
    assert_eq!(log.lines(), v(&[b"clear"]));
    assert_eq!(*taken.borrow(), b"x\r\ny");
    t.receive(&mut p, b"z\r\n");
    assert_eq!(log.lines(), v(&[b"z"]));
}

#[test]
fn lines_after_a_close_in_a_callback_are_not_delivered() {
    let _serial = torsion::testing::serial();
    let log = Rc::new(Log::default());
    let rec = Rec::new(&log).on_line(|cx, line| {
        if line == b"QUIT" {
            cx.send_line(b"bye");
            cx.transport().lose_connection();
        }
    });
    let mut p = LineReceiver::new(rec);
    let t = StringTransport::new().unwrap();
    t.connect(&mut p);
    t.receive(&mut p, b"a\r\nQUIT\r\nb\r\n");
    assert_eq!(log.lines(), v(&[b"a", b"QUIT"]));
    assert_eq!(t.value(), b"bye\r\n");
}

#[test]
fn raw_data_without_a_handler_closes() {
    let _serial = torsion::testing::serial();
    struct Naive;
    impl LineHandler for Naive {
        fn line_received(&mut self, cx: &mut LineContext<'_, '_>, _: &[u8]) {
            cx.set_raw_mode();
        }
    }
    let mut p = LineReceiver::new(Naive);
    let t = StringTransport::new().unwrap();
    t.connect(&mut p);
    t.receive(&mut p, b"x\r\n");
    assert!(!t.disconnecting());
    t.receive(&mut p, b"raw");
    assert!(t.disconnecting());
}

// ---------------------------------------------------------------------- line-only receiver

#[derive(Default)]
struct OnlyLog {
    lines: Vec<Vec<u8>>,
    errors: Vec<FrameError>,
}

impl LineOnlyHandler for OnlyLog {
    fn line_received(&mut self, cx: &mut LineOnlyContext<'_, '_>, line: &[u8]) {
        self.lines.push(line.to_vec());
        cx.send_line(b"ack");
    }
    fn line_length_exceeded(&mut self, cx: &mut LineOnlyContext<'_, '_>, error: &FrameError) {
        self.errors.push(error.clone());
        cx.transport().lose_connection();
    }
}

#[test]
fn line_only_receiver_splits_and_refuses_long_lines() {
    let _serial = torsion::testing::serial();
    let mut p = LineOnlyReceiver::new(OnlyLog::default()).with_max_length(5);
    let t = StringTransport::new().unwrap();
    t.connect(&mut p);
    t.receive(&mut p, b"ab\r\nc");
    t.receive(&mut p, b"de\r\n\r\n");
    assert_eq!(p.handler().lines, v(&[b"ab", b"cde", b""]));
    assert_eq!(t.value(), b"ack\r\nack\r\nack\r\n");
    t.receive(&mut p, b"123456\r\nnext\r\n");
    assert_eq!(
        p.handler().errors,
        [FrameError::LineTooLong { length: 6, max: 5 }]
    );
    assert!(t.disconnecting());
    assert_eq!(p.handler().lines.len(), 3, "nothing after the close");
}

/// Echoes each line.
struct EchoOnly;

impl LineOnlyHandler for EchoOnly {
    fn line_received(&mut self, cx: &mut LineOnlyContext<'_, '_>, line: &[u8]) {
        cx.send_line(line);
    }
}

// ---------------------------------------------------------------------- string receivers

#[derive(Default)]
struct Strings {
    got: Vec<Vec<u8>>,
    errors: Vec<FrameError>,
    echo: bool,
}

impl StringHandler for Strings {
    fn string_received(&mut self, cx: &mut StringContext<'_, '_>, s: &[u8]) {
        self.got.push(s.to_vec());
        if self.echo {
            cx.send_string(s).unwrap();
        }
    }
    fn frame_error(&mut self, cx: &mut StringContext<'_, '_>, error: &FrameError) {
        self.errors.push(error.clone());
        cx.transport().lose_connection();
    }
}

#[test]
fn int_n_receivers_frame_both_ways() {
    let _serial = torsion::testing::serial();
    for (prefix, wire) in [
        (Prefix::U8, &b"\x03abc\x00"[..]),
        (Prefix::U16, &b"\x00\x03abc\x00\x00"[..]),
        (Prefix::U32, &b"\x00\x00\x00\x03abc\x00\x00\x00\x00"[..]),
    ] {
        let h = Strings {
            echo: true,
            ..Strings::default()
        };
        let mut p = StringReceiver::new(Encoding::Prefixed(prefix), h);
        let t = StringTransport::new().unwrap();
        t.connect(&mut p);
        for b in wire {
            t.receive(&mut p, &[*b]);
        }
        assert_eq!(p.handler().got, v(&[b"abc", b""]), "{prefix:?}");
        assert_eq!(
            t.value(),
            wire,
            "{prefix:?}: send_string frames the same way"
        );
    }
}

#[test]
fn send_string_refuses_what_the_prefix_cannot_announce() {
    let _serial = torsion::testing::serial();
    struct Sender(Option<Result<(), StringTooLong>>);
    impl StringHandler for Sender {
        fn connection_made(&mut self, cx: &mut StringContext<'_, '_>) {
            self.0 = Some(cx.send_string(&[0; 256]));
        }
        fn string_received(&mut self, _: &mut StringContext<'_, '_>, _: &[u8]) {}
    }
    let mut p = StringReceiver::int8(Sender(None));
    let t = StringTransport::new().unwrap();
    t.connect(&mut p);
    assert_eq!(
        p.handler().0,
        Some(Err(StringTooLong {
            length: 256,
            max: 255
        }))
    );
    assert_eq!(t.value(), b"", "nothing was sent");
    // At the edge of a 16-bit prefix.
    let e = Encoding::Prefixed(Prefix::U16);
    assert!(e.send(t.transport(), &vec![7; 65_535]).is_ok());
    assert_eq!(t.take().len(), 65_537);
    assert!(e.send(t.transport(), &vec![7; 65_536]).is_err());
    assert_eq!(t.value(), b"");
}

#[test]
fn an_announced_length_over_the_limit_is_refused_at_once() {
    let _serial = torsion::testing::serial();
    let mut p = StringReceiver::int32(Strings::default()).with_max_length(1000);
    let t = StringTransport::new().unwrap();
    t.connect(&mut p);
    t.receive(&mut p, b"\x00\x00\x03\xe8"); // exactly 1000: waits for the body
    assert!(!t.disconnecting());
    let mut p = StringReceiver::int32(Strings::default()).with_max_length(1000);
    let t = StringTransport::new().unwrap();
    t.connect(&mut p);
    t.receive(&mut p, b"\x7f\xff");
    t.receive(&mut p, b"\xff\xff"); // 2 GiB announced: refused on the prefix alone
    assert_eq!(
        p.handler().errors,
        [FrameError::LengthTooLong {
            length: 0x7fff_ffff,
            max: 1000
        }]
    );
    assert!(t.disconnecting());
}

#[test]
fn netstring_receiver_accepts_and_refuses() {
    let _serial = torsion::testing::serial();
    let h = Strings {
        echo: true,
        ..Strings::default()
    };
    let mut p = StringReceiver::netstring(h);
    let t = StringTransport::new().unwrap();
    t.connect(&mut p);
    t.receive(&mut p, b"5:hello,0:,1");
    t.receive(&mut p, b"2:twelve bytes,");
    assert_eq!(p.handler().got, v(&[b"hello", b"", b"twelve bytes"]));
    assert_eq!(t.value(), b"5:hello,0:,12:twelve bytes,");
    let cases: [(&[u8], FrameError); 5] = [
        (b"01:x,", Malformed::LeadingZero.into()),
        (b":x,", Malformed::EmptyLength.into()),
        (b"1x:x,", Malformed::BadLengthByte(b'x').into()),
        (b"1:xy", Malformed::MissingComma(b'y').into()),
        (
            b"100000:",
            FrameError::LengthTooLong {
                length: 100_000,
                max: 99_999,
            },
        ),
    ];
    for (wire, err) in cases {
        let mut p = StringReceiver::netstring(Strings::default());
        let t = StringTransport::new().unwrap();
        t.connect(&mut p);
        t.receive(&mut p, wire);
        assert_eq!(p.handler().errors, std::slice::from_ref(&err), "{wire:?}");
        assert!(t.disconnecting());
        assert!(!err.to_string().is_empty());
    }
    // A long run of digits is refused as soon as the value passes the limit.
    let mut p = StringReceiver::netstring(Strings::default()).with_max_length(99);
    let t = StringTransport::new().unwrap();
    t.connect(&mut p);
    t.receive(&mut p, &[b'9'; 1_000_000]);
    assert_eq!(
        p.handler().errors,
        [FrameError::LengthTooLong {
            length: 999,
            max: 99
        }]
    );
}

// ---------------------------------------------------------------------- connected pair

/// A server that echoes lines upper-cased; a client that sends lines and records answers.
#[test]
fn line_echo_over_a_connected_pair_in_one_byte_chunks() {
    let _serial = torsion::testing::serial();
    let mr = MemoryReactor::new().unwrap();
    let server = Factory::for_protocol(|| {
        LineReceiver::new(
            Rec::new(&Rc::new(Log::default()))
                .on_line(|cx, l| cx.send_line(&l.to_ascii_uppercase())),
        )
    });
    let log = Rc::new(Log::default());
    let l = log.clone();
    let client = Factory::for_protocol(move || LineReceiver::new(Rec::new(&l)));
    let pump = connected_pair(mr.reactor(), &server, &client).unwrap();
    pump.set_chunk_size(Some(1));
    pump.client_transport()
        .write(b"hello\r\nworld\r\nRAW 3\r\n");
    pump.flush();
    // The third answer, "RAW 3", puts the client in raw mode for 3 bytes.
    assert_eq!(log.lines(), v(&[b"HELLO", b"WORLD", b"RAW 3"]));
    pump.server_transport().write(b"r\r\nafter\r\n");
    pump.flush();
    assert_eq!(log.raw().concat(), b"r\r\n");
    assert_eq!(log.lines(), v(&[b"after"]));
    pump.client_transport().lose_connection();
    pump.flush();
    assert!(log.lost.borrow().as_ref().unwrap().is_clean());
}

#[test]
fn strings_over_a_connected_pair_in_one_byte_chunks() {
    let _serial = torsion::testing::serial();
    for encoding in [Encoding::Prefixed(Prefix::U16), Encoding::Netstring] {
        let mr = MemoryReactor::new().unwrap();
        let server = Factory::for_protocol(move || {
            StringReceiver::new(
                encoding,
                Strings {
                    echo: true,
                    ..Strings::default()
                },
            )
        });
        let got = Rc::new(RefCell::new(Vec::new()));
        let g = got.clone();
        let client = Factory::for_protocol(move || {
            StringReceiver::new(
                encoding,
                Collector {
                    got: g.clone(),
                    want: 30,
                },
            )
        });
        let pump = connected_pair(mr.reactor(), &server, &client).unwrap();
        pump.set_chunk_size(Some(1));
        pump.flush();
        let expected: Vec<Vec<u8>> = (0..30).map(payload).collect();
        assert_eq!(*got.borrow(), expected, "{encoding:?}");
        assert!(pump.closed());
    }
}

#[test]
fn pausing_over_a_connected_pair_stops_the_pump_reading() {
    let _serial = torsion::testing::serial();
    let mr = MemoryReactor::new().unwrap();
    let log = Rc::new(Log::default());
    let l = log.clone();
    let server = Factory::for_protocol(move || {
        LineReceiver::new(Rec::new(&l).on_line(|cx, line| {
            if line == b"wait" {
                cx.pause();
            }
        }))
    });
    let client = Factory::for_protocol(|| LineReceiver::new(Rec::new(&Rc::new(Log::default()))));
    let pump = connected_pair(mr.reactor(), &server, &client).unwrap();
    pump.client_transport().write(b"1\r\nwait\r\n2\r\n");
    pump.flush();
    assert_eq!(log.lines(), v(&[b"1", b"wait"]));
    pump.client_transport().write(b"3\r\n");
    pump.flush();
    assert!(log.lines().is_empty());
    log.pause_handle.borrow().clone().unwrap().resume();
    pump.flush();
    assert_eq!(log.lines(), v(&[b"2", b"3"]));
    pump.client_transport().lose_connection();
    pump.flush();
}

// ---------------------------------------------------------------------- wrapped transport

/// A layer that upper-cases what the wrapped protocol writes.
struct Upper {
    outer: torsion::Transport,
}

impl ForwardingTransport for Upper {
    fn wrapped(&self) -> &torsion::Transport {
        &self.outer
    }
    fn write_sequence(&self, data: &[&[u8]]) {
        let up: Vec<u8> = data.concat().to_ascii_uppercase();
        self.outer.write(&up);
    }
}

#[test]
fn a_line_receiver_runs_unchanged_under_a_protocol_wrapper() {
    let _serial = torsion::testing::serial();
    let log = Rc::new(Log::default());
    let rec = Rec::new(&log).on_line(|cx, line| {
        if line == b"wait" {
            cx.pause();
        } else {
            cx.send_line(line);
        }
    });
    let mut w = ProtocolWrapper::new(Box::new(LineReceiver::new(rec)), |outer| {
        torsion::Transport::new(Rc::new(Upper {
            outer: outer.clone(),
        }))
    });
    let t = StringTransport::new().unwrap();
    t.connect(&mut w);
    t.receive(&mut w, b"ab\r\nwait\r\ncd\r\n");
    assert_eq!(t.take(), b"AB\r\n");
    assert!(t.reading_paused(), "the pause went through the wrapper");
    let handle = log.pause_handle.borrow().clone().unwrap();
    assert!(handle.paused());
    // The handle is a streaming producer: the resume can come from a consumer.
    let producer: Rc<dyn Producer> = Rc::new(handle.clone());
    producer.resume_producing();
    assert_eq!(t.take(), b"CD\r\n");
    assert!(!t.reading_paused());
    producer.pause_producing();
    assert!(t.reading_paused());
    handle.resume();
    producer.stop_producing();
    assert!(t.disconnecting());
}

// ---------------------------------------------------------------------- TCP

fn settle(r: &Reactor, n: usize) {
    run_until(r, secs(10), || r.descriptor_count() == n);
}

reactor_test! {
    fn thousands_of_lines_echo_over_tcp(reactor) {
        const N: usize = 5_000;
        let port = reactor
            .listen_tcp(
                "127.0.0.1:0",
                // The server is the line-only receiver; the client the full one.
                Factory::for_protocol(|| LineOnlyReceiver::new(EchoOnly)),
            )
            .unwrap();
        let log = Rc::new(Log::default());
        let l = log.clone();
        let done = Rc::new(Cell::new(0usize));
        let d = done.clone();
        let factory = Factory::for_protocol(move || {
            let d = d.clone();
            let mut rec = Rec::new(&l).on_line(move |cx, _| {
                d.set(d.get() + 1);
                if d.get() == N {
                    cx.transport().lose_connection();
                }
            });
            rec.tolerant = false;
            LineOnlyBridge(LineReceiver::new(rec))
        });
        reactor.connect_tcp("127.0.0.1", port.port(), factory, secs(5));
        run_until(reactor, secs(30), || log.lost.borrow().is_some());
        let lines = log.lines();
        assert_eq!(lines.len(), N);
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(line, format!("line {i} {}", "x".repeat(i % 200)).as_bytes());
        }
        port.stop_listening();
        settle(reactor, 0);
    }

    fn strings_and_netstrings_over_tcp(reactor) {
        for encoding in [
            Encoding::Prefixed(Prefix::U8),
            Encoding::Prefixed(Prefix::U16),
            Encoding::Prefixed(Prefix::U32),
            Encoding::Netstring,
        ] {
            let port = reactor
                .listen_tcp(
                    "127.0.0.1:0",
                    Factory::for_protocol(move || {
                        StringReceiver::new(encoding, Strings { echo: true, ..Strings::default() })
                    }),
                )
                .unwrap();
            let got = Rc::new(RefCell::new(Vec::new()));
            let g = got.clone();
            let factory = Factory::for_protocol(move || {
                StringReceiver::new(encoding, Collector { got: g.clone(), want: 200 })
            });
            reactor.connect_tcp("127.0.0.1", port.port(), factory, secs(5));
            run_until(reactor, secs(30), || got.borrow().len() == 200);
            for (i, s) in got.borrow().iter().enumerate() {
                assert_eq!(s, &payload(i), "{encoding:?}");
            }
            port.stop_listening();
            settle(reactor, 0);
        }
    }
    fn an_over_long_line_closes_the_tcp_connection(reactor) {
        struct Quiet;
        impl LineHandler for Quiet {
            fn line_received(&mut self, cx: &mut LineContext<'_, '_>, _: &[u8]) {
                cx.send_line(b"ok");
            }
        }
        let port = reactor
            .listen_tcp(
                "127.0.0.1:0",
                Factory::for_protocol(|| LineReceiver::new(Quiet).with_max_length(100)),
            )
            .unwrap();
        let log = Rc::new(Log::default());
        let l = log.clone();
        let factory = Factory::for_protocol(move || {
            let rec = Rec::new(&l).on_line(|cx, _| {
                // Answered: now a line over the server's limit, in pieces.
                for _ in 0..10 {
                    cx.transport().write(&[b'x'; 20]);
                }
            });
            Sender(LineReceiver::new(rec), b"short\r\n")
        });
        reactor.connect_tcp("127.0.0.1", port.port(), factory, secs(5));
        run_until(reactor, secs(30), || log.lost.borrow().is_some());
        assert_eq!(log.lines(), v(&[b"ok"]));
        assert!(log.lost.borrow().as_ref().unwrap().is_clean(), "closed by the server, cleanly");
        port.stop_listening();
        settle(reactor, 0);
    }

    fn a_paused_tcp_receiver_resumes_from_a_timer(reactor) {
        let log = Rc::new(Log::default());
        let l = log.clone();
        let port = reactor
            .listen_tcp(
                "127.0.0.1:0",
                Factory::for_protocol(move || {
                    LineReceiver::new(Rec::new(&l).on_line(|cx, line| {
                        if line == b"wait" {
                            cx.pause();
                            let handle = cx.pause_handle();
                            cx.reactor()
                                .call_later(Duration::from_millis(50), move |_| handle.resume());
                        } else if line == b"end" {
                            cx.transport().lose_connection();
                        }
                    }))
                }),
            )
            .unwrap();
        let client_log = Rc::new(Log::default());
        let cl = client_log.clone();
        let factory = Factory::for_protocol(move || {
            Sender(LineReceiver::new(Rec::new(&cl)), b"1\r\nwait\r\n2\r\nwait\r\n3\r\nend\r\n")
        });
        reactor.connect_tcp("127.0.0.1", port.port(), factory, secs(5));
        run_until(reactor, secs(30), || client_log.lost.borrow().is_some());
        run_until(reactor, secs(30), || log.lost.borrow().is_some());
        assert_eq!(log.lines(), v(&[b"1", b"wait", b"2", b"wait", b"3", b"end"]));
        port.stop_listening();
        settle(reactor, 0);
    }
}

fn payload(i: usize) -> Vec<u8> {
    (0..(i * 7) % 250).map(|b| (b + i) as u8).collect()
}

/// Sends 200 strings on connect, collects the echoes, closes after `want`.
struct Collector {
    got: Rc<RefCell<Vec<Vec<u8>>>>,
    want: usize,
}

impl StringHandler for Collector {
    fn connection_made(&mut self, cx: &mut StringContext<'_, '_>) {
        for i in 0..self.want {
            cx.send_string(&payload(i)).unwrap();
        }
    }
    fn string_received(&mut self, cx: &mut StringContext<'_, '_>, s: &[u8]) {
        self.got.borrow_mut().push(s.to_vec());
        if self.got.borrow().len() == self.want {
            cx.transport().lose_connection();
        }
    }
}

/// The TCP client: a LineReceiver that sends N lines when connected.
struct LineOnlyBridge(LineReceiver<Rec>);

impl torsion::Protocol for LineOnlyBridge {
    fn connection_made(&mut self, cx: &mut torsion::Context<'_>) {
        self.0.connection_made(cx);
        let mut out = Vec::new();
        for i in 0..5_000 {
            out.extend_from_slice(format!("line {i} {}\r\n", "x".repeat(i % 200)).as_bytes());
        }
        cx.transport().write(&out);
    }
    fn data_received(&mut self, cx: &mut torsion::Context<'_>, data: &[u8]) {
        self.0.data_received(cx, data);
    }
    fn connection_lost(&mut self, cx: &mut torsion::Context<'_>, reason: Reason) {
        self.0.connection_lost(cx, reason);
    }
}

/// A client: a LineReceiver that writes `.1` when connected.
struct Sender(LineReceiver<Rec>, &'static [u8]);

impl torsion::Protocol for Sender {
    fn connection_made(&mut self, cx: &mut torsion::Context<'_>) {
        self.0.connection_made(cx);
        cx.transport().write(self.1);
    }
    fn data_received(&mut self, cx: &mut torsion::Context<'_>, data: &[u8]) {
        self.0.data_received(cx, data);
    }
    fn connection_lost(&mut self, cx: &mut torsion::Context<'_>, reason: Reason) {
        self.0.connection_lost(cx, reason);
    }
}

/// A receiver does not keep its reactor alive: dropping the reactor with line connections open
/// (one of them paused, holding lines) closes them, and their handlers hear of it.
#[test]
fn dropping_the_reactor_closes_open_line_connections() {
    let _serial = torsion::testing::serial();
    let reactor = Reactor::new().unwrap();
    let log = Rc::new(Log::default());
    let l = log.clone();
    let port = reactor
        .listen_tcp(
            "127.0.0.1:0",
            Factory::for_protocol(move || {
                LineReceiver::new(Rec::new(&l).on_line(|cx, _| cx.pause()))
            }),
        )
        .unwrap();
    let client_log = Rc::new(Log::default());
    let cl = client_log.clone();
    let factory = Factory::for_protocol(move || {
        Sender(LineReceiver::new(Rec::new(&cl)), b"first\r\nheld\r\n")
    });
    reactor.connect_tcp("127.0.0.1", port.port(), factory, secs(5));
    run_until(&reactor, secs(30), || !log.lines.borrow().is_empty());
    assert_eq!(log.lines(), v(&[b"first"]));
    let handle = log.pause_handle.borrow().clone().unwrap();
    assert!(handle.paused());
    drop(reactor);
    assert!(matches!(*log.lost.borrow(), Some(Reason::ReactorShutdown)));
    assert!(matches!(
        *client_log.lost.borrow(),
        Some(Reason::ReactorShutdown)
    ));
    handle.resume(); // nothing left to resume: does nothing
    assert!(log.lines().is_empty());
}

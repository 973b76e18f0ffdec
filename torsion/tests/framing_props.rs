//! Property tests and a bounded-time fuzz harness for the sans-I/O framing decoders
//! (`protocols::basic`): a stream parses the same however it is cut into reads (random cuts,
//! every single cut point, one byte at a time, thousands of frames in one read), matches a
//! reference model, and arbitrary bytes never panic, never make a decoder hold more than its
//! limit plus a few bytes, and only produce the decoder's own kinds of error.

use proptest::prelude::*;
use torsion::protocols::basic::{
    encode_netstring, encode_prefixed, Decoder, FrameError, LengthPrefixedDecoder, LineDecoder,
    NetstringDecoder, Prefix,
};

/// What a decoder produced, in order. Line errors are compared without their `length`: for a
/// line that has not ended yet it is "the bytes seen so far", which depends on the reads.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Frame(Vec<u8>),
    Err(FrameError),
}

/// How far past the limit a decoder may hold bytes (prefix, delimiter tail).
const SLACK: usize = 8;

fn normalise(e: FrameError) -> FrameError {
    match e {
        FrameError::LineTooLong { max, .. } => FrameError::LineTooLong { length: 0, max },
        other => other,
    }
}

/// Feeds `chunks` to `d`, checking the decoder contract on the way.
fn run<D: Decoder>(d: &mut D, chunks: &[&[u8]]) -> Vec<Ev> {
    let mut evs = Vec::new();
    for chunk in chunks {
        let mut data = *chunk;
        while !data.is_empty() {
            let before = data.len();
            let max = d.max_length();
            let (used, r) = d.decode(data);
            assert!(used <= before, "used more than given");
            let made_progress = used > 0 || !matches!(r, Ok(None));
            assert!(made_progress, "no progress on non-empty input");
            match r {
                Ok(Some(f)) => {
                    assert!(f.len() <= max, "a frame over the limit");
                    evs.push(Ev::Frame(f.to_vec()));
                }
                Ok(None) => {}
                Err(e) => evs.push(Ev::Err(normalise(e))),
            }
            data = &data[used..];
            assert!(
                d.buffered() <= d.max_length().saturating_add(SLACK),
                "holds {} bytes, limit {}",
                d.buffered(),
                d.max_length()
            );
        }
    }
    evs
}

/// Cuts `data` at the given points (taken modulo its length, sorted).
fn cut<'a>(data: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = points
        .iter()
        .map(|p| {
            if data.is_empty() {
                0
            } else {
                p % (data.len() + 1)
            }
        })
        .collect();
    at.push(0);
    at.push(data.len());
    at.sort_unstable();
    at.windows(2).map(|w| &data[w[0]..w[1]]).collect()
}

/// The reference line splitter: split the whole input at each delimiter, leftmost first.
fn reference_lines(data: &[u8], delim: &[u8], max: usize) -> Vec<Ev> {
    let mut evs = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + delim.len() <= data.len() {
        if &data[i..i + delim.len()] == delim {
            let line = &data[start..i];
            evs.push(if line.len() > max {
                Ev::Err(FrameError::LineTooLong { length: 0, max })
            } else {
                Ev::Frame(line.to_vec())
            });
            i += delim.len();
            start = i;
        } else {
            i += 1;
        }
    }
    if data.len() - start > max + delim.len() - 1 {
        evs.push(Ev::Err(FrameError::LineTooLong { length: 0, max }));
    }
    evs
}

fn line_decoder(delim: &[u8], max: usize) -> LineDecoder {
    LineDecoder::with_delimiter(delim, max).unwrap()
}

/// Bytes from a small alphabet that contains the delimiters' bytes, so that delimiters,
/// partial delimiters and overlapping ones are common.
fn small_bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(b"ab\r\n,:019".to_vec()), 0..max_len)
}

fn delimiters() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"\r\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"aba".to_vec()),
        Just(b"aa".to_vec()),
        prop::collection::vec(prop::sample::select(b"ab\r\n".to_vec()), 1..4),
    ]
}

fn frames() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..30)
}

fn prefixes() -> impl Strategy<Value = Prefix> {
    prop_oneof![Just(Prefix::U8), Just(Prefix::U16), Just(Prefix::U32)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Lines: any input, cut anywhere, gives what the reference splitter gives.
    #[test]
    fn lines_match_the_reference_however_cut(
        data in small_bytes(300),
        delim in delimiters(),
        max in 0usize..20,
        points in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        let expected = reference_lines(&data, &delim, max);
        let got = run(&mut line_decoder(&delim, max), &cut(&data, &points));
        prop_assert_eq!(got, expected);
    }

    /// Valid lines round-trip, whole, in random reads, and a byte at a time.
    #[test]
    fn encoded_lines_round_trip(lines in prop::collection::vec(small_bytes(30), 0..30),
                                points in prop::collection::vec(any::<usize>(), 0..30)) {
        let lines: Vec<Vec<u8>> = lines
            .into_iter()
            .filter(|l| !l.windows(2).any(|w| w == b"\r\n"))
            .collect();
        let mut wire = Vec::new();
        for l in &lines {
            wire.extend_from_slice(l);
            wire.extend_from_slice(b"\r\n");
        }
        let expected: Vec<Ev> = lines.iter().cloned().map(Ev::Frame).collect();
        prop_assert_eq!(run(&mut LineDecoder::new(), &[&wire]), expected.clone());
        prop_assert_eq!(run(&mut LineDecoder::new(), &cut(&wire, &points)), expected.clone());
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        prop_assert_eq!(run(&mut LineDecoder::new(), &bytes), expected);
    }

    /// Length-prefixed strings round-trip however the stream is cut.
    #[test]
    fn prefixed_strings_round_trip(prefix in prefixes(), frames in frames(),
                                   points in prop::collection::vec(any::<usize>(), 0..30)) {
        let mut wire = Vec::new();
        for f in &frames {
            encode_prefixed(prefix, f, &mut wire).unwrap();
        }
        let expected: Vec<Ev> = frames.iter().cloned().map(Ev::Frame).collect();
        let mut d = LengthPrefixedDecoder::new(prefix, 40);
        prop_assert_eq!(run(&mut d, &cut(&wire, &points)), expected.clone());
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        prop_assert_eq!(run(&mut LengthPrefixedDecoder::new(prefix, 40), &bytes), expected);
    }

    /// Netstrings round-trip however the stream is cut.
    #[test]
    fn netstrings_round_trip(frames in frames(),
                             points in prop::collection::vec(any::<usize>(), 0..30)) {
        let mut wire = Vec::new();
        for f in &frames {
            encode_netstring(f, &mut wire);
        }
        let expected: Vec<Ev> = frames.iter().cloned().map(Ev::Frame).collect();
        prop_assert_eq!(run(&mut NetstringDecoder::new(40), &cut(&wire, &points)), expected.clone());
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        prop_assert_eq!(run(&mut NetstringDecoder::new(40), &bytes), expected);
    }
}

// ---------------------------------------------------------------------- fuzz harness

proptest! {
    // The fuzz harness: arbitrary bytes (and bytes from the framing alphabet), arbitrary
    // reads. `run` checks the contract after every call (progress, frame and buffer bounds);
    // the result must not depend on the reads; the errors must be the decoder's own kinds.
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn fuzz_line_decoder(data in prop_oneof![prop::collection::vec(any::<u8>(), 0..600), small_bytes(600)],
                         delim in delimiters(), max in 0usize..64,
                         points in prop::collection::vec(any::<usize>(), 0..40)) {
        let whole = run(&mut line_decoder(&delim, max), &[&data]);
        let cut_up = run(&mut line_decoder(&delim, max), &cut(&data, &points));
        prop_assert_eq!(&whole, &cut_up);
        for e in whole {
            let ok = matches!(e, Ev::Frame(_) | Ev::Err(FrameError::LineTooLong { .. }));
            prop_assert!(ok, "unexpected {:?}", e);
        }
    }

    #[test]
    fn fuzz_prefixed_decoder(data in prop::collection::vec(any::<u8>(), 0..600), prefix in prefixes(),
                             max in 0usize..300,
                             points in prop::collection::vec(any::<usize>(), 0..40)) {
        let whole = run(&mut LengthPrefixedDecoder::new(prefix, max), &[&data]);
        let cut_up = run(&mut LengthPrefixedDecoder::new(prefix, max), &cut(&data, &points));
        prop_assert_eq!(&whole, &cut_up);
        // At most one error: the stream cannot be framed after it.
        prop_assert!(whole.iter().filter(|e| matches!(e, Ev::Err(_))).count() <= 1);
        for e in whole {
            let ok = matches!(e, Ev::Frame(_) | Ev::Err(FrameError::LengthTooLong { .. }));
            prop_assert!(ok, "unexpected {:?}", e);
        }
    }

    #[test]
    fn fuzz_netstring_decoder(data in prop_oneof![prop::collection::vec(any::<u8>(), 0..600), small_bytes(600)],
                              max in 0usize..1000,
                              points in prop::collection::vec(any::<usize>(), 0..40)) {
        let whole = run(&mut NetstringDecoder::new(max), &[&data]);
        let cut_up = run(&mut NetstringDecoder::new(max), &cut(&data, &points));
        prop_assert_eq!(&whole, &cut_up);
        prop_assert!(whole.iter().filter(|e| matches!(e, Ev::Err(_))).count() <= 1);
        for e in &whole {
            let ok = matches!(e, Ev::Frame(_) | Ev::Err(FrameError::LengthTooLong { .. } | FrameError::Malformed(_)));
            prop_assert!(ok, "unexpected {:?}", e);
        }
    }
}

// ---------------------------------------------------------------------- exhaustive cuts

/// A stream with every kind of frame, cut into two reads at every possible point, and into
/// three reads at every pair of points, parses as it does whole.
#[test]
fn every_cut_point_parses_the_same() {
    let mut lines = Vec::new();
    for l in [&b""[..], b"a", b"\r", b"ab\rc", b"\n\n", b"0123456789"] {
        lines.extend_from_slice(l);
        lines.extend_from_slice(b"\r\n");
    }
    lines.extend_from_slice(b"too long for ten\r\nend\r\n");
    let mut prefixed = Vec::new();
    let mut nets = Vec::new();
    for f in [&b""[..], b"x", b"hello", &[0xff; 30]] {
        encode_prefixed(Prefix::U16, f, &mut prefixed).unwrap();
        encode_netstring(f, &mut nets);
    }
    prefixed.extend_from_slice(b"\x01\x00"); // 256 > 100: refused
    nets.extend_from_slice(b"12x");
    type Make = fn() -> Box<dyn FnMut(&[&[u8]]) -> Vec<Ev>>;
    let cases: [(&[u8], Make); 3] = [
        (&lines, || {
            let mut d = line_decoder(b"\r\n", 10);
            Box::new(move |c| run(&mut d, c))
        }),
        (&prefixed, || {
            let mut d = LengthPrefixedDecoder::new(Prefix::U16, 100);
            Box::new(move |c| run(&mut d, c))
        }),
        (&nets, || {
            let mut d = NetstringDecoder::new(100);
            Box::new(move |c| run(&mut d, c))
        }),
    ];
    for (wire, make) in cases {
        let whole = make()(&[wire]);
        assert!(
            whole.iter().any(|e| matches!(e, Ev::Err(_))),
            "each stream ends in an error"
        );
        for i in 0..=wire.len() {
            assert_eq!(make()(&[&wire[..i], &wire[i..]]), whole, "cut at {i}");
            for j in i..=wire.len() {
                assert_eq!(
                    make()(&[&wire[..i], &wire[i..j], &wire[j..]]),
                    whole,
                    "cut at {i} and {j}"
                );
            }
        }
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(make()(&bytes), whole);
    }
}

/// Thousands of frames in one read, and the same in reads of every size from 1 to 100.
#[test]
fn thousands_of_frames_in_one_read() {
    const N: usize = 10_000;
    let frames: Vec<Vec<u8>> = (0..N)
        .map(|i| format!("frame {i} {}", "z".repeat(i % 97)).into_bytes())
        .collect();
    let mut lines = Vec::new();
    let mut prefixed = Vec::new();
    let mut nets = Vec::new();
    for f in &frames {
        lines.extend_from_slice(f);
        lines.extend_from_slice(b"\r\n");
        encode_prefixed(Prefix::U32, f, &mut prefixed).unwrap();
        encode_netstring(f, &mut nets);
    }
    let expected: Vec<Ev> = frames.iter().cloned().map(Ev::Frame).collect();
    for size in [usize::MAX, 1, 2, 3, 7, 64, 100, 4096] {
        let chunk = |w: &[u8]| -> Vec<Vec<u8>> {
            w.chunks(size.min(w.len())).map(<[u8]>::to_vec).collect()
        };
        fn as_refs(v: &[Vec<u8>]) -> Vec<&[u8]> {
            v.iter().map(Vec::as_slice).collect()
        }
        assert_eq!(
            run(&mut LineDecoder::new(), &as_refs(&chunk(&lines))),
            expected,
            "lines, reads of {size}"
        );
        assert_eq!(
            run(
                &mut LengthPrefixedDecoder::new(Prefix::U32, 1000),
                &as_refs(&chunk(&prefixed))
            ),
            expected,
            "prefixed, reads of {size}"
        );
        assert_eq!(
            run(&mut NetstringDecoder::new(1000), &as_refs(&chunk(&nets))),
            expected,
            "netstrings, reads of {size}"
        );
    }
}

/// A long line delivered a byte at a time is scanned once, not once per byte: a 1 MiB line
/// (over a 2 MiB limit) fed byte by byte finishes quickly even in a debug build.
#[test]
fn byte_at_a_time_long_lines_are_linear() {
    let mut d = line_decoder(b"\r\n", 2 << 20);
    let line = vec![b'q'; 1 << 20];
    let start = std::time::Instant::now();
    let mut n = 0;
    for b in line.iter().chain(b"\r\n") {
        let (_, r) = d.decode(std::slice::from_ref(b));
        if let Some(l) = r.unwrap() {
            assert_eq!(l.len(), 1 << 20);
            n += 1;
        }
    }
    assert_eq!(n, 1);
    // Generous: quadratic behaviour would take hours.
    assert!(start.elapsed() < std::time::Duration::from_secs(60));
}

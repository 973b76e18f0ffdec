//! Splitting 64-byte lines (62 bytes + `\r\n`): the sans-I/O `LineDecoder` alone, and the
//! `LineReceiver` / `LineOnlyReceiver` protocols driven through the testing kit's string
//! transport with a handler that counts lines. Reads of 64 KiB, as a TCP transport delivers.
//! Twisted's `LineReceiver` on the same data: `bench/twisted/lines.py`.
//!
//! `cargo bench -p bench --bench lines`.

use divan::counter::BytesCount;
use divan::Bencher;
use torsion::protocols::basic::{
    Decoder, LineContext, LineDecoder, LineHandler, LineOnlyContext, LineOnlyHandler,
    LineOnlyReceiver, LineReceiver,
};
use torsion::testing::StringTransport;

/// 4 MiB of 64-byte lines.
const TOTAL: usize = 4 << 20;
const LINE: usize = 64;
const READ: usize = 64 * 1024;

fn main() {
    divan::main();
}

fn data() -> Vec<u8> {
    let mut out = Vec::with_capacity(TOTAL);
    let mut i = 0u64;
    while out.len() < TOTAL {
        let mut line = format!("{i:020} the quick brown fox jumps over the lazy dog").into_bytes();
        line.resize(LINE - 2, b'.');
        out.extend_from_slice(&line);
        out.extend_from_slice(b"\r\n");
        i += 1;
    }
    out
}

#[divan::bench(sample_count = 30)]
fn line_decoder(bencher: Bencher) {
    let data = data();
    bencher
        .counter(BytesCount::new(data.len()))
        .bench_local(|| {
            let mut d = LineDecoder::new();
            let mut n = 0usize;
            for read in data.chunks(READ) {
                d.decode_all(read, |l| n += l.len()).unwrap();
            }
            assert_eq!(n, TOTAL / LINE * (LINE - 2));
            n
        });
}

struct Count(usize);

impl LineHandler for Count {
    fn line_received(&mut self, _: &mut LineContext<'_, '_>, line: &[u8]) {
        self.0 += divan::black_box(line).len();
    }
}

impl LineOnlyHandler for Count {
    fn line_received(&mut self, _: &mut LineOnlyContext<'_, '_>, line: &[u8]) {
        self.0 += divan::black_box(line).len();
    }
}

#[divan::bench(sample_count = 30)]
fn line_receiver(bencher: Bencher) {
    let data = data();
    let t = StringTransport::new().unwrap();
    bencher
        .counter(BytesCount::new(data.len()))
        .bench_local(|| {
            let mut p = LineReceiver::new(Count(0));
            t.connect(&mut p);
            for read in data.chunks(READ) {
                t.receive(&mut p, read);
            }
            assert_eq!(p.handler().0, TOTAL / LINE * (LINE - 2));
        });
}

#[divan::bench(sample_count = 30)]
fn line_only_receiver(bencher: Bencher) {
    let data = data();
    let t = StringTransport::new().unwrap();
    bencher
        .counter(BytesCount::new(data.len()))
        .bench_local(|| {
            let mut p = LineOnlyReceiver::new(Count(0));
            t.connect(&mut p);
            for read in data.chunks(READ) {
                t.receive(&mut p, read);
            }
            assert_eq!(p.handler().0, TOTAL / LINE * (LINE - 2));
        });
}

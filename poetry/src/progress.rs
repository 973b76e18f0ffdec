//! Live progress bars for downloads (indicatif), shown only when asked for (on a terminal).
//!
//! Every method is a no-op on a disabled [`Progress`], so the download code calls it
//! unconditionally; with no terminal, nothing is allocated or drawn.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Above this many downloads, one overall bar replaces the per-download bars.
pub const MAX_BARS: usize = 16;

enum Bars {
    Off,
    /// One spinner per download, counting its bytes.
    Each(MultiProgress, Vec<ProgressBar>),
    /// One bar for all downloads, counting finished ones.
    Total(ProgressBar),
}

/// The progress display of one client run.
pub struct Progress {
    bars: Bars,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.bars {
            Bars::Off => "Progress(off)",
            Bars::Each(..) => "Progress(each)",
            Bars::Total(_) => "Progress(total)",
        })
    }
}

impl Progress {
    /// No bars.
    pub fn off() -> Progress {
        Progress { bars: Bars::Off }
    }

    /// Bars for downloads labelled `labels` (task `i` is `labels[i]`), drawn on stderr; `off()`
    /// when `enabled` is false.
    pub fn new(enabled: bool, labels: &[String]) -> Progress {
        if !enabled {
            return Progress::off();
        }
        if labels.len() > MAX_BARS {
            let bar = ProgressBar::with_draw_target(
                Some(labels.len() as u64),
                ProgressDrawTarget::stderr(),
            );
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} poems",
                )
                .expect("valid template"),
            );
            bar.enable_steady_tick(std::time::Duration::from_millis(100));
            return Progress {
                bars: Bars::Total(bar),
            };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{prefix:>8} {spinner} {bytes:>10} {msg}")
            .expect("valid template");
        let bars = labels
            .iter()
            .enumerate()
            .map(|(i, label)| {
                let bar = multi.add(ProgressBar::no_length());
                bar.set_style(style.clone());
                bar.set_prefix(format!("Task {}", i + 1));
                bar.set_message(label.clone());
                bar
            })
            .collect();
        Progress {
            bars: Bars::Each(multi, bars),
        }
    }

    /// Task `task` (0-based) received `n` bytes.
    pub fn add(&self, task: usize, n: usize) {
        if let Bars::Each(_, bars) = &self.bars {
            bars[task].inc(n as u64);
        }
    }

    /// Task `task` finished, with its poem (`ok`) or not.
    pub fn finish(&self, task: usize, ok: bool) {
        match &self.bars {
            Bars::Off => {}
            Bars::Each(_, bars) => {
                let bar = &bars[task];
                let label = bar.message();
                bar.finish_with_message(format!("{label} {}", if ok { "done" } else { "failed" }));
            }
            Bars::Total(bar) => bar.inc(1),
        }
    }

    /// Removes the bars from the terminal (before the report is printed).
    pub fn clear(&self) {
        match &self.bars {
            Bars::Off => {}
            Bars::Each(multi, bars) => {
                for b in bars {
                    b.finish_and_clear();
                }
                let _ = multi.clear();
            }
            Bars::Total(bar) => bar.finish_and_clear(),
        }
    }
}

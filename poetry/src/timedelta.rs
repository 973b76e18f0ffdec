//! Durations printed the way the tutorial's Python programs print them.

use std::time::Duration;

/// Formats a duration as Python's `str(timedelta)` does (`0:00:03.072771`; the fraction is left
/// out when it is zero; days are shown as `N day(s), `), so that the poetry programs print what
/// the tutorial's originals print.
///
/// ```
/// use std::time::Duration;
///
/// use poetry::timedelta::format_timedelta;
///
/// assert_eq!(format_timedelta(Duration::from_micros(3_072_771)), "0:00:03.072771");
/// assert_eq!(format_timedelta(Duration::from_secs(3725)), "1:02:05");
/// assert_eq!(format_timedelta(Duration::from_secs(90_000)), "1 day, 1:00:00");
/// ```
pub fn format_timedelta(d: Duration) -> String {
    let micros = d.subsec_micros();
    let total = d.as_secs();
    let (days, rest) = (total / 86_400, total % 86_400);
    let (h, m, s) = (rest / 3600, rest % 3600 / 60, rest % 60);
    let mut out = String::new();
    if days > 0 {
        out.push_str(&format!("{days} day{}, ", if days == 1 { "" } else { "s" }));
    }
    out.push_str(&format!("{h}:{m:02}:{s:02}"));
    if micros != 0 {
        out.push_str(&format!(".{micros:06}"));
    }
    out
}

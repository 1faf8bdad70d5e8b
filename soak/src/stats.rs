//! The arithmetic of the soak report, kept free of I/O so that it can be
//! tested: which class an error falls in, whether it happened while the
//! upstream was being restarted, latency per time window, and the
//! least-squares slope that tells a leak from noise.

use hdrhistogram::Histogram;
use serde::Serialize;

/// What went wrong with one call, read from the load generator's message
/// (bench's `load::exchange` and `conn::ConnError` wordings).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum ErrorClass {
    /// The proxy's port refused the TCP connection.
    ConnectRefused,
    /// Any other failure to open a TCP connection to the proxy.
    Connect,
    /// The TLS handshake with the proxy failed.
    Tls,
    /// The connection broke while a call was on it (reset, closed early).
    ConnectionLost,
    /// The proxy answered with this HTTP status instead of 200.
    Http(u16),
    /// A 200 carrying a JSON-RPC error.
    JsonRpc,
    /// A 200 that was not a JSON-RPC result for the call's id.
    BadAnswer,
    Other,
}

impl ErrorClass {
    pub fn label(self) -> String {
        match self {
            ErrorClass::ConnectRefused => "connection refused".into(),
            ErrorClass::Connect => "connect failed".into(),
            ErrorClass::Tls => "TLS handshake failed".into(),
            ErrorClass::ConnectionLost => "connection lost mid-call".into(),
            ErrorClass::Http(code) => format!("HTTP {code}"),
            ErrorClass::JsonRpc => "JSON-RPC error".into(),
            ErrorClass::BadAnswer => "bad answer".into(),
            ErrorClass::Other => "other".into(),
        }
    }
}

pub fn classify(message: &str) -> ErrorClass {
    if let Some(rest) = message.strip_prefix("HTTP ") {
        return match rest.get(..3).and_then(|c| c.parse().ok()) {
            Some(code) => ErrorClass::Http(code),
            None => ErrorClass::Other,
        };
    }
    if message.starts_with("connect ") {
        return if message.contains("refused") {
            ErrorClass::ConnectRefused
        } else {
            ErrorClass::Connect
        };
    }
    let starts = |p: &[&str]| p.iter().any(|p| message.starts_with(p));
    if starts(&["TLS handshake"]) {
        ErrorClass::Tls
    } else if starts(&["connection: ", "request: ", "body: ", "HTTP/1.1 handshake"]) {
        ErrorClass::ConnectionLost
    } else if starts(&["JSON-RPC error"]) {
        ErrorClass::JsonRpc
    } else if starts(&["answer"]) {
        ErrorClass::BadAnswer
    } else {
        ErrorClass::Other
    }
}

/// A stretch of the run in seconds from its start, such as an upstream
/// restart: from the kill to the moment the new process listened.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Span {
    pub start_s: f64,
    pub end_s: f64,
}

/// Whether an error seen at `t_s` is charged to a restart: it happened
/// between a kill and `grace_s` after the new upstream listened. The grace
/// covers the proxy's pooled connections to the dead process, which fail
/// once each when next used.
pub fn in_restart(t_s: f64, restarts: &[Span], grace_s: f64) -> bool {
    restarts
        .iter()
        .any(|s| t_s >= s.start_s && t_s <= s.end_s + grace_s)
}

/// The window a time falls in, windows being `width_s` long from 0.
pub fn window_of(t_s: f64, width_s: f64) -> usize {
    if t_s <= 0.0 || width_s <= 0.0 {
        return 0;
    }
    (t_s / width_s) as usize
}

/// Latency and errors over one window of the run.
#[derive(Clone, Debug, Serialize)]
pub struct WindowRow {
    pub start_s: f64,
    pub end_s: f64,
    pub ok: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// One row per window; `latency_us[i]` holds window i's answered calls in
/// microseconds. The last window ends at `duration_s`.
pub fn window_rows(
    latency_us: &[Histogram<u64>],
    errors: &[u64],
    width_s: f64,
    duration_s: f64,
) -> Vec<WindowRow> {
    let n = latency_us.len().max(errors.len());
    (0..n)
        .map(|i| {
            let h = latency_us.get(i);
            let ms = |q: f64| h.map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1000.0);
            WindowRow {
                start_s: i as f64 * width_s,
                end_s: ((i + 1) as f64 * width_s).min(duration_s),
                ok: h.map_or(0, |h| h.len()),
                errors: errors.get(i).copied().unwrap_or(0),
                p50_ms: ms(0.5),
                p99_ms: ms(0.99),
                max_ms: h.map_or(0.0, |h| h.max() as f64 / 1000.0),
            }
        })
        .collect()
}

/// The least-squares slope of y over x; None for fewer than two distinct x.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_by_the_load_generators_wording() {
        let cases = [
            (
                "connect 127.0.0.1:18404: Connection refused (os error 111)",
                ErrorClass::ConnectRefused,
            ),
            ("connect 127.0.0.1:1: timed out", ErrorClass::Connect),
            ("TLS handshake with 127.0.0.1:1: bad cert", ErrorClass::Tls),
            ("HTTP 502 Bad Gateway: {\"error\"}", ErrorClass::Http(502)),
            ("HTTP 403 Forbidden: ", ErrorClass::Http(403)),
            (
                "request: connection closed before message completed",
                ErrorClass::ConnectionLost,
            ),
            ("connection: broken pipe", ErrorClass::ConnectionLost),
            ("JSON-RPC error: {\"code\":-32603}", ErrorClass::JsonRpc),
            ("answer without a result for id 3", ErrorClass::BadAnswer),
            ("answer is not JSON-RPC: eof", ErrorClass::BadAnswer),
            ("HTTP x", ErrorClass::Other),
            ("worker panicked", ErrorClass::Other),
        ];
        for (msg, class) in cases {
            assert_eq!(classify(msg), class, "{msg}");
        }
        assert_eq!(ErrorClass::Http(502).label(), "HTTP 502");
    }

    #[test]
    fn errors_are_charged_to_a_restart_only_inside_it_or_its_grace() {
        let r = [Span {
            start_s: 60.0,
            end_s: 60.5,
        }];
        assert!(!in_restart(59.9, &r, 2.0), "before the kill");
        assert!(in_restart(60.0, &r, 2.0));
        assert!(in_restart(62.5, &r, 2.0), "within the grace");
        assert!(!in_restart(62.6, &r, 2.0), "after the grace");
        assert!(!in_restart(61.0, &[], 2.0), "no restart at all");
    }

    #[test]
    fn times_fall_in_half_open_windows() {
        assert_eq!(window_of(0.0, 300.0), 0);
        assert_eq!(window_of(299.999, 300.0), 0);
        assert_eq!(window_of(300.0, 300.0), 1);
        assert_eq!(window_of(-1.0, 300.0), 0);
        assert_eq!(window_of(5.0, 0.0), 0);
    }

    #[test]
    fn each_window_reports_its_own_percentiles() {
        let mut a = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        let mut b = a.clone();
        // Window 0: 1..=100 ms, so p99 is 99 ms. Window 1: all 5 ms.
        for ms in 1..=100u64 {
            a.record(ms * 1000).unwrap();
            b.record(5000).unwrap();
        }
        let rows = window_rows(&[a, b], &[0, 3], 300.0, 450.0);
        assert_eq!(rows.len(), 2);
        assert!((rows[0].p99_ms - 99.0).abs() < 0.1, "{:?}", rows[0]);
        assert!((rows[0].p50_ms - 50.0).abs() < 0.1, "{:?}", rows[0]);
        assert!((rows[1].p99_ms - 5.0).abs() < 0.01, "{:?}", rows[1]);
        assert_eq!((rows[1].ok, rows[1].errors), (100, 3));
        assert_eq!((rows[1].start_s, rows[1].end_s), (300.0, 450.0));
    }

    #[test]
    fn slope_of_a_line_is_its_gradient_and_flat_noise_is_near_zero() {
        let line: Vec<(f64, f64)> = (0..100).map(|x| (x as f64, 3.0 * x as f64 + 7.0)).collect();
        assert!((slope(&line).unwrap() - 3.0).abs() < 1e-9);
        let flat: Vec<(f64, f64)> = (0..100)
            .map(|x| (x as f64, if x % 2 == 0 { 10.0 } else { 11.0 }))
            .collect();
        assert!(slope(&flat).unwrap().abs() < 0.001);
        assert_eq!(slope(&[(1.0, 2.0)]), None);
        assert_eq!(slope(&[(1.0, 2.0), (1.0, 3.0)]), None);
    }
}

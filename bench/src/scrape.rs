//! The per-filter cost as portcullis itself measures it: the mean of its
//! `filter_duration_seconds{filter}` histogram, read from the admin port.

use std::net::SocketAddr;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};

use crate::conn::Endpoint;

/// One filter's evaluations and mean time per evaluation.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FilterCost {
    pub filter: String,
    pub evaluations: u64,
    pub mean_us: f64,
}

pub async fn filter_costs(admin: SocketAddr) -> Result<Vec<FilterCost>, String> {
    Ok(parse(&metrics_text(admin).await?))
}

/// The proxy's Prometheus text from its admin port.
pub async fn metrics_text(admin: SocketAddr) -> Result<String, String> {
    let mut sender = Endpoint::plain(admin)
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let req = Request::get(format!("http://{admin}/metrics"))
        .header(http::header::HOST, admin.to_string())
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Pairs `_sum` and `_count` lines of the histogram by filter label.
fn parse(text: &str) -> Vec<FilterCost> {
    let series = |suffix: &str| -> Vec<(String, f64)> {
        let prefix = format!("portcullis_filter_duration_seconds_{suffix}{{filter=\"");
        text.lines()
            .filter_map(|l| l.strip_prefix(prefix.as_str()))
            .filter_map(|rest| {
                let (name, value) = rest.split_once("\"} ")?;
                Some((name.to_string(), value.trim().parse().ok()?))
            })
            .collect()
    };
    let counts = series("count");
    series("sum")
        .into_iter()
        .filter_map(|(filter, sum)| {
            let count = counts.iter().find(|(n, _)| *n == filter)?.1;
            (count > 0.0).then(|| FilterCost {
                filter,
                evaluations: count as u64,
                mean_us: sum / count * 1e6,
            })
        })
        .collect()
}

/// One filter's cumulative `filter_duration_seconds` buckets: (upper
/// bound in seconds, evaluations at or under it), `+Inf` last.
pub fn duration_buckets(text: &str, filter: &str) -> Vec<(f64, f64)> {
    let prefix = format!("portcullis_filter_duration_seconds_bucket{{filter=\"{filter}\",le=\"");
    let mut out: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .filter_map(|rest| {
            let (le, value) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, value.trim().parse().ok()?))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_one_filters_buckets_in_order() {
        let text = "portcullis_filter_duration_seconds_bucket{filter=\"a\",le=\"0.00001\"} 3\n\
            portcullis_filter_duration_seconds_bucket{filter=\"a\",le=\"+Inf\"} 9\n\
            portcullis_filter_duration_seconds_bucket{filter=\"a\",le=\"0.000005\"} 1\n\
            portcullis_filter_duration_seconds_bucket{filter=\"b\",le=\"0.000005\"} 7\n";
        let b = super::duration_buckets(text, "a");
        assert_eq!(
            b,
            vec![(0.000005, 1.0), (0.00001, 3.0), (f64::INFINITY, 9.0)]
        );
    }

    #[test]
    fn pairs_sum_and_count_per_filter() {
        let text = "# HELP x\n\
            portcullis_filter_duration_seconds_bucket{filter=\"tool-rbac\",le=\"0.00001\"} 3\n\
            portcullis_filter_duration_seconds_sum{filter=\"tool-rbac\"} 0.002\n\
            portcullis_filter_duration_seconds_count{filter=\"tool-rbac\"} 100\n\
            portcullis_filter_duration_seconds_sum{filter=\"arg-guard\"} 0.001\n\
            portcullis_filter_duration_seconds_count{filter=\"arg-guard\"} 0\n";
        let costs = super::parse(text);
        assert_eq!(costs.len(), 1, "a filter never evaluated has no mean");
        assert_eq!(costs[0].filter, "tool-rbac");
        assert_eq!(costs[0].evaluations, 100);
        assert!((costs[0].mean_us - 20.0).abs() < 1e-9);
    }
}

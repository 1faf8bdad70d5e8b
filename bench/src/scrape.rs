//! The per-filter cost as portcullis itself measures it: the mean of its
//! `filter_duration_seconds{filter}` histogram, read from the admin port.

use std::net::SocketAddr;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};

use crate::conn::Endpoint;

/// One filter's calls and mean time per call; `reused` of those calls
/// were answered with a decision already made (a filter that declares what
/// it decides on), the rest evaluated.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FilterCost {
    pub filter: String,
    pub evaluations: u64,
    pub mean_us: f64,
    pub reused: u64,
}

pub async fn filter_costs(admin: SocketAddr) -> Result<Vec<FilterCost>, String> {
    let text = metrics_text(admin).await?;
    let mut costs = parse(&text);
    for c in &mut costs {
        c.reused = instance_counts(&text, &c.filter).cached as u64;
    }
    Ok(costs)
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
                reused: 0,
            })
        })
        .collect()
}

/// One filter's `filter_instances_total`: evaluations served by a warm
/// instance, by a fresh one, and calls answered with a reused decision
/// (filters that declare what they decide on).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct InstanceCounts {
    pub warm: f64,
    pub fresh: f64,
    pub cached: f64,
}

impl InstanceCounts {
    /// The counts since `before` (the proxy's counters only grow).
    pub fn since(&self, before: &Self) -> Self {
        Self {
            warm: (self.warm - before.warm).max(0.0),
            fresh: (self.fresh - before.fresh).max(0.0),
            cached: (self.cached - before.cached).max(0.0),
        }
    }

    /// The share of calls that needed no new instance (a warm one, or a
    /// reused decision); none if there were no calls.
    pub fn hit_rate(&self) -> Option<f64> {
        let total = self.warm + self.fresh + self.cached;
        (total > 0.0).then(|| (self.warm + self.cached) / total)
    }
}

pub fn instance_counts(text: &str, filter: &str) -> InstanceCounts {
    let count = |outcome: &str| {
        let line = format!(
            "portcullis_filter_instances_total{{filter=\"{filter}\",outcome=\"{outcome}\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    InstanceCounts {
        warm: count("warm"),
        fresh: count("fresh"),
        cached: count("cached"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_one_filters_instance_counts() {
        let text = "portcullis_filter_instances_total{filter=\"a\",outcome=\"fresh\"} 4\n\
            portcullis_filter_instances_total{filter=\"a\",outcome=\"warm\"} 12\n\
            portcullis_filter_instances_total{filter=\"ab\",outcome=\"warm\"} 99\n";
        let a = super::instance_counts(text, "a");
        assert_eq!(
            a,
            super::InstanceCounts {
                warm: 12.0,
                fresh: 4.0,
                cached: 0.0,
            }
        );
        let before = super::InstanceCounts {
            warm: 2.0,
            fresh: 2.0,
            cached: 0.0,
        };
        assert_eq!(a.since(&before).hit_rate(), Some(10.0 / 12.0));
        let cached = "portcullis_filter_instances_total{filter=\"r\",outcome=\"fresh\"} 1\n\
            portcullis_filter_instances_total{filter=\"r\",outcome=\"cached\"} 3\n";
        assert_eq!(super::instance_counts(cached, "r").hit_rate(), Some(0.75));
        assert_eq!(super::instance_counts(text, "c").hit_rate(), None);
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

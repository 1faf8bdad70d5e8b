//! `rate-limit`: a token bucket per principal and tool, counting tool
//! calls (not HTTP requests). The bucket lives in the host's key-value
//! store, because every evaluation runs in a fresh instance; each take is
//! a compare-and-swap, so concurrent calls never spend the same token.

use portcullis_policy_sdk::{host, pattern, prelude::*};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// Tool name patterns this limit applies to.
    pub tools: Vec<String>,
    /// The bucket's size: the largest burst.
    pub capacity: u32,
    /// Tokens added per second.
    pub refill_per_second: f64,
    /// `principal` (one bucket per caller per tool, the default) or
    /// `global` (one bucket per tool for everyone).
    #[serde(default)]
    pub scope: Scope,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    #[default]
    Principal,
    Global,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The first limit whose tools match applies.
    pub limits: Vec<Limit>,
}

/// Tokens are kept in thousandths, so fractional refill is exact enough.
const MILLI: u64 = 1000;
/// Attempts before giving up under contention (and denying).
const CAS_ATTEMPTS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bucket {
    milli_tokens: u64,
    at_ms: u64,
}

impl Bucket {
    fn parse(s: &str) -> Option<Self> {
        let (t, at) = s.split_once(':')?;
        Some(Self {
            milli_tokens: t.parse().ok()?,
            at_ms: at.parse().ok()?,
        })
    }

    fn encode(self) -> String {
        format!("{}:{}", self.milli_tokens, self.at_ms)
    }

    /// The bucket refilled up to `now`.
    fn refill(self, limit: &Limit, now: u64) -> Self {
        let elapsed = now.saturating_sub(self.at_ms);
        let added = (elapsed as f64 * limit.refill_per_second) as u64; // ms × tokens/s = milli-tokens
        let cap = u64::from(limit.capacity) * MILLI;
        Self {
            milli_tokens: self.milli_tokens.saturating_add(added).min(cap),
            at_ms: now,
        }
    }
}

/// Takes one token; `Err` carries the wait until the next one, in ms.
fn take(limit: &Limit, key: &str) -> Result<(), u64> {
    let full = Bucket {
        milli_tokens: u64::from(limit.capacity) * MILLI,
        at_ms: 0,
    };
    // Keep idle buckets only as long as they take to fill up again.
    let ttl = ((f64::from(limit.capacity) / limit.refill_per_second) * 1000.0) as u64 + 1000;
    for _ in 0..CAS_ATTEMPTS {
        let now = host::now_ms();
        let stored = host::kv_get(key);
        let current = stored
            .as_deref()
            .and_then(Bucket::parse)
            .map_or(Bucket { at_ms: now, ..full }, |b| b.refill(limit, now));
        if current.milli_tokens < MILLI {
            let missing = MILLI - current.milli_tokens;
            return Err((missing as f64 / limit.refill_per_second).ceil() as u64);
        }
        let next = Bucket {
            milli_tokens: current.milli_tokens - MILLI,
            at_ms: now,
        };
        if host::kv_compare_and_swap(key, stored.as_deref(), &next.encode(), ttl) {
            return Ok(());
        }
    }
    Err(0)
}

pub struct RateLimit;

impl Filter for RateLimit {
    type Config = Config;

    fn validate(config: &Config) -> Result<(), String> {
        for l in &config.limits {
            if l.capacity == 0 || !(l.refill_per_second > 0.0 && l.refill_per_second.is_finite()) {
                return Err("capacity and refill_per_second must be positive".into());
            }
        }
        Ok(())
    }

    fn on_request(config: &Config, call: &Call) -> Decision {
        let Some(tool) = call.tool_name() else {
            return Decision::Allow;
        };
        let Some(limit) = config.limits.iter().find(|l| pattern::any(&l.tools, tool)) else {
            return Decision::Allow;
        };
        let who = match limit.scope {
            Scope::Principal => call.principal.key.clone(),
            Scope::Global => "*".into(),
        };
        match take(limit, &format!("bucket|{who}|{tool}")) {
            Ok(()) => Decision::Allow,
            Err(0) => Decision::deny(format!(
                "rate limit for {tool}: too much contention, try again"
            )),
            Err(wait) => Decision::deny(format!(
                "rate limit for {tool} exceeded for {who}; retry in {wait} ms"
            )),
        }
    }
}

export_filter!(RateLimit);

#[cfg(test)]
mod tests {
    use portcullis_policy_sdk::testing::{advance_clock, reset_host};
    use serde_json::json;

    use super::*;

    fn h() -> Harness<RateLimit> {
        reset_host();
        Harness::new(
            &json!({"limits": [
                {"tools": ["search"], "capacity": 3, "refill_per_second": 2},
                {"tools": ["deploy"], "capacity": 1, "refill_per_second": 0.5, "scope": "global"}
            ]})
            .to_string(),
        )
        .unwrap()
    }

    const A: &str = "spiffe://td/ns/a/sa/x";
    const B: &str = "spiffe://td/ns/b/sa/y";

    #[test]
    fn bucket_allows_a_burst_then_refills() {
        let h = h();
        let c = CallBuilder::tool("search").spiffe(A).build();
        for _ in 0..3 {
            h.request(&c).assert_allowed();
        }
        h.request(&c).assert_denied("retry in 500 ms");
        advance_clock(499);
        h.request(&c).assert_denied("rate limit");
        advance_clock(1);
        h.request(&c).assert_allowed();
        h.request(&c).assert_denied("rate limit");
    }

    #[test]
    fn buckets_are_per_principal_and_per_tool() {
        let h = h();
        let a = CallBuilder::tool("search").spiffe(A).build();
        for _ in 0..3 {
            h.request(&a).assert_allowed();
        }
        h.request(&a).assert_denied(A);
        h.request(&CallBuilder::tool("search").spiffe(B).build())
            .assert_allowed();
        h.request(&CallBuilder::tool("echo").spiffe(A).build())
            .assert_allowed();
    }

    #[test]
    fn global_scope_shares_one_bucket() {
        let h = h();
        h.request(&CallBuilder::tool("deploy").spiffe(A).build())
            .assert_allowed();
        h.request(&CallBuilder::tool("deploy").spiffe(B).build())
            .assert_denied("retry in 2000 ms");
    }

    #[test]
    fn bad_config_is_refused() {
        assert!(Harness::<RateLimit>::new(
            r#"{"limits":[{"tools":["*"],"capacity":0,"refill_per_second":1}]}"#
        )
        .is_err());
        assert!(Harness::<RateLimit>::new(
            r#"{"limits":[{"tools":["*"],"capacity":1,"refill_per_second":-1}]}"#
        )
        .is_err());
    }
}

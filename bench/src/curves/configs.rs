//! The portcullis configurations the curves run, as templates with the
//! placeholders of `configs/` (filled by `targets::start_portcullis`).
//! They follow configurations b, c, d and i, with what each curve varies:
//! the filter count, arg-guard's length limit, the isolation, the
//! listener's connection limits.

use std::fmt::Write as _;

/// SPIFFE IDs of the load generator: `client` (one caller) and
/// `caller-N` (the warm-pool curve).
pub const CLIENT: &str = "spiffe://bench.local/ns/bench/sa/client";
pub const ANY_BENCH_CALLER: &str = "spiffe://bench.local/ns/bench/sa/*";

pub fn caller_id(i: usize) -> String {
    format!("spiffe://bench.local/ns/bench/sa/caller-{i}")
}

/// The native rules in front of any filter.
#[derive(Clone, Copy)]
pub enum Policy {
    /// Configurations b and c: only `tools/call` of `echo`, for `caller`
    /// if given.
    EchoOnly { caller: Option<&'static str> },
    /// Configurations d and i: the filters decide.
    Allow,
}

/// One WASM filter of the chain.
pub enum Filter {
    /// `tool-rbac`: `tools` allowed to `principal` (anyone if None);
    /// on the request and list hooks, as in d and i.
    ToolRbac {
        name: String,
        principal: Option<&'static str>,
        tools: &'static [&'static str],
        fresh: bool,
        /// `reuse_decisions` (the default, true): tool-rbac declares that it
        /// decides on the principal and the target. The curves that
        /// measure evaluations themselves (filter count, callers) turn it
        /// off.
        reuse: bool,
    },
    /// `arg-guard` on `echo`'s `/text`: at most `max_length` characters,
    /// no `drop table`.
    ArgGuard { max_length: usize, fresh: bool },
}

/// A portcullis configuration: mTLS (strict, as c and d) or plaintext,
/// `policy`, then `filters` in order. `max_connections` raises the
/// listener's connection limits (total and per caller) for the idle
/// memory measurement, whose 10 000 connections share one caller.
pub fn portcullis(
    mtls: bool,
    max_connections: Option<usize>,
    policy: Policy,
    filters: &[Filter],
) -> String {
    let mut y = String::from("listener:\n  addr: 127.0.0.1:@LISTEN@\n");
    if let Some(n) = max_connections {
        let _ = writeln!(
            y,
            "  max_connections: {n}\n  max_connections_per_caller: {n}"
        );
    }
    y.push_str("admin:\n  addr: 127.0.0.1:@ADMIN@\n");
    if mtls {
        y.push_str(
            "identity:\n  mode: strict\n  trust_domains: [bench.local]\n  source:\n    files:\n      \
             cert: @PKI@/proxy.pem\n      key: @PKI@/proxy.key\n      bundle: @PKI@/ca/ca.pem\n",
        );
    }
    y.push_str("upstream:\n  url: http://127.0.0.1:@UPSTREAM@\npolicy:\n");
    match policy {
        Policy::Allow => y.push_str("  default: allow\n  rules: []\n"),
        Policy::EchoOnly { caller } => {
            y.push_str(
                "  default: deny\n  rules:\n    - name: echo-only\n      action: allow\n      \
                 methods: [\"tools/call\"]\n      names: [\"echo\"]\n",
            );
            if let Some(c) = caller {
                let _ = writeln!(y, "      callers: [\"{c}\"]");
            }
        }
    }
    if filters.is_empty() {
        return y;
    }
    // One compile cache for every curve's proxies: each filter is
    // compiled once per run, by the first proxy that loads it.
    y.push_str("filter_engine:\n  cache_dir: @WORK@/filter-cache\nfilters:\n");
    for f in filters {
        filter(&mut y, f);
    }
    y
}

fn filter(y: &mut String, f: &Filter) {
    // The timeout only bounds a runaway filter: arg-guard scanning a 1 MB
    // argument, and debug builds (the smoke run), need more than 10 ms.
    let common = |y: &mut String, name: &str, wasm: &str, hooks: &str, fresh: bool| {
        let _ = writeln!(
            y,
            "  - name: {name}\n    path: @FILTERS@/{wasm}\n    hooks: {hooks}\n    timeout: 1s"
        );
        if fresh {
            y.push_str("    isolation: call\n");
        }
    };
    match f {
        Filter::ToolRbac {
            name,
            principal,
            tools,
            fresh,
            reuse,
        } => {
            common(y, name, "tool_rbac.wasm", "[request, list]", *fresh);
            if !reuse {
                y.push_str("    reuse_decisions: false\n");
            }
            y.push_str(
                "    config:\n      default: deny\n      rules:\n        - name: bench\n          \
                 effect: allow\n",
            );
            if let Some(p) = principal {
                let _ = writeln!(y, "          principals: {{spiffe: [\"{p}\"]}}");
            }
            let quoted: Vec<String> = tools.iter().map(|t| format!("\"{t}\"")).collect();
            let _ = writeln!(y, "          tools: [{}]", quoted.join(", "));
        }
        Filter::ArgGuard { max_length, fresh } => {
            common(y, "arg-guard", "arg_guard.wasm", "[request]", *fresh);
            // Every call evaluated, as in configurations d and i: the load
            // repeats its arguments, real traffic rarely does.
            y.push_str("    reuse_decisions: false\n");
            let _ = writeln!(
                y,
                "    config:\n      constraints:\n        - tools: [\"echo\"]\n          \
                 pointer: /text\n          required: true\n          max_length: {max_length}\n          \
                 deny_regex: \"(?i)drop\\\\s+table\""
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_d_is_reproduced_with_the_limit_asked_for() {
        let y = portcullis(
            true,
            None,
            Policy::Allow,
            &[
                Filter::ToolRbac {
                    name: "tool-rbac".into(),
                    principal: Some(CLIENT),
                    tools: &["echo"],
                    fresh: false,
                    reuse: true,
                },
                Filter::ArgGuard {
                    max_length: 2_000_000,
                    fresh: true,
                },
            ],
        );
        for want in [
            "mode: strict",
            "principals: {spiffe: [\"spiffe://bench.local/ns/bench/sa/client\"]}",
            "tools: [\"echo\"]",
            "max_length: 2000000",
            "deny_regex: \"(?i)drop\\\\s+table\"",
            "    isolation: call\n    reuse_decisions: false\n    config:\n      constraints",
        ] {
            assert!(y.contains(want), "{want} not in\n{y}");
        }
        assert_eq!(y.matches("isolation: call").count(), 1, "{y}");
        // arg-guard evaluates every call (the load repeats its arguments);
        // tool-rbac reuses, as asked.
        assert_eq!(y.matches("reuse_decisions: false").count(), 1, "{y}");
    }

    #[test]
    fn plain_echo_only_has_no_identity_and_no_filters() {
        let y = portcullis(false, Some(30_000), Policy::EchoOnly { caller: None }, &[]);
        assert!(!y.contains("identity:") && !y.contains("filters:"), "{y}");
        assert!(y.contains("max_connections_per_caller: 30000"), "{y}");
        assert!(
            y.contains("names: [\"echo\"]") && !y.contains("callers:"),
            "{y}"
        );
    }
}

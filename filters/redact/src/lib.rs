//! `redact`: removes secrets from tool results before the agent sees them:
//! cloud keys, bearer tokens, JWTs, private keys, e-mail addresses, and
//! patterns from the configuration. Every string in the result is
//! scanned; a match becomes `[REDACTED:<kind>]`.

use portcullis_policy_sdk::prelude::*;
use regex_lite::Regex;
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extra {
    pub name: String,
    pub regex: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Built-in detectors to leave out, by name.
    #[serde(default)]
    pub disable: Vec<String>,
    /// More patterns to redact.
    #[serde(default)]
    pub patterns: Vec<Extra>,
}

/// A built-in detector. `hint` is a literal that every match contains; a
/// string without it skips the regex, so clean results cost almost nothing
/// (regexes are compiled per evaluation, since instances are fresh).
struct Builtin {
    name: &'static str,
    hint: &'static str,
    regex: &'static str,
}

const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "aws-access-key",
        hint: "A",
        regex: r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    },
    Builtin {
        name: "aws-secret-key",
        hint: "ecret",
        regex: r"(?i)aws_?secret_?access_?key\W{0,4}[A-Za-z0-9/+=]{40}",
    },
    Builtin {
        name: "gcp-api-key",
        hint: "AIza",
        regex: r"\bAIza[0-9A-Za-z_\-]{35}\b",
    },
    Builtin {
        name: "github-token",
        hint: "_",
        regex: r"\bgh[pousr]_[A-Za-z0-9]{36,}\b",
    },
    Builtin {
        name: "slack-token",
        hint: "xox",
        regex: r"\bxox[abposr]-[A-Za-z0-9\-]{10,}",
    },
    Builtin {
        name: "private-key",
        hint: "PRIVATE KEY",
        regex: r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
    },
    Builtin {
        name: "jwt",
        hint: "eyJ",
        regex: r"\beyJ[A-Za-z0-9_\-]+\.eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+",
    },
    Builtin {
        name: "bearer-token",
        hint: "earer",
        regex: r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]{16,}=*",
    },
    Builtin {
        name: "email",
        hint: "@",
        regex: r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b",
    },
];

struct Detector {
    name: String,
    hint: Option<&'static str>,
    regex: Regex,
}

/// Compiles the detectors that can match `text` (all of them if `None`).
fn detectors(config: &Config, text: Option<&str>) -> Result<Vec<Detector>, String> {
    let wanted = |b: &&Builtin| {
        !config.disable.iter().any(|d| d == b.name) && text.is_none_or(|t| t.contains(b.hint))
    };
    let builtins = BUILTINS.iter().filter(wanted).map(|b| {
        Regex::new(b.regex)
            .map(|regex| Detector {
                name: b.name.to_string(),
                hint: Some(b.hint),
                regex,
            })
            .map_err(|e| e.to_string())
    });
    let extra = config.patterns.iter().map(|p| {
        Regex::new(&p.regex)
            .map(|regex| Detector {
                name: p.name.clone(),
                hint: None,
                regex,
            })
            .map_err(|e| format!("pattern {}: {e}", p.name))
    });
    builtins.chain(extra).collect()
}

/// Redacts in place; returns how many matches were replaced.
fn scrub(value: &mut Value, found: &[&Detector]) -> usize {
    match value {
        Value::String(s) => {
            let mut n = 0;
            for d in found {
                if d.hint.is_some_and(|h| !s.contains(h)) {
                    continue;
                }
                let hits = d.regex.find_iter(s).count();
                if hits > 0 {
                    *s = d
                        .regex
                        .replace_all(s, format!("[REDACTED:{}]", d.name).as_str())
                        .into_owned();
                    n += hits;
                }
            }
            n
        }
        Value::Array(items) => items.iter_mut().map(|v| scrub(v, found)).sum(),
        Value::Object(map) => map.values_mut().map(|v| scrub(v, found)).sum(),
        _ => 0,
    }
}

pub struct Redact;

impl Filter for Redact {
    type Config = Config;

    fn validate(config: &Config) -> Result<(), String> {
        for d in &config.disable {
            if !BUILTINS.iter().any(|b| b.name == d) {
                return Err(format!("unknown detector {d:?}"));
            }
        }
        detectors(config, None).map(|_| ())
    }

    fn on_result(config: &Config, _call: &Call, result: &str) -> ResultDecision {
        // Only detectors whose hint occurs somewhere in the raw text can
        // match: compile just those.
        let Ok(compiled) = detectors(config, Some(result)) else {
            return ResultDecision::deny("redact: detectors failed to build");
        };
        let live: Vec<&Detector> = compiled.iter().collect();
        if live.is_empty() {
            return ResultDecision::Allow;
        }
        let Ok(mut value) = serde_json::from_str::<Value>(result) else {
            return ResultDecision::deny("redact: result is not JSON");
        };
        match scrub(&mut value, &live) {
            0 => ResultDecision::Allow,
            n => {
                host::log(host::Level::Info, &format!("redacted {n} secret(s)"));
                ResultDecision::Replace(value)
            }
        }
    }
}

export_filter!(Redact);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn h(config: Value) -> Harness<Redact> {
        Harness::new(&config.to_string()).unwrap()
    }

    fn text_result(text: &str) -> Value {
        json!({"content": [{"type": "text", "text": text}], "isError": false})
    }

    fn redacted(h: &Harness<Redact>, text: &str) -> String {
        let call = CallBuilder::tool("read_file").build();
        match h.result(&call, &text_result(text)) {
            ResultDecision::Replace(v) => v["content"][0]["text"].as_str().unwrap().to_string(),
            ResultDecision::Allow => text.to_string(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn built_in_secrets_are_redacted() {
        let h = h(json!({}));
        let cases = [
            ("key AKIAIOSFODNN7EXAMPLE here", "aws-access-key"),
            (
                "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "aws-secret-key",
            ),
            ("AIzaSyA-1234567890abcdefghijklmnopqrstu", "gcp-api-key"),
            (
                "token ghp_abcdefghijklmnopqrstuvwxyz0123456789",
                "github-token",
            ),
            (
                "Authorization: Bearer abcdef0123456789abcdef",
                "bearer-token",
            ),
            ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.sig_nature-1", "jwt"),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----",
                "private-key",
            ),
            ("write to alice@example.com", "email"),
        ];
        for (text, kind) in cases {
            let out = redacted(&h, text);
            assert!(out.contains(&format!("[REDACTED:{kind}]")), "{kind}: {out}");
        }
    }

    #[test]
    fn clean_results_pass_untouched() {
        let h = h(json!({}));
        let call = CallBuilder::tool("echo").build();
        assert_eq!(
            h.result(&call, &text_result("nothing to see")),
            ResultDecision::Allow
        );
        assert_eq!(h.result(&call, &json!({"n": 5})), ResultDecision::Allow);
    }

    #[test]
    fn configured_patterns_and_disabled_builtins() {
        let h = h(
            json!({"disable": ["email"], "patterns": [{"name": "ticket", "regex": "TKT-[0-9]{4}"}]}),
        );
        let out = redacted(&h, "see TKT-1234, mail bob@example.com");
        assert!(out.contains("[REDACTED:ticket]"), "{out}");
        assert!(out.contains("bob@example.com"), "{out}");
    }

    #[test]
    fn nested_structured_content_is_scanned() {
        let h = h(json!({}));
        let call = CallBuilder::tool("t").build();
        let r = json!({"structuredContent": {"users": [{"mail": "carol@example.org"}]}});
        let out = h.result(&call, &r);
        assert_eq!(
            out.assert_replaced()["structuredContent"]["users"][0]["mail"],
            "[REDACTED:email]"
        );
    }

    #[test]
    fn bad_configs_are_refused() {
        assert!(Harness::<Redact>::new(r#"{"disable": ["nope"]}"#).is_err());
        assert!(Harness::<Redact>::new(r#"{"patterns": [{"name": "x", "regex": "("}]}"#).is_err());
    }
}

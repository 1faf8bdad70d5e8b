//! `arg-guard`: constraints on tool arguments, addressed by JSON pointer.
//!
//! Each constraint names the tools it covers (wildcards allowed) and a JSON
//! pointer into the arguments, then any of: an allowed regex, a denied
//! regex, confinement to a path prefix (after resolving `.` and `..`), a
//! maximum length, and an enum of allowed values. With `normalize`, a
//! confined path is rewritten to its resolved form, so the server receives
//! exactly the path that was checked.

use portcullis_policy_sdk::{pattern, prelude::*};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constraint {
    /// Tool name patterns.
    pub tools: Vec<String>,
    /// A JSON pointer into the arguments, e.g. `/path` or `/options/mode`.
    pub pointer: String,
    /// Deny when the argument is absent.
    #[serde(default)]
    pub required: bool,
    /// The (string) value must match this regex.
    #[serde(default)]
    pub allow_regex: Option<Pattern>,
    /// The (string) value must not match this regex.
    #[serde(default)]
    pub deny_regex: Option<Pattern>,
    /// The value is a path that must stay under this absolute prefix.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Rewrite a confined path to its resolved form.
    #[serde(default)]
    pub normalize: bool,
    /// Longest value, in characters (strings) or JSON bytes (others).
    #[serde(default)]
    pub max_length: Option<usize>,
    /// The value must equal one of these.
    #[serde(rename = "enum", default)]
    pub one_of: Option<Vec<Value>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub constraints: Vec<Constraint>,
}

/// Resolves `.` and `..` in an absolute path. `None` if it is relative,
/// climbs above the root, or contains a NUL.
pub fn resolve(path: &str) -> Option<String> {
    if !path.starts_with('/') || path.contains('\0') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            s => parts.push(s),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

fn under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty() || path == prefix || path.starts_with(&format!("{prefix}/"))
}

/// A regex compiled when the configuration is parsed, so that a warm
/// instance (which parses its configuration once) never compiles it again.
#[derive(Debug, Clone)]
pub struct Pattern {
    src: String,
    re: regex_lite::Regex,
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let src = String::deserialize(d)?;
        let re = regex_lite::Regex::new(&src)
            .map_err(|e| serde::de::Error::custom(format!("bad regex {src:?}: {e}")))?;
        Ok(Self { src, re })
    }
}

/// The outcome of one constraint on one value.
enum Check {
    Pass,
    Fail(String),
    Rewrite(String),
}

impl Constraint {
    fn check(&self, value: &Value) -> Check {
        let text = value.as_str();
        if let Some(max) = self.max_length {
            let len = text.map_or_else(|| value.to_string().len(), |t| t.chars().count());
            if len > max {
                return Check::Fail(format!("is {len} long, more than {max}"));
            }
        }
        if let Some(allowed) = &self.one_of {
            if !allowed.contains(value) {
                return Check::Fail(format!("{value} is not one of the allowed values"));
            }
        }
        let needs_text =
            self.allow_regex.is_some() || self.deny_regex.is_some() || self.path_prefix.is_some();
        let Some(text) = text else {
            return if needs_text {
                Check::Fail("must be a string".into())
            } else {
                Check::Pass
            };
        };
        if let Some(p) = &self.allow_regex {
            if !p.re.is_match(text) {
                return Check::Fail(format!("{text:?} does not match {:?}", p.src));
            }
        }
        if let Some(p) = &self.deny_regex {
            if p.re.is_match(text) {
                return Check::Fail(format!("{text:?} matches denied pattern {:?}", p.src));
            }
        }
        match &self.path_prefix {
            None => Check::Pass,
            Some(prefix) => match resolve(text) {
                Some(resolved)
                    if under(&resolved, prefix) && self.normalize && resolved != text =>
                {
                    Check::Rewrite(resolved)
                }
                Some(resolved) if under(&resolved, prefix) => Check::Pass,
                Some(resolved) => Check::Fail(format!(
                    "{text:?} resolves to {resolved:?}, outside {prefix:?}"
                )),
                None => Check::Fail(format!(
                    "{text:?} is not an absolute path inside {prefix:?}"
                )),
            },
        }
    }
}

pub struct ArgGuard;

impl Filter for ArgGuard {
    type Config = Config;

    fn validate(config: &Config) -> Result<(), String> {
        for c in &config.constraints {
            if !(c.pointer.is_empty() || c.pointer.starts_with('/')) {
                return Err(format!("pointer {:?} must start with '/'", c.pointer));
            }
            if let Some(p) = &c.path_prefix {
                resolve(p).ok_or_else(|| format!("path_prefix {p:?} must be an absolute path"))?;
            }
        }
        Ok(())
    }

    fn on_request(config: &Config, call: &Call) -> Decision {
        let Some(tool) = call.tool_name() else {
            return Decision::Allow;
        };
        let mut args = call.args_value();
        let mut rewritten = false;
        for c in config
            .constraints
            .iter()
            .filter(|c| pattern::any(&c.tools, tool))
        {
            let Some(value) = args.pointer(&c.pointer) else {
                if c.required {
                    return Decision::deny(format!("{tool}: argument {} is required", c.pointer));
                }
                continue;
            };
            match c.check(value) {
                Check::Pass => {}
                Check::Fail(why) => {
                    return Decision::deny(format!("{tool}: argument {} {why}", c.pointer))
                }
                Check::Rewrite(resolved) => {
                    if let Some(slot) = args.pointer_mut(&c.pointer) {
                        *slot = Value::String(resolved);
                        rewritten = true;
                    }
                }
            }
        }
        if rewritten {
            Decision::RewriteArguments(args)
        } else {
            Decision::Allow
        }
    }
}

export_filter!(ArgGuard);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn h() -> Harness<ArgGuard> {
        Harness::new(
            &json!({"constraints": [
                {"tools": ["read_file", "write_*"], "pointer": "/path", "required": true,
                 "path_prefix": "/srv/data", "normalize": true},
                {"tools": ["*"], "pointer": "/query", "max_length": 12, "deny_regex": "(?i)drop\\s+table"},
                {"tools": ["set_mode"], "pointer": "/mode", "enum": ["ro", "rw"]},
                {"tools": ["fetch"], "pointer": "/url", "allow_regex": "^https://[a-z.]+\\.example\\.com/"}
            ]})
            .to_string(),
        )
        .unwrap()
    }

    fn call(tool: &str, args: Value) -> Call {
        CallBuilder::tool(tool).args(args).build()
    }

    #[test]
    fn paths_are_confined_after_resolution() {
        let h = h();
        h.request(&call("read_file", json!({"path": "/srv/data/a.txt"})))
            .assert_allowed();
        h.request(&call(
            "read_file",
            json!({"path": "/srv/data/../../etc/passwd"}),
        ))
        .assert_denied("outside");
        h.request(&call("read_file", json!({"path": "/srv/database"})))
            .assert_denied("outside");
        h.request(&call("read_file", json!({"path": "data/a"})))
            .assert_denied("not an absolute path");
        h.request(&call("read_file", json!({"path": "/../../"})))
            .assert_denied("not an absolute path");
        h.request(&call("read_file", json!({})))
            .assert_denied("required");
        h.request(&call("read_file", json!({"path": 7})))
            .assert_denied("must be a string");
    }

    #[test]
    fn normalize_rewrites_to_the_checked_path() {
        let d = h().request(&call(
            "write_file",
            json!({"path": "/srv/data/x/./../y", "body": "b"}),
        ));
        let args = d.assert_rewritten();
        assert_eq!(args["path"], "/srv/data/y");
        assert_eq!(args["body"], "b");
    }

    #[test]
    fn length_regex_and_enum() {
        let h = h();
        h.request(&call("search", json!({"query": "short"})))
            .assert_allowed();
        h.request(&call("search", json!({"query": "much too long a query"})))
            .assert_denied("more than 12");
        h.request(&call("search", json!({"query": "DROP TABLE"})))
            .assert_denied("denied pattern");
        h.request(&call("set_mode", json!({"mode": "rw"})))
            .assert_allowed();
        h.request(&call("set_mode", json!({"mode": "root"})))
            .assert_denied("not one of");
        h.request(&call("fetch", json!({"url": "https://api.example.com/x"})))
            .assert_allowed();
        h.request(&call(
            "fetch",
            json!({"url": "https://evil.test/?a.example.com/"}),
        ))
        .assert_denied("does not match");
    }

    #[test]
    fn other_tools_and_methods_pass() {
        let h = h();
        h.request(&call("echo", json!({"text": "hi"})))
            .assert_allowed();
        h.request(&CallBuilder::method("tools/list").build())
            .assert_allowed();
    }

    #[test]
    fn resolve_handles_edge_cases() {
        assert_eq!(resolve("/a/./b/../c").as_deref(), Some("/a/c"));
        assert_eq!(resolve("/a//b/").as_deref(), Some("/a/b"));
        assert_eq!(resolve("/.."), None);
        assert_eq!(resolve("/a\0b"), None);
        assert!(under("/srv/data", "/srv/data/"));
        assert!(!under("/srv/data2", "/srv/data"));
    }

    #[test]
    fn bad_configs_are_refused() {
        let bad = |c: Value| Harness::<ArgGuard>::new(&c.to_string()).err().unwrap();
        assert!(
            bad(json!({"constraints": [{"tools": ["*"], "pointer": "x"}]}))
                .contains("must start with")
        );
        assert!(bad(
            json!({"constraints": [{"tools": ["*"], "pointer": "/x", "deny_regex": "("}]})
        )
        .contains("bad regex"));
        assert!(bad(
            json!({"constraints": [{"tools": ["*"], "pointer": "/x", "path_prefix": "rel"}]})
        )
        .contains("absolute"));
    }
}

//! Which scopes an operation needs, and whether a token's scopes cover
//! them: one rule set, first match wins (like the policy rules), with a
//! hierarchy (`implies`), so that a broader scope grants the narrower ones
//! (required by the 2026-07-28 authorization spec).

use std::collections::{BTreeMap, BTreeSet};

use super::config::ScopesConfig;
use crate::policy::glob;

pub struct ScopeRules {
    base: Vec<String>,
    implies: BTreeMap<String, Vec<String>>,
    rules: Vec<super::config::ScopeRule>,
}

impl ScopeRules {
    pub fn new(config: &ScopesConfig) -> Self {
        Self {
            base: config.required.clone(),
            implies: config.implies.clone(),
            rules: config.rules.clone(),
        }
    }

    /// What every authenticated request needs (the 401's `scope`).
    pub fn base(&self) -> &[String] {
        &self.base
    }

    /// Every scope the operations `ops` (method, name) need together,
    /// sorted: the base scopes, and for each operation the first rule
    /// that matches it.
    pub fn needed(&self, ops: &[(&str, Option<&str>)]) -> Vec<String> {
        let mut out: BTreeSet<String> = self.base.iter().cloned().collect();
        for (method, name) in ops {
            let rule = self.rules.iter().find(|r| {
                let method_ok =
                    r.methods.is_empty() || r.methods.iter().any(|p| glob::matches(p, method));
                let name_ok = r.names.is_empty()
                    || name.is_some_and(|n| r.names.iter().any(|p| glob::matches(p, n)));
                method_ok && name_ok
            });
            if let Some(rule) = rule {
                out.extend(rule.require.iter().cloned());
            }
        }
        out.into_iter().collect()
    }

    /// Whether `granted`, with everything each implies, covers `needed`.
    pub fn satisfied(&self, granted: &[String], needed: &[String]) -> bool {
        let mut have: BTreeSet<&str> = BTreeSet::new();
        let mut todo: Vec<&str> = granted.iter().map(String::as_str).collect();
        while let Some(s) = todo.pop() {
            if have.insert(s) {
                if let Some(narrower) = self.implies.get(s) {
                    todo.extend(narrower.iter().map(String::as_str));
                }
            }
        }
        needed.iter().all(|n| have.contains(n.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> ScopeRules {
        let config: ScopesConfig = serde_yaml_ng::from_str(
            r#"
required: [mcp]
implies: {"files:admin": ["files:write"], "files:write": ["files:read"]}
rules:
  - {methods: ["tools/call"], names: ["delete_*"], require: ["files:admin"]}
  - {methods: ["tools/call"], names: ["write_*"], require: ["files:write"]}
  - {methods: ["tools/call", "resources/read"], require: ["files:read"]}
"#,
        )
        .unwrap();
        ScopeRules::new(&config)
    }

    #[test]
    fn every_needed_scope_is_listed_and_the_hierarchy_applies() {
        let r = rules();
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(r.needed(&[("tools/list", None)]), s(&["mcp"]));
        assert_eq!(
            r.needed(&[("tools/call", Some("delete_file"))]),
            s(&["files:admin", "mcp"])
        );
        // A batch needs the union.
        assert_eq!(
            r.needed(&[
                ("tools/call", Some("write_x")),
                ("resources/read", Some("f"))
            ]),
            s(&["files:read", "files:write", "mcp"])
        );
        assert!(r.satisfied(&s(&["mcp", "files:admin"]), &s(&["files:read", "mcp"])));
        assert!(r.satisfied(&s(&["mcp", "files:write"]), &s(&["files:read", "mcp"])));
        assert!(!r.satisfied(&s(&["mcp", "files:read"]), &s(&["files:write", "mcp"])));
        assert!(!r.satisfied(&s(&["files:admin"]), &s(&["mcp"])));
    }
}

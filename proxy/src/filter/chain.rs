//! The filter chain: the static rules, then each WASM filter in order. The
//! first denial wins; a rewrite is seen by the filters after it; a filter
//! that faults denies, unless it is configured to fail open.

use std::{sync::Arc, time::Instant};

use serde_json::value::RawValue;

use super::{
    bindings::types, convert, metrics::FilterMetrics, wasm::Fault, wasm::WasmFilter, Hook, OnError,
};
use crate::{
    audit::Record,
    identity::Principal,
    mcp::{
        json,
        lists::{ListItem, ListKind},
    },
    policy::{Decision, Denial, Mode, Policy, Request, ResultDecision, StaticRules},
};

pub struct FilterChain {
    rules: StaticRules,
    filters: Vec<Arc<WasmFilter>>,
    metrics: FilterMetrics,
    max_json_depth: usize,
}

/// What a fault turns into: a denial, or (fail-open) nothing.
enum OnFault {
    Deny(Denial),
    Continue,
}

impl FilterChain {
    pub fn new(
        rules: StaticRules,
        filters: Vec<Arc<WasmFilter>>,
        metrics: FilterMetrics,
        max_json_depth: usize,
    ) -> Self {
        Self {
            rules,
            filters,
            metrics,
            max_json_depth,
        }
    }

    pub fn filter_names(&self) -> Vec<&str> {
        self.filters.iter().map(|f| f.name.as_str()).collect()
    }

    /// A fault denies, unless the filter fails open. An instance that
    /// refused the configuration the filter was loaded with, or whose
    /// `configure` faulted, denies even then: `on_error: allow` is for a
    /// filter that breaks on some input, not for one whose instance could
    /// not be configured.
    fn fault(&self, f: &WasmFilter, hook: &str, fault: &Fault) -> OnFault {
        self.metrics.fault(&f.name, fault.kind());
        let on_error = match fault {
            Fault::Config(_) | Fault::Unconfigured(_) => OnError::Deny,
            _ => f.on_error,
        };
        match on_error {
            OnError::Deny => {
                tracing::warn!(filter = %f.name, hook, fault = %fault, "filter failed; denying (fail closed)");
                OnFault::Deny(Denial::new(
                    by(&[&f.name]),
                    format!("filter failed: {fault}"),
                ))
            }
            OnError::Allow => {
                tracing::error!(filter = %f.name, hook, fault = %fault, "filter failed; ALLOWING because it is configured to fail open");
                OnFault::Continue
            }
        }
    }

    fn timed<R>(
        &self,
        f: &WasmFilter,
        hook: &'static str,
        run: impl FnOnce() -> Result<R, Fault>,
    ) -> Result<R, Fault> {
        let t = Instant::now();
        let out = run();
        let outcome = if out.is_ok() { "ok" } else { "fault" };
        self.metrics.evaluated(
            f.counters(),
            &f.name,
            hook,
            outcome,
            t.elapsed().as_secs_f64(),
        );
        out
    }

    fn accept_json(&self, text: &str, object_only: bool) -> Result<Box<RawValue>, Fault> {
        accept_json(text, self.max_json_depth, object_only)
    }

    /// Reports what a shadow rule or filter would have done to this
    /// message: an audit record (`shadow_<decision>`) and a count. Nothing
    /// else: the message goes on as the enforced policy decided.
    fn shadow(&self, req: &Request<'_>, decision: Shadowed, by: &str, reason: &str) {
        self.metrics.decided(Mode::Shadow, decision.label(), by);
        Record::for_call(req.principal, req.call, req.session)
            .decided(decision.audit(), by, reason)
            .emit();
    }

    /// A shadow filter's fault is reported like its other would-be
    /// decisions, and never denies.
    fn shadow_fault(&self, req: &Request<'_>, f: &WasmFilter, hook: &str, fault: &Fault) {
        self.metrics.fault(&f.name, fault.kind());
        tracing::warn!(filter = %f.name, hook, fault = %fault, "shadow filter failed; not enforced");
        self.shadow(req, Shadowed::Fault, &by(&[&f.name]), &fault.to_string());
    }

    /// Reports the items a shadow rule or filter would have hidden.
    fn shadow_hidden(
        &self,
        principal: &Principal,
        kind: ListKind,
        items: &[ListItem<'_>],
        hidden: &[usize],
        by: &str,
    ) {
        if hidden.is_empty() {
            return;
        }
        let names: Vec<&str> = hidden
            .iter()
            .filter_map(|i| items.get(*i))
            .map(|it| it.name)
            .collect();
        self.metrics.decided(Mode::Shadow, "hide", by);
        tracing::info!(
            target: "portcullis::audit",
            caller = %principal,
            list = kind.key(),
            decision = "shadow_hide",
            by,
            items = ?names,
        );
    }

    /// Counts an enforced decision.
    fn enforced(&self, decision: &'static str, by: &str) {
        self.metrics.decided(Mode::Enforce, decision, by);
    }
}

/// What a shadow rule or filter would have done.
#[derive(Debug, Clone, Copy)]
enum Shadowed {
    Deny,
    Rewrite,
    DenyResult,
    ReplaceResult,
    Fault,
}

impl Shadowed {
    fn label(self) -> &'static str {
        match self {
            Self::Deny => "deny",
            Self::Rewrite => "rewrite",
            Self::DenyResult => "deny_result",
            Self::ReplaceResult => "replace_result",
            Self::Fault => "fault",
        }
    }

    fn audit(self) -> &'static str {
        match self {
            Self::Deny => "shadow_deny",
            Self::Rewrite => "shadow_rewrite",
            Self::DenyResult => "shadow_deny_result",
            Self::ReplaceResult => "shadow_replace_result",
            Self::Fault => "shadow_fault",
        }
    }
}

/// What a filter returns as JSON must be strict JSON (no duplicate keys,
/// bounded depth) before anything else reads it: an object when
/// `object_only` (rewritten arguments).
pub(crate) fn accept_json(
    text: &str,
    max_depth: usize,
    object_only: bool,
) -> Result<Box<RawValue>, Fault> {
    json::validate(text.as_bytes(), max_depth).map_err(|e| Fault::BadJson(e.to_string()))?;
    if object_only && !text.trim_start().starts_with('{') {
        return Err(Fault::BadJson(
            "rewritten arguments must be an object".into(),
        ));
    }
    RawValue::from_string(text.to_string()).map_err(|e| Fault::BadJson(e.to_string()))
}

/// A guest's answer to `on-request`, decoded: a rewrite is checked before
/// the next filter sees it.
pub(crate) fn decode_request(d: types::Decision, max_depth: usize) -> Result<Step, Fault> {
    match d {
        types::Decision::RewriteArguments(text) => {
            accept_json(&text, max_depth, true).map(Step::Rewrite)
        }
        types::Decision::Allow => Ok(Step::Allow),
        types::Decision::Deny(d) => Ok(Step::Deny(d)),
    }
}

/// A guest's denial code: 0 means "none given".
pub(crate) fn denial_code(code: i32) -> Option<i64> {
    (code != 0).then_some(i64::from(code))
}

/// Folds one filter's list verdicts into `shown`. A short answer hides the
/// rest: fail closed.
pub(crate) fn merge_verdicts(shown: &mut [bool], verdicts: &[bool]) {
    for (i, s) in shown.iter_mut().enumerate() {
        *s = *s && verdicts.get(i).copied().unwrap_or(false);
    }
}

/// How denials, rewrites and audit records name the filters that decided.
fn by(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("filter:{n}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn denial(f: &WasmFilter, d: types::Denial) -> Denial {
    Denial {
        by: by(&[&f.name]),
        reason: d.message,
        code: denial_code(d.code),
    }
}

impl FilterChain {
    /// The rules, then each filter; shadow rules and filters are reported
    /// on the way and change nothing.
    fn decide(&self, req: &Request<'_>) -> Decision {
        if let d @ Decision::Deny(_) = self.rules.check(req) {
            return d;
        }
        if let Some(d) = self.rules.shadow_denial(req) {
            self.shadow(req, Shadowed::Deny, &d.by, &d.reason);
        }
        // Each filter's WIT call borrows the request's text (and the
        // arguments as they stand), so building one per filter copies
        // nothing, however large the arguments (`convert::call`).
        let mut rewritten: Option<Box<RawValue>> = None;
        let mut rewritten_by: Vec<&str> = Vec::new();
        for f in self.filters.iter().filter(|f| f.handles(Hook::Request)) {
            let arguments = rewritten
                .as_deref()
                .or(req.call.arguments.as_deref())
                .map(RawValue::get);
            let outcome = self
                .timed(f, "request", || f.on_request(req, arguments))
                .and_then(|d| decode_request(d, self.max_json_depth));
            if f.mode == Mode::Shadow {
                let name = by(&[&f.name]);
                match outcome {
                    Ok(Step::Allow) => {}
                    Ok(Step::Deny(d)) => self.shadow(req, Shadowed::Deny, &name, &d.message),
                    Ok(Step::Rewrite(_)) => self.shadow(req, Shadowed::Rewrite, &name, ""),
                    Err(fault) => self.shadow_fault(req, f, "request", &fault),
                }
                continue;
            }
            match outcome {
                Ok(Step::Allow) => {}
                Ok(Step::Deny(d)) => return Decision::Deny(denial(f, d)),
                Ok(Step::Rewrite(new)) => {
                    rewritten = Some(new);
                    rewritten_by.push(&f.name);
                }
                Err(fault) => match self.fault(f, "request", &fault) {
                    OnFault::Deny(d) => return Decision::Deny(d),
                    OnFault::Continue => {}
                },
            }
        }
        match rewritten {
            Some(arguments) => Decision::Rewrite {
                arguments,
                by: by(&rewritten_by),
            },
            None => Decision::Allow,
        }
    }

    fn decide_result(&self, req: &Request<'_>, result: &RawValue) -> ResultDecision {
        let lists = convert::Lists::new(req, None);
        let call = convert::call(
            req,
            req.call.arguments.as_deref().map(RawValue::get),
            &lists,
        );
        let mut current: Option<(Box<RawValue>, Vec<&str>)> = None;
        for f in self.filters.iter().filter(|f| f.handles(Hook::Result)) {
            let text = current.as_ref().map_or(result.get(), |(r, _)| r.get());
            let key = req.principal.key();
            let outcome = self.timed(f, "result", || f.on_result(&call, text, key));
            if f.mode == Mode::Shadow {
                let name = by(&[&f.name]);
                match outcome {
                    Ok(types::ResultDecision::Allow) => {}
                    Ok(types::ResultDecision::Deny(d)) => {
                        self.shadow(req, Shadowed::DenyResult, &name, &d.message)
                    }
                    Ok(types::ResultDecision::Replace(_)) => {
                        self.shadow(req, Shadowed::ReplaceResult, &name, "")
                    }
                    Err(fault) => self.shadow_fault(req, f, "result", &fault),
                }
                continue;
            }
            match outcome {
                Ok(types::ResultDecision::Allow) => {}
                Ok(types::ResultDecision::Deny(d)) => return ResultDecision::Deny(denial(f, d)),
                Ok(types::ResultDecision::Replace(new)) => match self.accept_json(&new, false) {
                    Ok(raw) => {
                        let mut names = current.map(|(_, names)| names).unwrap_or_default();
                        names.push(&f.name);
                        current = Some((raw, names));
                    }
                    Err(fault) => {
                        if let OnFault::Deny(d) = self.fault(f, "result", &fault) {
                            return ResultDecision::Deny(d);
                        }
                    }
                },
                Err(fault) => {
                    if let OnFault::Deny(d) = self.fault(f, "result", &fault) {
                        return ResultDecision::Deny(d);
                    }
                }
            }
        }
        match current {
            Some((result, names)) => ResultDecision::Replace {
                result,
                by: by(&names),
            },
            None => ResultDecision::Allow,
        }
    }
}

impl Policy for FilterChain {
    fn check(&self, req: &Request<'_>) -> Decision {
        let decision = self.decide(req);
        match &decision {
            Decision::Allow => self.metrics.allowed(),
            Decision::Deny(d) => self.enforced("deny", &d.by),
            Decision::Rewrite { by, .. } => self.enforced("rewrite", by),
        }
        decision
    }

    fn check_result(&self, req: &Request<'_>, result: &RawValue) -> ResultDecision {
        let decision = self.decide_result(req, result);
        match &decision {
            ResultDecision::Allow => {}
            ResultDecision::Deny(d) => self.enforced("deny_result", &d.by),
            ResultDecision::Replace { by, .. } => self.enforced("replace_result", by),
        }
        decision
    }

    fn visible(&self, principal: &Principal, kind: ListKind, items: &[ListItem<'_>]) -> Vec<bool> {
        let mut shown = self.rules.visible(principal, kind, items);
        shown.resize(items.len(), false);
        let hidden = self.rules.shadow_hidden(principal, kind, items, &shown);
        self.shadow_hidden(principal, kind, items, &hidden, "static");
        let lists = convert::Lists::of_principal(principal);
        let (wit_principal, wit_kind, wit_items) = (
            convert::principal(principal, &lists),
            convert::list_kind(kind),
            convert::list_items(items),
        );
        for f in self.filters.iter().filter(|f| f.handles(Hook::List)) {
            let outcome = self.timed(f, "list", || {
                f.on_list(&wit_principal, principal.key(), wit_kind, &wit_items)
            });
            if f.mode == Mode::Shadow {
                let name = by(&[&f.name]);
                match outcome {
                    Ok(verdicts) => {
                        let mut would = shown.clone();
                        merge_verdicts(&mut would, &verdicts);
                        let hidden: Vec<usize> = (0..shown.len())
                            .filter(|i| shown[*i] && !would[*i])
                            .collect();
                        self.shadow_hidden(principal, kind, items, &hidden, &name);
                    }
                    Err(fault) => {
                        self.metrics.fault(&f.name, fault.kind());
                        self.metrics.decided(Mode::Shadow, "fault", &name);
                        tracing::warn!(filter = %f.name, hook = "list", fault = %fault, "shadow filter failed; not enforced");
                    }
                }
                continue;
            }
            match outcome {
                Ok(verdicts) => merge_verdicts(&mut shown, &verdicts),
                Err(fault) => {
                    if let OnFault::Deny(_) = self.fault(f, "list", &fault) {
                        return vec![false; items.len()];
                    }
                }
            }
        }
        shown
    }

    fn inspects_results(&self) -> bool {
        self.filters.iter().any(|f| f.handles(Hook::Result))
    }
}

/// One filter's answer to a request, with a rewrite already checked.
pub(crate) enum Step {
    Allow,
    Deny(types::Denial),
    Rewrite(Box<RawValue>),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the libFuzzer `filter_decode` target: a rewrite with JSON
    /// whitespace around the object is taken as the object alone, and what
    /// is forwarded is exactly what was checked.
    #[test]
    fn fuzz_regression_rewrite_whitespace() {
        let raw = accept_json("\n{\n\r\n\"a\":1}\r\n", 64, true).unwrap();
        assert_eq!(raw.get(), "{\n\r\n\"a\":1}");
        assert!(json::validate(raw.get().as_bytes(), 64).is_ok());
        // Other whitespace is no JSON whitespace: refused.
        assert!(accept_json("\u{a0}{}", 64, true).is_err());
    }
}

//! `cedar`: MCP calls and lists decided by Cedar policies.
//!
//! The policies, and optionally a schema and entities, come from the
//! filter's config. They are parsed and validated against the schema
//! (strict mode) once per instance, when the config is first read; a
//! policy the validator rejects refuses the load with Cedar's own
//! messages. Each call becomes one Cedar request (see `mcp.cedarschema`
//! for the mapping); a listed item is shown exactly when a call of it,
//! without arguments, would be allowed.
//!
//! One departure from Cedar's own semantics, on purpose: Cedar skips a
//! policy whose evaluation errors, so an erroring `forbid` would let the
//! call through. This filter denies whenever any policy errored.

use std::{collections::HashSet, str::FromStr};

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, PolicySet, Request, Response, RestrictedExpression, Schema, ValidationMode,
    Validator,
};
use portcullis_policy_sdk::{prelude::*, Header};
use serde::Deserialize;
use serde_json::Value;

/// The published schema: what the filter builds requests against, unless
/// the config brings its own (which must declare the same types).
pub const MCP_SCHEMA: &str = include_str!("../mcp.cedarschema");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// Cedar policies, as text.
    policies: String,
    /// A Cedar schema (human syntax) replacing the published one, for
    /// instance one that adds your own entity types for `entities`.
    #[serde(default)]
    schema: Option<String>,
    /// Cedar entities (the JSON entity format): groups and who is in them.
    #[serde(default)]
    entities: Option<Value>,
}

/// The parsed and validated policy state of one instance.
#[derive(Deserialize)]
#[serde(try_from = "RawConfig")]
pub struct Config {
    policies: PolicySet,
    schema: Schema,
    entities: Entities,
    authorizer: Authorizer,
}

impl TryFrom<RawConfig> for Config {
    type Error = String;

    fn try_from(raw: RawConfig) -> Result<Self, String> {
        let text = raw.schema.as_deref().unwrap_or(MCP_SCHEMA);
        let (schema, _warnings) =
            Schema::from_cedarschema_str(text).map_err(|e| format!("cedar schema: {e}"))?;
        let policies =
            PolicySet::from_str(&raw.policies).map_err(|e| format!("cedar policies: {e}"))?;
        let validation = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        if !validation.validation_passed() {
            let errors: Vec<String> = validation
                .validation_errors()
                .map(|e| e.to_string())
                .collect();
            return Err(format!(
                "cedar policies do not validate against the schema: {}",
                errors.join("; ")
            ));
        }
        let entities = match raw.entities {
            None => Entities::empty(),
            Some(v) => Entities::from_json_value(v, Some(&schema))
                .map_err(|e| format!("cedar entities: {e}"))?,
        };
        Ok(Self {
            policies,
            schema,
            entities,
            authorizer: Authorizer::new(),
        })
    }
}

/// What a request is about, for `context.kind`.
#[derive(Clone, Copy)]
enum Kind {
    Call,
    List,
    Related,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Call => "call",
            Self::List => "list",
            Self::Related => "related",
        }
    }
}

/// One Cedar question: may `principal` do `action` to `resource`?
struct Question<'a> {
    principal: &'a Principal,
    action: &'static str,
    target: TargetKind,
    name: &'a str,
    kind: Kind,
    method: &'a str,
    arguments: Option<&'a str>,
    annotations: Option<&'a str>,
    era: &'a str,
    instance: &'a str,
    headers: &'a [Header],
}

/// Why a Cedar evaluation could not be set up. Every one denies.
type Failure = String;

fn uid(type_name: &str, id: &str) -> Result<EntityUid, Failure> {
    let t = EntityTypeName::from_str(type_name).map_err(|e| e.to_string())?;
    Ok(EntityUid::from_type_name_and_id(t, EntityId::new(id)))
}

fn string(s: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(s.to_string())
}

fn record(
    fields: impl IntoIterator<Item = (String, RestrictedExpression)>,
) -> Result<RestrictedExpression, Failure> {
    RestrictedExpression::new_record(fields).map_err(|e| e.to_string())
}

/// The principal: the workload if one is known, else the token's user,
/// else anonymous. Its parents (groups) come from the configured entities.
fn principal_entity(config: &Config, p: &Principal) -> Result<Entity, Failure> {
    let (uid, attrs) = match (p.spiffe_id(), &p.token) {
        (Some(id), _) => {
            let rest = id.strip_prefix("spiffe://").unwrap_or(id);
            let (td, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
            (
                uid("Mcp::Agent", id)?,
                vec![
                    ("trust_domain".to_string(), string(td)),
                    ("path".to_string(), string(path)),
                ],
            )
        }
        (None, Some(t)) => (uid("Mcp::User", &t.subject)?, vec![]),
        (None, None) => (uid("Mcp::Anonymous", "anonymous")?, vec![]),
    };
    let parents: HashSet<EntityUid> = config
        .entities
        .get(&uid)
        .cloned()
        .map(|e| e.into_inner().2)
        .unwrap_or_default();
    Entity::new(uid, attrs.into_iter().collect(), parents).map_err(|e| e.to_string())
}

/// The tool's known boolean hints; anything else the server says is
/// dropped (the schema's record is closed).
fn annotations(text: Option<&str>) -> Result<RestrictedExpression, Failure> {
    const HINTS: [&str; 4] = [
        "readOnlyHint",
        "destructiveHint",
        "idempotentHint",
        "openWorldHint",
    ];
    let value: Value = match text {
        Some(t) => serde_json::from_str(t).map_err(|e| format!("annotations: {e}"))?,
        None => Value::Null,
    };
    record(HINTS.iter().filter_map(|h| {
        let b = value.get(*h)?.as_bool()?;
        Some((h.to_string(), RestrictedExpression::new_bool(b)))
    }))
}

/// The arguments as tags: a string as itself, any other value as its JSON
/// text. Arguments are never handed to Cedar's JSON parser, whose
/// `__entity`/`__extn` escapes would let a caller mint entity references.
fn argument_tags(text: Option<&str>) -> Result<Vec<(String, RestrictedExpression)>, Failure> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    match serde_json::from_str::<Value>(text).map_err(|e| format!("arguments: {e}"))? {
        Value::Object(map) => Ok(map
            .into_iter()
            .map(|(k, v)| {
                let s = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, RestrictedExpression::new_string(s))
            })
            .collect()),
        Value::Null => Ok(Vec::new()),
        other => Err(format!("arguments must be an object, not {other}")),
    }
}

fn resource_entity(q: &Question<'_>) -> Result<Entity, Failure> {
    let tags = argument_tags(q.arguments)?;
    match q.target {
        TargetKind::Tool => Entity::new_with_tags(
            uid("Mcp::Tool", q.name)?,
            [
                ("name".to_string(), string(q.name)),
                ("annotations".to_string(), annotations(q.annotations)?),
            ],
            [],
            tags,
        ),
        TargetKind::Prompt => Entity::new_with_tags(
            uid("Mcp::Prompt", q.name)?,
            [("name".to_string(), string(q.name))],
            [],
            tags,
        ),
        TargetKind::Resource => Entity::new_with_tags(
            uid("Mcp::Resource", q.name)?,
            [("uri".to_string(), string(q.name))],
            [],
            [],
        ),
    }
    .map_err(|e| e.to_string())
}

fn context(q: &Question<'_>) -> Result<Context, Failure> {
    let mut fields = vec![
        ("kind".to_string(), string(q.kind.as_str())),
        ("method".to_string(), string(q.method)),
        ("era".to_string(), string(q.era)),
        ("instance".to_string(), string(q.instance)),
    ];
    if let Some(t) = q
        .principal
        .token
        .as_ref()
        .filter(|t| t.kind == TokenKind::AccessToken)
    {
        let mut user = vec![
            ("subject".to_string(), string(&t.subject)),
            ("issuer".to_string(), string(&t.issuer)),
            (
                "scopes".to_string(),
                RestrictedExpression::new_set(t.scopes.iter().map(|s| string(s))),
            ),
        ];
        if let Some(a) = &t.actor {
            user.push(("actor".to_string(), string(a)));
        }
        fields.push(("user".to_string(), record(user)?));
    }
    let headers = q
        .headers
        .iter()
        .map(|h| {
            record([
                ("name".to_string(), string(&h.name)),
                ("value".to_string(), string(&h.value)),
            ])
        })
        .collect::<Result<Vec<_>, _>>()?;
    fields.push((
        "headers".to_string(),
        RestrictedExpression::new_set(headers),
    ));
    Context::from_pairs(fields).map_err(|e| e.to_string())
}

fn action_for(target: TargetKind, method: &str) -> &'static str {
    match (target, method) {
        (TargetKind::Resource, "resources/subscribe") => "resources/subscribe",
        (TargetKind::Resource, "resources/unsubscribe") => "resources/unsubscribe",
        (kind, _) => kind.call_method(),
    }
}

/// Asks Cedar one question against `entities` (which must hold the
/// principal and the resource).
fn ask(
    config: &Config,
    entities: &Entities,
    principal: &EntityUid,
    q: &Question<'_>,
) -> Result<Response, Failure> {
    let resource = match q.target {
        TargetKind::Tool => uid("Mcp::Tool", q.name)?,
        TargetKind::Prompt => uid("Mcp::Prompt", q.name)?,
        TargetKind::Resource => uid("Mcp::Resource", q.name)?,
    };
    let request = Request::new(
        principal.clone(),
        uid("Mcp::Action", q.action)?,
        resource,
        context(q)?,
        Some(&config.schema),
    )
    .map_err(|e| format!("cedar request: {e}"))?;
    Ok(config
        .authorizer
        .is_authorized(&request, &config.policies, entities))
}

/// Allow only on Cedar's Allow with no policy in error.
fn verdict(config: &Config, response: &Response, q: &Question<'_>) -> Result<(), String> {
    let errors: Vec<String> = response
        .diagnostics()
        .errors()
        .map(|e| e.to_string())
        .collect();
    if !errors.is_empty() {
        return Err(format!(
            "a Cedar policy failed to evaluate, so the call is denied: {}",
            errors.join("; ")
        ));
    }
    if response.decision() == CedarDecision::Allow {
        return Ok(());
    }
    let reasons: Vec<String> = response
        .diagnostics()
        .reason()
        .map(|id| {
            config
                .policies
                .annotation(id, "reason")
                .map_or_else(|| format!("forbidden by policy {id}"), str::to_string)
        })
        .collect();
    if reasons.is_empty() {
        Err(format!(
            "no Cedar policy permits {} to {} {}",
            q.principal.describe(),
            q.action,
            q.name
        ))
    } else {
        Err(reasons.join("; "))
    }
}

fn decide(config: &Config, q: &Question<'_>) -> Result<(), String> {
    let principal = principal_entity(config, q.principal)?;
    let principal_uid = principal.uid();
    let entities = config
        .entities
        .clone()
        .upsert_entities([principal, resource_entity(q)?], Some(&config.schema))
        .map_err(|e| format!("cedar entities: {e}"))?;
    let response = ask(config, &entities, &principal_uid, q)?;
    verdict(config, &response, q)
}

fn list_question<'a>(
    principal: &'a Principal,
    target: TargetKind,
    item: &'a ListItem,
) -> Question<'a> {
    Question {
        principal,
        action: action_for(target, ""),
        target,
        name: &item.name,
        kind: Kind::List,
        method: "",
        arguments: None,
        annotations: item.annotations.as_deref(),
        era: "",
        instance: "",
        headers: &[],
    }
}

/// The list's answers, one Cedar request per item against one entity set.
fn visible(
    config: &Config,
    principal: &Principal,
    kind: ListKind,
    items: &[ListItem],
) -> Result<Vec<bool>, Failure> {
    let target = kind.target_kind();
    let question = |item| list_question(principal, target, item);
    let principal_entity = principal_entity(config, principal)?;
    let principal_uid = principal_entity.uid();
    let mut all = vec![principal_entity];
    for item in items {
        all.push(resource_entity(&question(item))?);
    }
    let entities = config
        .entities
        .clone()
        .upsert_entities(all, Some(&config.schema))
        .map_err(|e| format!("cedar entities: {e}"))?;
    items
        .iter()
        .map(|item| {
            let q = question(item);
            let response = ask(config, &entities, &principal_uid, &q)?;
            Ok(verdict(config, &response, &q).is_ok())
        })
        .collect()
}

pub struct Cedar;

impl Filter for Cedar {
    type Config = Config;

    fn on_request(config: &Config, call: &Call) -> Decision {
        let Some(target) = &call.target else {
            // Nothing to authorize: initialize, ping, lists (filtered item
            // by item), notifications.
            return Decision::Allow;
        };
        let own_call = call.is_target_call();
        let q = Question {
            principal: &call.principal,
            action: action_for(target.kind, &call.method),
            target: target.kind,
            name: &target.name,
            kind: if own_call { Kind::Call } else { Kind::Related },
            method: &call.method,
            arguments: if own_call {
                call.arguments.as_deref()
            } else {
                None
            },
            annotations: call.annotations.as_deref(),
            era: &call.era,
            instance: &call.instance,
            headers: &call.headers,
        };
        match decide(config, &q) {
            Ok(()) => Decision::Allow,
            Err(why) => Decision::deny(why),
        }
    }

    fn on_list(
        config: &Config,
        principal: &Principal,
        kind: ListKind,
        items: &[ListItem],
    ) -> Vec<bool> {
        visible(config, principal, kind, items).unwrap_or_else(|why| {
            host::log(
                host::Level::Error,
                &format!("cedar: list hidden whole: {why}"),
            );
            vec![false; items.len()]
        })
    }
}

export_filter!(Cedar);

#[cfg(test)]
mod tests;

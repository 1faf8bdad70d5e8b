//! What a filter sees of a message.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Who is calling, as the sidecar verified it: the agent (the mTLS peer)
/// and, when the request carried one, the user (a verified token). A
/// filter can require both: "agent X may call T only for users with scope
/// S".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The SPIFFE ID of the peer's verified X.509-SVID.
    pub peer: Option<String>,
    pub token: Option<Token>,
    /// The host's one spelling of this principal: `anonymous` or the
    /// peer's SPIFFE ID, then ` token:<issuer>#<subject>` with a token.
    pub key: String,
}

impl Default for Principal {
    fn default() -> Self {
        Self::new(None, None)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenKind {
    /// An OAuth access token from a configured issuer.
    #[default]
    AccessToken,
    /// A SPIFFE JWT-SVID.
    JwtSvid,
}

/// A bearer token the sidecar verified. The token itself never reaches a
/// filter, only what was verified about it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Token {
    pub kind: TokenKind,
    /// The configured issuer (for a JWT-SVID, `spiffe://<trust domain>`).
    pub issuer: String,
    /// `sub`: the user, or for a JWT-SVID the workload's SPIFFE ID.
    pub subject: String,
    pub scopes: Vec<String>,
    /// `act.sub`, `azp` or `client_id`, when the token names one.
    pub actor: Option<String>,
    /// `exp`, in milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
    /// Every verified claim, as a JSON object's text.
    pub claims: String,
}

impl Principal {
    /// A principal with the host's key spelling.
    pub fn new(peer: Option<String>, token: Option<Token>) -> Self {
        let who = peer.as_deref().unwrap_or("anonymous");
        let key = match &token {
            Some(t) => format!("{who} token:{}#{}", t.issuer, t.subject),
            None => who.to_string(),
        };
        Self { peer, token, key }
    }

    /// The workload's SPIFFE ID: the mTLS peer's, else a JWT-SVID's
    /// subject. An access token's subject is a user, never this.
    pub fn spiffe_id(&self) -> Option<&str> {
        self.peer.as_deref().or_else(|| {
            self.token
                .as_ref()
                .filter(|t| t.kind == TokenKind::JwtSvid)
                .map(|t| t.subject.as_str())
        })
    }

    /// The token's subject (the user), if a token was verified.
    pub fn subject(&self) -> Option<&str> {
        self.token.as_ref().map(|t| t.subject.as_str())
    }

    /// The scopes the token grants; none without a token.
    pub fn scopes(&self) -> &[String] {
        self.token.as_ref().map_or(&[], |t| t.scopes.as_slice())
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes().iter().any(|s| s == scope)
    }

    /// The party the token says acts for the subject.
    pub fn actor(&self) -> Option<&str> {
        self.token.as_ref().and_then(|t| t.actor.as_deref())
    }

    /// A verified claim of the token.
    pub fn claim(&self, name: &str) -> Option<Value> {
        let claims = &self.token.as_ref()?.claims;
        serde_json::from_str::<Value>(claims)
            .ok()?
            .get(name)
            .cloned()
    }

    pub fn is_anonymous(&self) -> bool {
        self.peer.is_none() && self.token.is_none()
    }

    /// Who this is, for a denial message: the user, with the agent acting
    /// for them when both are known.
    pub fn describe(&self) -> String {
        match (self.spiffe_id(), &self.token) {
            (Some(id), Some(t)) if t.kind == TokenKind::AccessToken => {
                format!("{} via {id}", t.subject)
            }
            (Some(id), _) => id.to_string(),
            (None, Some(t)) => t.subject.clone(),
            (None, None) => "an anonymous caller".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Request,
    Notification,
    Response,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    Tool,
    Prompt,
    Resource,
}

impl TargetKind {
    /// The method that uses a target of this kind: what a listed item is
    /// judged as ("may this caller use it?").
    pub fn call_method(self) -> &'static str {
        match self {
            Self::Tool => "tools/call",
            Self::Prompt => "prompts/get",
            Self::Resource => "resources/read",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: TargetKind,
    /// A tool or prompt name, or a resource URI.
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// One JSON-RPC message on its way to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub kind: MessageKind,
    pub method: String,
    /// The JSON-RPC id as JSON text.
    pub id: Option<String>,
    pub target: Option<Target>,
    /// `params.arguments` as JSON text, as the client sent it.
    pub arguments: Option<String>,
    pub principal: Principal,
    pub session: Option<String>,
    pub instance: String,
    pub era: String,
    pub headers: Vec<Header>,
    /// The tool's annotations from the last `tools/list`, as JSON text.
    pub annotations: Option<String>,
}

impl Call {
    /// The tool name, for `tools/call` only. A task call (`tasks/get`...)
    /// is also aimed at a tool, the one whose call created the task, so
    /// that rules on `call.target` cover it; it carries no arguments and
    /// is not a new call of the tool, so rate limits and argument checks
    /// keyed on this name leave it alone.
    pub fn tool_name(&self) -> Option<&str> {
        (self.method == "tools/call")
            .then(|| self.target_of(TargetKind::Tool))
            .flatten()
    }

    /// For a task call, the tool whose call created the task.
    pub fn task_tool(&self) -> Option<&str> {
        (self.method != "tools/call")
            .then(|| self.target_of(TargetKind::Tool))
            .flatten()
    }

    /// Whether this message is its target's own use (`tools/call` of a
    /// tool, `prompts/get`, `resources/read`, `resources/subscribe` or
    /// `resources/unsubscribe`) rather than a message about it (a task of
    /// a tool's call, a completion for a prompt), which carries no
    /// arguments of the target's.
    pub fn is_target_call(&self) -> bool {
        matches!(
            (self.target.as_ref().map(|t| t.kind), self.method.as_str()),
            (Some(TargetKind::Tool), "tools/call")
                | (Some(TargetKind::Prompt), "prompts/get")
                | (
                    Some(TargetKind::Resource),
                    "resources/read" | "resources/subscribe" | "resources/unsubscribe"
                )
        )
    }

    pub fn prompt_name(&self) -> Option<&str> {
        self.target_of(TargetKind::Prompt)
    }

    pub fn resource_uri(&self) -> Option<&str> {
        self.target_of(TargetKind::Resource)
    }

    fn target_of(&self, kind: TargetKind) -> Option<&str> {
        self.target
            .as_ref()
            .filter(|t| t.kind == kind)
            .map(|t| t.name.as_str())
    }

    /// The arguments parsed into your own type.
    pub fn args<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.arguments.as_deref().unwrap_or("{}"))
    }

    /// The arguments as a JSON value (`null` when there are none or they do
    /// not parse).
    pub fn args_value(&self) -> Value {
        self.arguments
            .as_deref()
            .and_then(|a| serde_json::from_str(a).ok())
            .unwrap_or(Value::Null)
    }

    /// A boolean tool annotation such as `destructiveHint`. Annotations are
    /// hints from the server, not guarantees.
    pub fn annotation(&self, name: &str) -> Option<bool> {
        let a: Value = serde_json::from_str(self.annotations.as_deref()?).ok()?;
        a.get(name)?.as_bool()
    }

    /// A request header by (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.value.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Tools,
    Prompts,
    Resources,
    ResourceTemplates,
}

impl ListKind {
    /// The kind of target an item of this list is.
    pub fn target_kind(self) -> TargetKind {
        match self {
            Self::Tools => TargetKind::Tool,
            Self::Prompts => TargetKind::Prompt,
            Self::Resources | Self::ResourceTemplates => TargetKind::Resource,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListItem {
    pub name: String,
    pub annotations: Option<String>,
}

//! What a filter sees of a message.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Who is calling, as the sidecar verified it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Caller {
    #[default]
    Anonymous,
    /// A SPIFFE ID, e.g. `spiffe://td/ns/x/sa/y`.
    Spiffe(String),
    /// Verified JWT claims, as a JSON object's text.
    Jwt(String),
}

impl Caller {
    pub fn spiffe_id(&self) -> Option<&str> {
        match self {
            Self::Spiffe(id) => Some(id),
            _ => None,
        }
    }

    /// A JWT claim, if the caller has verified claims.
    pub fn claim(&self, name: &str) -> Option<Value> {
        match self {
            Self::Jwt(json) => serde_json::from_str::<Value>(json).ok()?.get(name).cloned(),
            _ => None,
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
    pub caller: Caller,
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

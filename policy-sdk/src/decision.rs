//! What a filter answers.

/// The host's default error code for a denial (`-32051`).
pub const DEFAULT_DENY_CODE: i32 = 0;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// A JSON-RPC error code; 0 lets the host use `-32051`.
    pub code: i32,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(Denial),
    /// Replace the call's arguments with this JSON object.
    RewriteArguments(serde_json::Value),
}

impl Decision {
    pub fn deny(message: impl Into<String>) -> Self {
        Self::Deny(Denial {
            code: DEFAULT_DENY_CODE,
            message: message.into(),
        })
    }

    pub fn deny_with_code(code: i32, message: impl Into<String>) -> Self {
        Self::Deny(Denial {
            code,
            message: message.into(),
        })
    }

    /// Asserts (in tests) that the decision allows.
    #[track_caller]
    pub fn assert_allowed(&self) {
        assert!(matches!(self, Self::Allow), "expected allow, got {self:?}");
    }

    /// Asserts (in tests) that the decision denies with a message that
    /// contains `needle`.
    #[track_caller]
    pub fn assert_denied(&self, needle: &str) {
        match self {
            Self::Deny(d) => assert!(
                d.message.contains(needle),
                "denial {:?} does not mention {needle:?}",
                d.message
            ),
            other => panic!("expected a denial mentioning {needle:?}, got {other:?}"),
        }
    }

    /// Asserts (in tests) that the arguments were rewritten, and returns them.
    #[track_caller]
    pub fn assert_rewritten(&self) -> &serde_json::Value {
        match self {
            Self::RewriteArguments(v) => v,
            other => panic!("expected rewritten arguments, got {other:?}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultDecision {
    Allow,
    /// Replace the whole `result` with this JSON value.
    Replace(serde_json::Value),
    Deny(Denial),
}

impl ResultDecision {
    pub fn deny(message: impl Into<String>) -> Self {
        Self::Deny(Denial {
            code: DEFAULT_DENY_CODE,
            message: message.into(),
        })
    }

    /// Asserts (in tests) that the result was replaced, and returns it.
    #[track_caller]
    pub fn assert_replaced(&self) -> &serde_json::Value {
        match self {
            Self::Replace(v) => v,
            other => panic!("expected a replaced result, got {other:?}"),
        }
    }
}

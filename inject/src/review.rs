//! AdmissionReview v1 on the wire.
//!
//! Own structs rather than kube-core's: kube-core 5 serializes
//! `AdmissionResponse.patch` (a `Vec<u8>`) as an array of numbers, while the
//! apiserver requires a base64 string (kube-rs/kube#1781).

use base64::Engine;
use json_patch::PatchOperation;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::mutate::{mutate, Decision, NamespaceInfo};
use crate::pod::PodObject;
use crate::settings::InjectSettings;

pub const API_VERSION: &str = "admission.k8s.io/v1";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReview {
    pub api_version: String,
    pub kind: String,
    pub request: Option<AdmissionRequest>,
}

/// The fields the webhook reads; the rest of the request is ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    pub uid: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub operation: Option<String>,
    #[serde(default)]
    pub kind: Option<GroupVersionKind>,
    #[serde(default)]
    pub object: Option<Value>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReviewResponse {
    pub api_version: String,
    pub kind: String,
    pub response: AdmissionResponse,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    pub uid: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Present iff `patch` is: a patchType without a patch is rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<String>,
    /// Base64 of the JSON Patch array: a string, never bytes-as-numbers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub code: u16,
    pub message: String,
}

/// How a review ended, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Injected,
    Skipped,
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Injected => "injected",
            Self::Skipped => "skipped",
            Self::Denied => "denied",
        }
    }
}

/// A review that cannot even be answered (no uid to echo).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("the body is not an AdmissionReview: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("unsupported AdmissionReview {0}, only {API_VERSION} is served")]
    Version(String),
    #[error("the AdmissionReview has no request")]
    NoRequest,
}

pub fn parse(body: &[u8]) -> Result<AdmissionRequest, ReviewError> {
    let review: AdmissionReview = serde_json::from_slice(body)?;
    if review.api_version != API_VERSION || review.kind != "AdmissionReview" {
        return Err(ReviewError::Version(format!(
            "{}/{}",
            review.api_version, review.kind
        )));
    }
    review.request.ok_or(ReviewError::NoRequest)
}

/// Answers one request. dryRun needs nothing special: the webhook has no
/// side effects, so the answer is the same.
pub fn answer(
    req: AdmissionRequest,
    settings: &InjectSettings,
) -> (AdmissionReviewResponse, Outcome) {
    let namespace = req.namespace.clone().unwrap_or_default();
    let (response, outcome) = match decide(&req, &namespace, settings) {
        Ok(Decision::Patch { ops, warnings }) => {
            (patched(&req.uid, &ops, warnings), Outcome::Injected)
        }
        Ok(Decision::Skip { reason, warn }) => {
            let warnings = if warn { vec![reason] } else { Vec::new() };
            (allowed(&req.uid, warnings), Outcome::Skipped)
        }
        Err(message) => (denied(&req.uid, message), Outcome::Denied),
    };
    let review = AdmissionReviewResponse {
        api_version: API_VERSION.into(),
        kind: "AdmissionReview".into(),
        response,
    };
    (review, outcome)
}

fn decide(
    req: &AdmissionRequest,
    namespace: &str,
    settings: &InjectSettings,
) -> Result<Decision, String> {
    let is_pod = req
        .kind
        .as_ref()
        .is_some_and(|k| k.group.is_empty() && k.version == "v1" && k.kind == "Pod");
    if !is_pod || req.operation.as_deref() != Some("CREATE") {
        // The webhook configuration only sends pods/CREATE; anything else
        // is admitted untouched rather than guessed at.
        return Ok(Decision::Skip {
            reason: "not a pod CREATE".into(),
            warn: false,
        });
    }
    let object = req
        .object
        .clone()
        .ok_or("portcullis: the request has no object")?;
    let pod = PodObject::from_value(object).map_err(|e| e.to_string())?;
    let ns = NamespaceInfo::from_settings(namespace, settings);
    let decision = mutate(&pod, &ns, settings).map_err(|e| e.to_string());
    tracing::info!(
        pod = %pod.display_name(namespace),
        dry_run = req.dry_run.unwrap_or(false),
        result = match &decision { Ok(Decision::Patch { .. }) => "injected", Ok(Decision::Skip { .. }) => "skipped", Err(_) => "denied" },
        detail = match &decision { Ok(Decision::Skip { reason, .. }) => reason.as_str(), Err(m) => m.as_str(), _ => "" },
        "admission review"
    );
    decision
}

fn allowed(uid: &str, warnings: Vec<String>) -> AdmissionResponse {
    AdmissionResponse {
        uid: uid.into(),
        allowed: true,
        status: None,
        patch_type: None,
        patch: None,
        warnings,
    }
}

fn patched(uid: &str, ops: &[PatchOperation], warnings: Vec<String>) -> AdmissionResponse {
    if ops.is_empty() {
        return allowed(uid, warnings);
    }
    // A Vec of ops always serializes; fall back to "[]" defensively.
    let json = serde_json::to_vec(ops).unwrap_or_else(|_| b"[]".to_vec());
    AdmissionResponse {
        patch_type: Some("JSONPatch".into()),
        patch: Some(base64::engine::general_purpose::STANDARD.encode(json)),
        ..allowed(uid, warnings)
    }
}

fn denied(uid: &str, message: String) -> AdmissionResponse {
    AdmissionResponse {
        allowed: false,
        status: Some(Status { code: 400, message }),
        ..allowed(uid, Vec::new())
    }
}

/// Decodes `response.patch` back into ops (tests, `render`).
pub fn decode_patch(patch: &str) -> Result<Vec<PatchOperation>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .map_err(|e| format!("patch is not base64: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("patch is not a JSON Patch: {e}"))
}

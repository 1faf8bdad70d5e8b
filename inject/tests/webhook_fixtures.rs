//! Every fixture under tests/fixtures/<case>/ is POSTed over HTTPS to the
//! real webhook server on loopback. The answer is checked against the
//! case's expected outcome and against goldens (`response.golden.json` with
//! the patch decoded, `pod.golden.yaml` for injected pods); the injected
//! pod is then re-sent and must get no patch. `UPDATE_GOLDEN=1` rewrites
//! the goldens. The raw wire answers are written to
//! `<target>/inject-responses/` for tests/check_patches.py.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::{json, Value};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn responses_dir() -> PathBuf {
    let dir = std::env::var_os("INJECT_RESPONSES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
            target.join("inject-responses")
        });
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn update() -> bool {
    std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1")
}

/// Compares `actual` with the golden at `path` (as parsed values, so key
/// order does not matter), or writes it under UPDATE_GOLDEN=1.
fn golden(path: &Path, actual: &Value, yaml: bool) -> Result<(), String> {
    if update() {
        let text = if yaml {
            serde_yaml_ng::to_string(actual).unwrap()
        } else {
            serde_json::to_string_pretty(actual).unwrap() + "\n"
        };
        fs::write(path, text).unwrap();
        return Ok(());
    }
    let text = fs::read_to_string(path).map_err(|_| {
        format!(
            "missing golden {} (run with UPDATE_GOLDEN=1)",
            path.display()
        )
    })?;
    let expected: Value = if yaml {
        serde_yaml_ng::from_str(&text).unwrap()
    } else {
        serde_json::from_str(&text).unwrap()
    };
    if &expected != actual {
        return Err(format!(
            "differs from {}:\n--- expected\n{}\n--- actual\n{}",
            path.display(),
            serde_json::to_string_pretty(&expected).unwrap(),
            serde_json::to_string_pretty(actual).unwrap()
        ));
    }
    Ok(())
}

/// The wire rules every answer must follow, whatever the outcome.
fn check_envelope(resp: &Value, uid: &str) -> Result<(), String> {
    if resp["apiVersion"] != "admission.k8s.io/v1" || resp["kind"] != "AdmissionReview" {
        return Err(format!("bad envelope: {resp}"));
    }
    let r = &resp["response"];
    if r["uid"] != uid {
        return Err(format!("uid not echoed: {} != {uid}", r["uid"]));
    }
    match (r.get("patchType"), r.get("patch")) {
        (None, None) => Ok(()),
        (Some(t), Some(Value::String(p))) if t == "JSONPatch" => {
            base64::engine::general_purpose::STANDARD
                .decode(p)
                .map(|_| ())
                .map_err(|e| format!("patch is not base64: {e}"))
        }
        (t, p) => Err(format!(
            "patchType {t:?} / patch {p:?}: both or neither, and patch must be a base64 string"
        )),
    }
}

fn decoded_patch(resp: &Value) -> Option<Value> {
    let p = resp["response"]["patch"].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(p).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn check_outcome(resp: &Value, expect: &Value) -> Result<(), String> {
    let r = &resp["response"];
    let message = expect["message"].as_str();
    let text = match expect["outcome"].as_str() {
        Some("inject") => {
            if r["allowed"] != true || r.get("patch").is_none() {
                return Err(format!("expected a patch, got {r}"));
            }
            r["warnings"].to_string()
        }
        Some("skip") => {
            if r["allowed"] != true || r.get("patch").is_some() {
                return Err(format!("expected allowed without patch, got {r}"));
            }
            r["warnings"].to_string()
        }
        Some("deny") => {
            if r["allowed"] != false || r.get("patch").is_some() {
                return Err(format!("expected a denial, got {r}"));
            }
            r["status"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        }
        other => return Err(format!("bad expect.json outcome {other:?}")),
    };
    match message {
        Some(m) if !text.contains(m) => Err(format!("expected {m:?} in {text}")),
        _ => Ok(()),
    }
}

/// `orig` is contained in `new`: objects by key, arrays as a prefix. This
/// is "nothing the user wrote is lost", including unknown fields.
fn subset(orig: &Value, new: &Value, at: &str) -> Result<(), String> {
    match (orig, new) {
        (Value::Object(a), Value::Object(b)) => a.iter().try_for_each(|(k, v)| match b.get(k) {
            Some(w) => subset(v, w, &format!("{at}/{k}")),
            None => Err(format!("{at}/{k} was lost")),
        }),
        (Value::Array(a), Value::Array(b)) if a.len() <= b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .try_for_each(|(i, (v, w))| subset(v, w, &format!("{at}/{i}"))),
        _ if orig == new => Ok(()),
        _ => Err(format!("{at} changed: {orig} -> {new}")),
    }
}

fn check_nothing_lost(orig: &Value, injected: &Value, patch: &Value) -> Result<(), String> {
    let mut orig = orig.clone();
    let mut injected = injected.clone();
    // Rewritten probes are replaced on purpose; user init containers move
    // behind ours, so they are compared by name.
    for op in patch
        .as_array()
        .into_iter()
        .flatten()
        .filter(|op| op["op"] == "replace")
    {
        let path = op["path"].as_str().unwrap_or_default();
        let (parent, key) = path.rsplit_once('/').unwrap();
        orig.pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .map(|m| m.remove(key));
        injected
            .pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .map(|m| m.remove(key));
    }
    let user_inits = orig["spec"]
        .as_object_mut()
        .and_then(|m| m.remove("initContainers"))
        .unwrap_or(json!([]));
    let new_inits = injected["spec"]
        .as_object_mut()
        .and_then(|m| m.remove("initContainers"))
        .unwrap_or(json!([]));
    let new_inits = new_inits.as_array().cloned().unwrap_or_default();
    let tail = &new_inits[new_inits
        .len()
        .saturating_sub(user_inits.as_array().map_or(0, Vec::len))..];
    subset(
        &user_inits,
        &Value::Array(tail.to_vec()),
        "/spec/initContainers",
    )?;
    subset(&orig, &injected, "")
}

struct Harness {
    server: common::TestServer,
    client: common::HttpsClient,
    out: PathBuf,
}

impl Harness {
    async fn post(&self, body: &Value) -> Result<Value, String> {
        let (status, bytes) = common::request(
            &self.client,
            self.server.addr,
            "POST",
            "/inject",
            serde_json::to_vec(body).unwrap(),
        )
        .await;
        if status != 200 {
            return Err(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&bytes)
            ));
        }
        serde_json::from_slice(&bytes).map_err(|e| format!("answer is not JSON: {e}"))
    }

    async fn run_case(&self, dir: &Path) -> Result<(), String> {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let request: Value =
            serde_json::from_str(&fs::read_to_string(dir.join("request.json")).unwrap()).unwrap();
        let expect: Value =
            serde_json::from_str(&fs::read_to_string(dir.join("expect.json")).unwrap()).unwrap();
        let uid = request["request"]["uid"].as_str().unwrap().to_string();
        let resp = self.post(&request).await?;
        fs::write(
            self.out.join(format!("{name}.json")),
            serde_json::to_vec_pretty(&resp).unwrap(),
        )
        .unwrap();
        check_envelope(&resp, &uid)?;
        check_outcome(&resp, &expect)?;
        let mut readable = resp.clone();
        if let Some(p) = decoded_patch(&resp) {
            readable["response"]["patch"] = p;
        }
        golden(&dir.join("response.golden.json"), &readable, false)?;
        let pod_golden = dir.join("pod.golden.yaml");
        let Some(patch) = decoded_patch(&resp) else {
            return match pod_golden.exists() {
                true => Err(format!(
                    "stale golden {} for a case without patch",
                    pod_golden.display()
                )),
                false => Ok(()),
            };
        };
        let orig = request["request"]["object"].clone();
        let mut pod = orig.clone();
        let ops: json_patch::Patch =
            serde_json::from_value(patch.clone()).map_err(|e| e.to_string())?;
        json_patch::patch(&mut pod, &ops).map_err(|e| format!("patch does not apply: {e}"))?;
        golden(&pod_golden, &pod, true)?;
        check_nothing_lost(&orig, &pod, &patch)?;
        self.reinvoke(&request, pod).await
    }

    /// The injected pod sent again (reinvocation, or a re-created pod) must
    /// be admitted without a patch.
    async fn reinvoke(&self, request: &Value, pod: Value) -> Result<(), String> {
        let mut again = request.clone();
        again["request"]["uid"] = json!("reinvocation");
        again["request"]["object"] = pod;
        let resp = self.post(&again).await?;
        check_envelope(&resp, "reinvocation")?;
        match (
            resp["response"]["allowed"] == true,
            resp["response"].get("patch"),
        ) {
            (true, None) => Ok(()),
            _ => Err(format!(
                "re-sent injected pod was not admitted unchanged: {}",
                resp["response"]
            )),
        }
    }
}

#[tokio::test]
async fn every_fixture_over_https() {
    let settings =
        portcullis_inject::InjectSettings::load(fixtures().join("settings.yaml").to_str().unwrap())
            .unwrap();
    let server = common::start(settings).await;
    let client = common::client(&server.ca.cert_pem, true);
    let harness = Harness {
        server,
        client,
        out: responses_dir(),
    };
    let mut dirs: Vec<_> = fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 30, "fixtures missing: {}", dirs.len());
    let mut failed = Vec::new();
    for dir in &dirs {
        if let Err(e) = harness.run_case(dir).await {
            failed.push(format!(
                "{}: {e}",
                dir.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    println!(
        "webhook fixtures: {} passed, {} failed",
        dirs.len() - failed.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "failed cases:\n{}", failed.join("\n\n"));
}

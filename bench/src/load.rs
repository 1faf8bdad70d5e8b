//! The load generator: closed-loop workers (each sends its next call as
//! soon as the last one is answered) or open-loop workers that follow a
//! fixed schedule. Every answer is checked; latency goes into an HDR
//! histogram in microseconds.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::time::Instant;

use crate::conn::{Endpoint, Sender};

/// How a run paces its calls.
#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// `concurrency` connections, each with one call in flight at a time.
    Closed,
    /// A fixed total rate spread over the connections. Latency counts from
    /// when a call was due, so a stall is not hidden by the calls it delays.
    Open { rate: f64 },
}

#[derive(Clone, Copy, Debug)]
pub struct RunSpec {
    pub connections: usize,
    pub duration: Duration,
    pub pace: Pace,
}

pub struct RunResult {
    pub ok: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latency_us: Histogram<u64>,
    pub first_error: Option<String>,
}

/// The tool call every configuration serves: sessionless (2026-07-28), so
/// no `initialize` is needed and every call stands alone.
pub const TEXT: &str = "The quick brown fox jumps over the lazy dog, 0123456789";

/// `text` as a JSON string literal. Encoding a string cannot fail; the
/// fallback only satisfies the type.
pub fn json_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

/// A `tools/call` of `tool` with `text` (already a JSON string literal).
pub fn call(
    endpoint: &Endpoint,
    id: u64,
    tool: &str,
    text: &str,
) -> Result<Request<Full<Bytes>>, http::Error> {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{{"text":{text}}},"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}}}}"#
    );
    post(endpoint, "tools/call", Some(tool), body)
}

/// A sessionless `tools/list`.
pub fn list(endpoint: &Endpoint, id: u64) -> Result<Request<Full<Bytes>>, http::Error> {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/list","params":{{"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}}}}"#
    );
    post(endpoint, "tools/list", None, body)
}

fn post(
    endpoint: &Endpoint,
    method: &str,
    name: Option<&str>,
    body: String,
) -> Result<Request<Full<Bytes>>, http::Error> {
    let mut req = Request::post(format!(
        "{}://localhost:{}/mcp",
        endpoint.scheme(),
        endpoint.addr.port()
    ))
    .header(header::HOST, format!("localhost:{}", endpoint.addr.port()))
    .header(header::CONTENT_TYPE, "application/json")
    .header(header::ACCEPT, "application/json, text/event-stream")
    .header("mcp-protocol-version", "2026-07-28")
    .header("mcp-method", method);
    if let Some(name) = name {
        req = req.header("mcp-name", name);
    }
    req.body(Full::new(Bytes::from(body)))
}

/// What every call of a run sends.
#[derive(Clone, Debug)]
pub enum Payload {
    /// A `tools/call` of `tool` with `text`, a JSON string literal
    /// encoded once (shared, so a 1 MB argument is not copied per worker).
    Call { tool: Arc<str>, text: Arc<str> },
    /// A `tools/list`.
    List,
}

impl Payload {
    /// `echo(text)`, the call of every configuration.
    pub fn echo(text: &str) -> Self {
        Payload::Call {
            tool: "echo".into(),
            text: json_string(text).into(),
        }
    }

    pub fn request(
        &self,
        endpoint: &Endpoint,
        id: u64,
    ) -> Result<Request<Full<Bytes>>, http::Error> {
        match self {
            Payload::Call { tool, text } => call(endpoint, id, tool, text),
            Payload::List => list(endpoint, id),
        }
    }
}

/// One call of `tool` on a fresh connection: Ok if it was served with a
/// result, Err with what came back otherwise. The harness uses it to show
/// that each configuration enforces its policy before measuring it.
pub async fn probe(endpoint: &Endpoint, tool: &str, text: &str) -> Result<(), String> {
    let mut sender = endpoint.connect().await.map_err(|e| e.to_string())?;
    let req = call(endpoint, 1, tool, &json_string(text)).map_err(|e| e.to_string())?;
    exchange(&mut sender, req, 1).await
}

#[derive(Deserialize)]
struct Answer<'a> {
    id: Option<u64>,
    #[serde(borrow)]
    result: Option<&'a RawValue>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
}

/// Sends one call and checks that it came back as a 200 JSON result for
/// the same id.
pub async fn exchange(
    sender: &mut Sender,
    req: Request<Full<Bytes>>,
    id: u64,
) -> Result<(), String> {
    sender
        .ready()
        .await
        .map_err(|e| format!("connection: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    if status != StatusCode::OK {
        return Err(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ));
    }
    let answer: Answer =
        serde_json::from_slice(&body).map_err(|e| format!("answer is not JSON-RPC: {e}"))?;
    if let Some(err) = answer.error {
        return Err(format!("JSON-RPC error: {}", err.get()));
    }
    if answer.result.is_none() || answer.id != Some(id) {
        return Err(format!("answer without a result for id {id}"));
    }
    Ok(())
}

struct Worker {
    ok: u64,
    errors: u64,
    hist: Histogram<u64>,
    first_error: Option<String>,
}

/// Latencies from 1 µs to 60 s at three significant digits.
pub const MAX_US: u64 = 60_000_000;

#[derive(Debug, thiserror::Error)]
#[error("latency histogram: {0}")]
pub struct HistogramError(#[from] hdrhistogram::CreationError);

pub fn histogram() -> Result<Histogram<u64>, HistogramError> {
    Ok(Histogram::new_with_bounds(1, MAX_US, 3)?)
}

impl Worker {
    fn new(hist: Histogram<u64>) -> Self {
        Self {
            ok: 0,
            errors: 0,
            hist,
            first_error: None,
        }
    }

    fn fail(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }
}

/// Runs one measurement against `endpoint`: calls of `echo(TEXT)`.
pub async fn run(endpoint: &Endpoint, spec: RunSpec) -> Result<RunResult, HistogramError> {
    run_with(endpoint, spec, &Payload::echo(TEXT)).await
}

/// Runs one measurement against `endpoint`, every call sending `payload`.
pub async fn run_with(
    endpoint: &Endpoint,
    spec: RunSpec,
    payload: &Payload,
) -> Result<RunResult, HistogramError> {
    let empty = histogram()?;
    let start = Instant::now();
    let deadline = start + spec.duration;
    let mut tasks = Vec::with_capacity(spec.connections);
    for w in 0..spec.connections {
        let endpoint = endpoint.clone();
        let state = Worker::new(empty.clone());
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            worker(state, endpoint, payload, spec, w, start, deadline).await
        }));
    }
    let mut total = Worker::new(empty);
    for t in tasks {
        match t.await {
            Ok(w) => {
                total.ok += w.ok;
                total.errors += w.errors;
                // Same bounds on both sides, so adding cannot fail.
                let _ = total.hist.add(&w.hist);
                if let Some(e) = w.first_error {
                    total.first_error.get_or_insert(e);
                }
            }
            Err(e) => total.fail(format!("worker panicked: {e}")),
        }
    }
    Ok(RunResult {
        ok: total.ok,
        errors: total.errors,
        elapsed: start.elapsed(),
        latency_us: total.hist,
        first_error: total.first_error,
    })
}

async fn worker(
    mut w: Worker,
    endpoint: Endpoint,
    payload: Payload,
    spec: RunSpec,
    index: usize,
    start: Instant,
    deadline: Instant,
) -> Worker {
    let mut sender: Option<Sender> = None;
    let mut seq: u64 = 0;
    loop {
        // Open loop: this worker owns calls index, index + n, index + 2n, ...
        let due = match spec.pace {
            Pace::Closed => None,
            Pace::Open { rate } => {
                let nth = index as f64 + seq as f64 * spec.connections as f64;
                Some(start + Duration::from_secs_f64(nth / rate))
            }
        };
        let mut from = Instant::now();
        if let Some(due) = due {
            if due >= deadline {
                break;
            }
            if due > from {
                tokio::time::sleep_until(due).await;
                // On schedule: count from the actual send, so timer slack
                // is not charged to the proxy.
                from = Instant::now();
            } else {
                // Behind schedule: the wait since `due` is real queueing.
                from = due;
            }
        } else if from >= deadline {
            break;
        }
        seq += 1;
        let id = (index as u64) << 32 | seq;
        let s = match sender.as_mut() {
            Some(s) => s,
            None => match endpoint.connect().await {
                Ok(s) => sender.insert(s),
                Err(e) => {
                    w.fail(e.to_string());
                    // Do not spin on a refused port.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let req = match payload.request(&endpoint, id) {
            Ok(r) => r,
            Err(e) => {
                w.fail(e.to_string());
                break;
            }
        };
        match exchange(s, req, id).await {
            Ok(()) => {
                w.ok += 1;
                let us = from.elapsed().as_micros().max(1) as u64;
                // Above the histogram's bound only if a call took > 60 s.
                let _ = w.hist.record(us.min(MAX_US));
            }
            Err(e) => {
                w.fail(e);
                // The connection may be broken; start a fresh one.
                sender = None;
            }
        }
    }
    w
}

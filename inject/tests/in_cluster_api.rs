//! The self-made-CA mode's real HTTP client against a fake apiserver on
//! loopback (HTTPS, bearer token): the exact requests it makes, and that a
//! second replica reuses the CA and writes nothing.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis_inject::ca_bootstrap::{bootstrap, generate_ca, serving_cert};
use portcullis_inject::kube_api::InClusterApi;
use portcullis_inject::tls::{certified_key_from_pem, server_config, ReloadingCert};
use serde_json::{json, Value};

const SECRET: &str = "/api/v1/namespaces/portcullis-system/secrets/portcullis-webhook-ca";
const SECRETS: &str = "/api/v1/namespaces/portcullis-system/secrets";
const WEBHOOK: &str =
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/portcullis-injector";

#[derive(Default)]
struct Apiserver {
    secret: Option<Value>,
    webhook: Value,
    /// "METHOD path content-type" of every request.
    log: Vec<String>,
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r
}

async fn handle(
    req: Request<Incoming>,
    api: Arc<Mutex<Apiserver>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body: Value =
        serde_json::from_slice(&body.collect().await.unwrap().to_bytes()).unwrap_or(Value::Null);
    let mut api = api.lock().unwrap();
    if parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        != Some("Bearer test-token")
    {
        return Ok(reply(
            StatusCode::UNAUTHORIZED,
            json!({"message": "no token"}),
        ));
    }
    let ctype = parts
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    api.log
        .push(format!("{} {} {ctype}", parts.method, parts.uri.path()));
    let resp = match (parts.method.as_str(), parts.uri.path()) {
        ("GET", SECRET) => match &api.secret {
            Some(s) => reply(StatusCode::OK, s.clone()),
            None => reply(StatusCode::NOT_FOUND, json!({"message": "not found"})),
        },
        ("POST", SECRETS) if api.secret.is_some() => {
            reply(StatusCode::CONFLICT, json!({"message": "exists"}))
        }
        ("POST", SECRETS) => {
            api.secret = Some(body.clone());
            reply(StatusCode::CREATED, body)
        }
        ("GET", WEBHOOK) => reply(StatusCode::OK, api.webhook.clone()),
        ("PATCH", WEBHOOK) => {
            let ops: json_patch::Patch = serde_json::from_value(body).unwrap();
            json_patch::patch(&mut api.webhook, &ops).unwrap();
            reply(StatusCode::OK, api.webhook.clone())
        }
        _ => reply(StatusCode::NOT_FOUND, json!({"message": "unexpected"})),
    };
    Ok(resp)
}

async fn start_apiserver(api: Arc<Mutex<Apiserver>>) -> (u16, String) {
    let ca = generate_ca().unwrap();
    let (chain, key) = serving_cert(&ca, vec!["localhost".into()]).unwrap();
    let resolver =
        ReloadingCert::new(certified_key_from_pem(chain.as_bytes(), key.as_bytes(), "t").unwrap());
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(resolver).unwrap()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, api) = (acceptor.clone(), api.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |r| handle(r, api.clone()));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (port, ca.cert_pem)
}

fn b64d(v: &Value) -> String {
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn bootstrap_creates_ca_secret_and_patches_every_ca_bundle() {
    let api = Arc::new(Mutex::new(Apiserver {
        webhook: json!({"webhooks": [
            {"name": "inject.portcullis.dev", "clientConfig": {"service": {"name": "portcullis-webhook"}}},
            {"name": "inject2.portcullis.dev", "clientConfig": {"service": {"name": "portcullis-webhook"}, "caBundle": "b2xk"}},
        ]}),
        ..Default::default()
    }));
    let (port, ca_pem) = start_apiserver(api.clone()).await;
    let token =
        std::env::temp_dir().join(format!("portcullis-inject-token-{}", std::process::id()));
    std::fs::write(&token, "test-token\n").unwrap();
    let client = InClusterApi::new(
        &format!("https://localhost:{port}"),
        ca_pem.as_bytes(),
        token.to_str().unwrap(),
        "portcullis-system",
        "portcullis-webhook-ca",
        "portcullis-injector",
    )
    .unwrap();

    let (chain, _key) = bootstrap(&client, "portcullis-webhook", "portcullis-system")
        .await
        .unwrap();
    {
        let api = api.lock().unwrap();
        let ca = b64d(&api.secret.as_ref().unwrap()["data"]["ca.crt"]);
        assert!(chain.ends_with(&ca));
        for hook in api.webhook["webhooks"].as_array().unwrap() {
            assert_eq!(b64d(&hook["clientConfig"]["caBundle"]), ca);
            assert_eq!(
                hook["clientConfig"]["service"]["name"], "portcullis-webhook",
                "patch must not clobber"
            );
        }
        assert_eq!(
            api.log,
            [
                format!("GET {SECRET} application/json"),
                format!("POST {SECRETS} application/json"),
                format!("GET {WEBHOOK} application/json"),
                format!("PATCH {WEBHOOK} application/json-patch+json"),
            ]
        );
    }
    api.lock().unwrap().log.clear();
    bootstrap(&client, "portcullis-webhook", "portcullis-system")
        .await
        .unwrap();
    assert_eq!(
        api.lock().unwrap().log,
        [
            format!("GET {SECRET} application/json"),
            format!("GET {WEBHOOK} application/json")
        ],
        "a second replica must reuse the CA and write nothing"
    );
    let _ = std::fs::remove_file(token);
}

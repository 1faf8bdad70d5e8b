//! The in-cluster implementation of `WebhookApi`: four REST calls with the
//! pod's ServiceAccount token. A full client (`kube`) would pull a large
//! dependency tree for four requests.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::{json, Value};

use crate::ca_bootstrap::{BootstrapError, CaPair, Created, WebhookApi};

const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

pub struct InClusterApi {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: String,
    token_path: String,
    pub namespace: String,
    pub secret: String,
    pub webhook_config: String,
}

fn api_err(what: impl std::fmt::Display) -> BootstrapError {
    BootstrapError::Api(what.to_string())
}

impl InClusterApi {
    /// Uses `KUBERNETES_SERVICE_HOST`/`_PORT` and the mounted ServiceAccount.
    pub fn from_env(
        namespace: &str,
        secret: &str,
        webhook_config: &str,
    ) -> Result<Self, BootstrapError> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST")
            .map_err(|_| api_err("KUBERNETES_SERVICE_HOST is not set"))?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let ca = std::fs::read(format!("{SA_DIR}/ca.crt"))
            .map_err(|e| api_err(format!("{SA_DIR}/ca.crt: {e}")))?;
        Self::new(
            &format!("https://{host}:{port}"),
            &ca,
            &format!("{SA_DIR}/token"),
            namespace,
            secret,
            webhook_config,
        )
    }

    pub fn new(
        base: &str,
        ca_pem: &[u8],
        token_path: &str,
        namespace: &str,
        secret: &str,
        webhook_config: &str,
    ) -> Result<Self, BootstrapError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            roots.add(cert.map_err(api_err)?).map_err(api_err)?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(api_err)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(https),
            base: base.trim_end_matches('/').to_string(),
            token_path: token_path.into(),
            namespace: namespace.into(),
            secret: secret.into(),
            webhook_config: webhook_config.into(),
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        ctype: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value), BootstrapError> {
        // Re-read each time: projected tokens are rotated by the kubelet.
        let token = std::fs::read_to_string(&self.token_path)
            .map_err(|e| api_err(format!("{}: {e}", self.token_path)))?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {}", token.trim()))
            .header("content-type", ctype)
            .header("accept", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(api_err)?;
        let resp =
            tokio::time::timeout(std::time::Duration::from_secs(10), self.client.request(req))
                .await
                .map_err(|_| api_err(format!("{path}: timed out")))?
                .map_err(|e| api_err(format!("{path}: {e}")))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(api_err)?
            .to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, value))
    }

    fn secret_path(&self) -> String {
        format!(
            "/api/v1/namespaces/{}/secrets/{}",
            self.namespace, self.secret
        )
    }

    fn webhook_path(&self) -> String {
        format!(
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{}",
            self.webhook_config
        )
    }
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn unb64(v: &Value) -> Option<String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v.as_str()?)
        .ok()?;
    String::from_utf8(bytes).ok()
}

fn unexpected(what: &str, status: StatusCode, body: &Value) -> BootstrapError {
    let msg = body.get("message").and_then(Value::as_str).unwrap_or("");
    api_err(format!("{what}: HTTP {status} {msg}"))
}

impl WebhookApi for InClusterApi {
    async fn get_ca(&self) -> Result<Option<CaPair>, BootstrapError> {
        let (status, body) = self
            .call(Method::GET, &self.secret_path(), "application/json", None)
            .await?;
        match status {
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::OK => {
                let cert = unb64(&body["data"]["ca.crt"]);
                let key = unb64(&body["data"]["ca.key"]);
                match (cert, key) {
                    (Some(cert_pem), Some(key_pem)) => Ok(Some(CaPair { cert_pem, key_pem })),
                    _ => Err(api_err(format!(
                        "Secret {} lacks ca.crt/ca.key",
                        self.secret
                    ))),
                }
            }
            s => Err(unexpected("get CA Secret", s, &body)),
        }
    }

    async fn create_ca(&self, ca: &CaPair) -> Result<Created, BootstrapError> {
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": self.secret, "labels": {"app.kubernetes.io/name": "portcullis-injector"}},
            "data": {"ca.crt": b64(&ca.cert_pem), "ca.key": b64(&ca.key_pem)},
        });
        let path = format!("/api/v1/namespaces/{}/secrets", self.namespace);
        let (status, body) = self
            .call(Method::POST, &path, "application/json", Some(secret))
            .await?;
        match status {
            StatusCode::CREATED | StatusCode::OK => Ok(Created::Created),
            StatusCode::CONFLICT => Ok(Created::AlreadyExists),
            s => Err(unexpected("create CA Secret", s, &body)),
        }
    }

    async fn ca_bundles(&self) -> Result<Vec<String>, BootstrapError> {
        let (status, body) = self
            .call(Method::GET, &self.webhook_path(), "application/json", None)
            .await?;
        if status != StatusCode::OK {
            return Err(unexpected(
                "get MutatingWebhookConfiguration",
                status,
                &body,
            ));
        }
        let hooks = body["webhooks"].as_array().cloned().unwrap_or_default();
        Ok(hooks
            .iter()
            .map(|h| unb64(&h["clientConfig"]["caBundle"]).unwrap_or_default())
            .collect())
    }

    async fn set_ca_bundles(&self, pem: &str, entries: usize) -> Result<(), BootstrapError> {
        let ops: Vec<Value> = (0..entries)
            .map(|i| json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": b64(pem)}))
            .collect();
        let (status, body) = self
            .call(
                Method::PATCH,
                &self.webhook_path(),
                "application/json-patch+json",
                Some(Value::Array(ops)),
            )
            .await?;
        if status != StatusCode::OK {
            return Err(unexpected("patch caBundle", status, &body));
        }
        Ok(())
    }
}

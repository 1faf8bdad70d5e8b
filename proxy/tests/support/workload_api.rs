//! An in-process SPIFFE Workload API server: the real gRPC protocol
//! (`SpiffeWorkloadAPI/FetchX509SVID`, server streaming) over a Unix
//! socket, standing in for a SPIRE agent, which cannot be installed here.
//! A test pushes rotations with [`Agent::rotate`].

use std::{collections::HashMap, path::Path, pin::Pin, sync::Arc};

use futures_util::Stream;
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio::sync::watch;
use tonic::{codegen::BoxFuture, Request, Response, Status};

#[derive(Clone, PartialEq, prost::Message)]
pub struct X509SvidRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct X509SvidResponse {
    #[prost(message, repeated, tag = "1")]
    pub svids: Vec<X509Svid>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub crl: Vec<Vec<u8>>,
    #[prost(map = "string, bytes", tag = "3")]
    pub federated_bundles: HashMap<String, Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct X509Svid {
    #[prost(string, tag = "1")]
    pub spiffe_id: String,
    #[prost(bytes = "vec", tag = "2")]
    pub x509_svid: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub x509_svid_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    pub bundle: Vec<u8>,
    #[prost(string, tag = "5")]
    pub hint: String,
}

/// DER of every certificate in a PEM text, concatenated (the wire format).
fn der_chain(pem: &str) -> Vec<u8> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .flat_map(|c| c.unwrap().to_vec())
        .collect()
}

/// The response carrying one SVID (cert and key PEM) and its bundle.
pub fn response(id: &str, cert: &str, key: &str, bundle: &str) -> X509SvidResponse {
    let key = match PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap() {
        PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
        _ => panic!("the dev CA writes PKCS#8 keys"),
    };
    X509SvidResponse {
        svids: vec![X509Svid {
            spiffe_id: id.into(),
            x509_svid: der_chain(cert),
            x509_svid_key: key,
            bundle: der_chain(bundle),
            hint: String::new(),
        }],
        ..Default::default()
    }
}

#[derive(Clone)]
struct Fetch(watch::Receiver<X509SvidResponse>);

type Updates = Pin<Box<dyn Stream<Item = Result<X509SvidResponse, Status>> + Send>>;

impl tonic::server::ServerStreamingService<X509SvidRequest> for Fetch {
    type Response = X509SvidResponse;
    type ResponseStream = Updates;
    type Future = BoxFuture<Response<Updates>, Status>;

    fn call(&mut self, req: Request<X509SvidRequest>) -> Self::Future {
        let rx = self.0.clone();
        Box::pin(async move {
            // The Workload API refuses calls without its security header.
            if req
                .metadata()
                .get("workload.spiffe.io")
                .map(|v| v.as_bytes())
                != Some(b"true")
            {
                return Err(Status::invalid_argument("security header missing"));
            }
            let stream = tokio_stream::wrappers::WatchStream::new(rx);
            let stream: Updates = Box::pin(futures_util::StreamExt::map(stream, Ok));
            Ok(Response::new(stream))
        })
    }
}

/// A running fake agent.
pub struct Agent {
    tx: Arc<watch::Sender<X509SvidResponse>>,
    task: tokio::task::JoinHandle<()>,
}

impl Agent {
    pub async fn start(socket: &Path, first: X509SvidResponse) -> Self {
        let _ = std::fs::remove_file(socket);
        let listener = tokio::net::UnixListener::bind(socket).unwrap();
        let (tx, rx) = watch::channel(first);
        let service = tower::service_fn(move |req: http::Request<tonic::body::Body>| {
            let fetch = Fetch(rx.clone());
            async move {
                let resp = match req.uri().path() {
                    "/SpiffeWorkloadAPI/FetchX509SVID" => {
                        tonic::server::Grpc::new(tonic_prost::ProstCodec::default())
                            .server_streaming(fetch, req)
                            .await
                    }
                    _ => Status::unimplemented("not served by this test agent").into_http(),
                };
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .serve_with_incoming(service, incoming)
                .await;
        });
        Self {
            tx: Arc::new(tx),
            task,
        }
    }

    /// Streams a new SVID to every connected workload.
    pub fn rotate(&self, next: X509SvidResponse) {
        let _ = self.tx.send(next);
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

//! A client for the provider service's HTTP API (spec/http.md), used by `gridbox submit` and
//! `gridbox load`. Plain HTTP/1.1: put a TLS-terminating proxy in front of a public server.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::http::{HeaderValue, Method, Request, StatusCode, header};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::wire::{BlobStored, ErrorBody, JobStatus, SubmitRequest, TraceSample, Usage};
use gridbox_core::digest::{BlobRef, Digest};

/// A request to the service failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server URL is not one this client can use.
    #[error("server URL {url:?}: {reason}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The server could not be reached, or the connection broke.
    #[error("{method} {url}: the request failed")]
    Transport {
        /// The request method.
        method: Method,
        /// The URL.
        url: String,
        /// What went wrong.
        #[source]
        source: gridbox_core::errors::BoxError,
    },
    /// The server answered with an error.
    #[error("{method} {path}: the server answered {status} {code}: {message}")]
    Api {
        /// The request method.
        method: Method,
        /// The path.
        path: String,
        /// The HTTP status.
        status: u16,
        /// The error code (spec/http.md), or `http_<status>` when the body had none.
        code: String,
        /// The server's message.
        message: String,
        /// `Retry-After`, in seconds.
        retry_after: Option<u64>,
    },
    /// The server answered something that is not what the API promises.
    #[error("{path}: the server's answer is not what the API promises")]
    Protocol {
        /// The path.
        path: String,
        /// What was wrong with it.
        #[source]
        source: serde_json::Error,
    },
    /// A task of the client (one of `gridbox load`'s clients) died.
    #[error("a client task failed")]
    Task(#[from] tokio::task::JoinError),
    /// A downloaded blob does not hash to the hash it was asked for.
    #[error("blob {0} downloaded from the server does not hash to its name: refusing it")]
    Corrupt(Digest),
}

/// A client for one server and tenant.
#[derive(Clone)]
pub struct Client {
    http: HttpClient<HttpConnector, Full<Bytes>>,
    base: String,
    authorization: HeaderValue,
    /// Response body bytes received so far, by this client and its clones.
    received: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Client {
    /// A client for the server at `server` (`http://HOST:PORT`) with tenant token `token`.
    pub fn new(server: &str, token: &str) -> Result<Self, ClientError> {
        let bad = |reason: &str| ClientError::BadUrl { url: server.to_string(), reason: reason.to_string() };
        let uri: hyper::Uri = server.parse().map_err(|_| bad("not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(bad("https is not built in; reach the server over http (behind a TLS proxy)")),
            _ => return Err(bad("expected http://HOST:PORT")),
        }
        if uri.host().is_none() {
            return Err(bad("it names no host"));
        }
        let authorization = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| bad("the token holds characters that cannot go in a header"))?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let http = HttpClient::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        Ok(Client { http, base: server.trim_end_matches('/').to_string(), authorization, received: Default::default() })
    }

    async fn send(&self, method: Method, path: &str, content_type: Option<&str>, body: Bytes) -> Result<(StatusCode, Bytes), ClientError> {
        let url = format!("{}{path}", self.base);
        let transport = |source: gridbox_core::errors::BoxError| ClientError::Transport { method: method.clone(), url: url.clone(), source };
        let mut request = Request::builder().method(method.clone()).uri(&url).header(header::AUTHORIZATION, self.authorization.clone());
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let request = request.body(Full::new(body)).map_err(|e| transport(e.into()))?;
        let response = self.http.request(request).await.map_err(|e| transport(e.into()))?;
        let status = response.status();
        let retry_after = response.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        let body = response.into_body().collect().await.map_err(|e| transport(e.into()))?.to_bytes();
        self.received.fetch_add(body.len() as u64, std::sync::atomic::Ordering::Relaxed);
        if status.is_success() {
            return Ok((status, body));
        }
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(error) => (error.error.code, error.error.message),
            // HEAD answers carry no body; name the one refusal that matters there.
            Err(_) if status == StatusCode::UNAUTHORIZED => ("unauthorized".to_string(), "the server does not know this token".to_string()),
            Err(_) => (format!("http_{}", status.as_u16()), String::from_utf8_lossy(&body).chars().take(200).collect()),
        };
        Err(ClientError::Api { method, path: path.to_string(), status: status.as_u16(), code, message, retry_after })
    }

    /// Response body bytes this client and its clones have received (what a spot check moved).
    pub fn bytes_received(&self) -> u64 {
        self.received.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn parse<T: serde::de::DeserializeOwned>(path: &str, body: &[u8]) -> Result<T, ClientError> {
        serde_json::from_slice(body).map_err(|source| ClientError::Protocol { path: path.to_string(), source })
    }

    /// Whether this tenant can read the blob on the server already.
    pub async fn has_blob(&self, digest: &Digest) -> Result<bool, ClientError> {
        match self.send(Method::HEAD, &format!("/v1/blobs/{digest}"), None, Bytes::new()).await {
            Ok(_) => Ok(true),
            Err(ClientError::Api { status: 404, .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Uploads `bytes`, claiming their hash.
    pub async fn upload(&self, bytes: Bytes) -> Result<BlobStored, ClientError> {
        let path = format!("/v1/blobs/{}", Digest::of(&bytes));
        let size = bytes.len() as u64;
        let body = match self.send(Method::PUT, &path, Some("application/octet-stream"), bytes).await {
            Ok((_, body)) => body,
            // The server refuses an upload over the quota from its Content-Length, before reading
            // the body, and closes the connection: a large body then breaks off mid-write and its
            // 507 is never read. Say what the server said, from the usage it reports.
            Err(error @ ClientError::Transport { .. }) => match self.usage().await {
                Ok(usage) if usage.bytes.saturating_add(size) > usage.quota_bytes => {
                    return Err(ClientError::Api {
                        method: Method::PUT,
                        path,
                        status: 507,
                        code: "storage_quota".into(),
                        message: format!(
                            "the upload of {size} bytes would take the tenant past its quota ({} of {} bytes used)",
                            usage.bytes, usage.quota_bytes
                        ),
                        retry_after: None,
                    });
                }
                _ => return Err(error),
            },
            Err(error) => return Err(error),
        };
        Self::parse(&path, &body)
    }

    /// Uploads `bytes` unless the server has them for this tenant already; true if uploaded.
    pub async fn ensure_blob(&self, bytes: &Bytes) -> Result<bool, ClientError> {
        if self.has_blob(&Digest::of(bytes)).await? {
            return Ok(false);
        }
        self.upload(bytes.clone()).await.map(|_| true)
    }

    /// Submits a job manifest (TOML).
    pub async fn submit(&self, manifest: &str) -> Result<JobStatus, ClientError> {
        let body = serde_json::to_vec(&SubmitRequest { manifest: manifest.to_string() }).unwrap_or_default();
        let (_, body) = self.send(Method::POST, "/v1/jobs", Some("application/json"), body.into()).await?;
        Self::parse("/v1/jobs", &body)
    }

    /// The job's status; with `wait`, the server holds the answer until the job ends or the
    /// wait is over.
    pub async fn status(&self, id: &str, wait: Duration) -> Result<JobStatus, ClientError> {
        let path = if wait.is_zero() { format!("/v1/jobs/{id}") } else { format!("/v1/jobs/{id}?wait={}", wait.as_secs_f64()) };
        let (_, body) = self.send(Method::GET, &path, None, Bytes::new()).await?;
        Self::parse(&path, &body)
    }

    /// Downloads a blob and checks its hash and size.
    pub async fn download(&self, blob: &BlobRef) -> Result<Vec<u8>, ClientError> {
        let (_, body) = self.send(Method::GET, &format!("/v1/blobs/{}", blob.blake3), None, Bytes::new()).await?;
        if BlobRef::of(&body) != *blob {
            return Err(ClientError::Corrupt(blob.blake3));
        }
        Ok(body.to_vec())
    }

    /// The job's signed receipt.
    pub async fn receipt(&self, id: &str) -> Result<Vec<u8>, ClientError> {
        let (_, body) = self.send(Method::GET, &format!("/v1/jobs/{id}/receipt"), None, Bytes::new()).await?;
        Ok(body.to_vec())
    }

    /// Entry `index` of the job's trace log, its proof, and the entry before it with its proof.
    pub async fn trace_entry(&self, id: &str, index: u64) -> Result<TraceSample, ClientError> {
        let path = format!("/v1/jobs/{id}/trace/{index}");
        let (_, body) = self.send(Method::GET, &path, None, Bytes::new()).await?;
        Self::parse(&path, &body)
    }

    /// The tensor file (spec/trace.md) of a tensor the provider kept for the job's tenant, by its
    /// tensor hash. Not checked here: the caller compares its tensor hash with the one it needs.
    pub async fn kept_tensor(&self, id: &str, hash: &Digest) -> Result<Vec<u8>, ClientError> {
        let (_, body) = self.send(Method::GET, &format!("/v1/jobs/{id}/tensors/{hash}"), None, Bytes::new()).await?;
        Ok(body.to_vec())
    }

    /// Keeps an ended job, its results and receipt for good.
    pub async fn keep(&self, id: &str) -> Result<JobStatus, ClientError> {
        let path = format!("/v1/jobs/{id}/keep");
        let (_, body) = self.send(Method::POST, &path, None, Bytes::new()).await?;
        Self::parse(&path, &body)
    }

    /// Deletes an ended job, its results and receipt now.
    pub async fn delete_job(&self, id: &str) -> Result<(), ClientError> {
        self.send(Method::DELETE, &format!("/v1/jobs/{id}"), None, Bytes::new()).await.map(drop)
    }

    /// Gives up this tenant's upload of a blob.
    pub async fn delete_blob(&self, digest: &Digest) -> Result<(), ClientError> {
        self.send(Method::DELETE, &format!("/v1/blobs/{digest}"), None, Bytes::new()).await.map(drop)
    }

    /// This tenant's storage and quota.
    pub async fn usage(&self) -> Result<Usage, ClientError> {
        let (_, body) = self.send(Method::GET, "/v1/usage", None, Bytes::new()).await?;
        Self::parse("/v1/usage", &body)
    }
}

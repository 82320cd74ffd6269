//! The HTTP routes (spec/http.md, spec/openapi.yaml) over [`Service`].

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use http_body_util::BodyExt;

use crate::blobs::BlobError;
use crate::error::ServiceError;
use crate::http::error::{ApiError, RejectionCode};
use crate::service::Service;
use crate::wire::{BlobStored, JobList, SubmitRequest, Usage};
use gridbox_core::digest::{BlobRef, Digest};

/// Uploads are written to disk in batches of this many bytes.
const UPLOAD_BATCH: usize = 1 << 20;
/// Blobs larger than this are streamed to the client rather than read whole.
const STREAM_ABOVE: u64 = 1 << 20;
/// The chunk size of a streamed download.
const DOWNLOAD_CHUNK: usize = 256 << 10;

/// The authenticated tenant of a request.
#[derive(Debug, Clone)]
struct AuthenticatedTenant(String);

/// Every route, as spec/http.md and spec/openapi.yaml name them (a test checks both).
pub const ROUTES: [&str; 11] = [HEALTHZ, METRICS, BLOBS, BLOB, JOBS, JOB, JOB_RECEIPT, JOB_KEEP, JOB_TRACE, JOB_TENSOR, USAGE];
const HEALTHZ: &str = "/healthz";
const METRICS: &str = "/metrics";
const BLOBS: &str = "/v1/blobs";
const BLOB: &str = "/v1/blobs/{hash}";
const JOBS: &str = "/v1/jobs";
const JOB: &str = "/v1/jobs/{id}";
const JOB_RECEIPT: &str = "/v1/jobs/{id}/receipt";
const JOB_KEEP: &str = "/v1/jobs/{id}/keep";
const JOB_TRACE: &str = "/v1/jobs/{id}/trace/{index}";
const JOB_TENSOR: &str = "/v1/jobs/{id}/tensors/{hash}";

mod evidence;
const USAGE: &str = "/v1/usage";

/// The service's router.
pub fn router(service: Arc<Service>) -> Router {
    let settings = &service.config().serve;
    let jobs = Router::new()
        .route(JOBS, post(submit_job).get(list_jobs))
        .route(JOB, get(job_status).delete(delete_job))
        .route(JOB_RECEIPT, get(job_receipt))
        .route(JOB_KEEP, post(keep_job))
        .route(JOB_TRACE, get(evidence::job_trace_entry))
        .route(JOB_TENSOR, get(evidence::job_tensor))
        .route(USAGE, get(usage))
        .layer(middleware::from_fn_with_state(settings.request_timeout(), time_limit));
    let blobs = Router::new()
        .route(BLOBS, post(upload_blob))
        .route(BLOB, put(upload_claimed_blob).get(download_blob).head(blob_exists).delete(delete_blob))
        .layer(middleware::from_fn_with_state(settings.transfer_timeout(), time_limit));
    let tenant_routes = jobs.merge(blobs).layer(middleware::from_fn_with_state(service.clone(), authenticate));
    let operations =
        Router::new().route(HEALTHZ, get(healthz)).route(METRICS, get(metrics)).layer(middleware::from_fn_with_state(settings.request_timeout(), time_limit));
    Router::new()
        .merge(operations)
        .merge(tenant_routes)
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(service.clone(), count_rejections))
        .with_state(service)
}

async fn count_rejections(State(service): State<Arc<Service>>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if let Some(RejectionCode(code)) = response.extensions().get::<RejectionCode>() {
        service.metrics.reject(code);
    }
    response
}

async fn time_limit(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(StatusCode::REQUEST_TIMEOUT, "timeout", format!("the request took longer than this server's limit of {} s", limit.as_secs()))
            .into_response(),
    }
}

async fn authenticate(State(service): State<Arc<Service>>, mut request: Request, next: Next) -> Response {
    let token = bearer_token(request.headers());
    let tenant = match token {
        None => Err("send your tenant token as `Authorization: Bearer <token>`"),
        Some(token) => service.authenticate(token.trim()).ok_or("the bearer token is not one this server knows"),
    };
    match tenant {
        Ok(tenant) => {
            let tenant = AuthenticatedTenant(tenant.to_string());
            request.extensions_mut().insert(tenant);
            next.run(request).await
        }
        Err(message) => {
            let mut response = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header (the scheme is case-insensitive).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

async fn healthz(State(service): State<Arc<Service>>) -> Response {
    if *service.stop_signal().borrow() {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the server is shutting down").retry_after(5).into_response();
    }
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

async fn metrics(State(service): State<Arc<Service>>, headers: HeaderMap) -> Response {
    // Compare hashes, whose equality is constant-time.
    let hash = |token: &str| blake3::hash(token.as_bytes());
    if let Some(expected) = &service.config().serve.metrics_token
        && bearer_token(&headers).map(|token| hash(token.trim())) != Some(hash(expected))
    {
        let message = "this server's metrics need `Authorization: Bearer <serve.metrics_token>`";
        let mut response = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], service.render_metrics()).into_response()
}

async fn unknown_route(request: Request) -> ApiError {
    ApiError::not_found(format!("no route {} {} (see spec/http.md)", request.method(), request.uri().path()))
}

async fn wrong_method(request: Request) -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", format!("{} is not allowed on {}", request.method(), request.uri().path()))
}

fn parse_hash(path: Result<Path<String>, PathRejection>) -> Result<Digest, ApiError> {
    let Path(text) = path.map_err(|e| ApiError::bad_request("invalid_hash", format!("the hash in the path is unreadable: {e}")))?;
    text.parse().map_err(|e: gridbox_core::digest::DigestParseError| ApiError::bad_request("invalid_hash", e.to_string()))
}

fn job_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(id)| id).map_err(|e| ApiError::not_found(format!("no such job: {e}")))
}

async fn upload_blob(
    State(service): State<Arc<Service>>,
    Extension(tenant): Extension<AuthenticatedTenant>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    store_upload(&service, &tenant, None, &headers, body).await
}

async fn upload_claimed_blob(
    State(service): State<Arc<Service>>,
    Extension(tenant): Extension<AuthenticatedTenant>,
    hash: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let claimed = parse_hash(hash)?;
    store_upload(&service, &tenant, Some(claimed), &headers, body).await
}

/// Streams the body into the blob store, hashing as it goes.
async fn store_upload(
    service: &Arc<Service>,
    tenant: &AuthenticatedTenant,
    claimed: Option<Digest>,
    headers: &HeaderMap,
    mut body: Body,
) -> Result<Response, ApiError> {
    let limit = service.config().serve.max_blob_bytes;
    if content_length(headers).is_some_and(|length| length > limit) {
        return Err(ApiError::too_large(limit));
    }
    let (used, quota) = service.usage(&tenant.0)?;
    if content_length(headers).is_some_and(|length| used.saturating_add(length) > quota) {
        return Err(ServiceError::StorageQuota { quota, used }.into());
    }
    // Collection deletes no file between this upload's placing and its owner's record.
    let placing = service.gc_guard().read().await;
    let blobs = service.blobs().clone();
    let mut writer = tokio::task::spawn_blocking(move || blobs.writer(limit)).await.map_err(ServiceError::from)?.map_err(ServiceError::from)?;
    // File writes block: gather up to UPLOAD_BATCH bytes, then write them on a blocking thread.
    let mut pending = Vec::new();
    let mut ended = false;
    while !ended {
        match body.frame().await {
            Some(frame) => {
                let frame = frame.map_err(|e| ApiError::bad_request("body_unreadable", format!("the upload broke off: {e}")))?;
                if let Some(chunk) = frame.data_ref() {
                    pending.extend_from_slice(chunk);
                }
            }
            None => ended = true,
        }
        if pending.len() >= UPLOAD_BATCH || (ended && !pending.is_empty()) {
            let batch = std::mem::take(&mut pending);
            let written = tokio::task::spawn_blocking(move || writer.write(&batch).map(|()| writer));
            writer = written.await.map_err(ServiceError::from)?.map_err(|e| match e {
                BlobError::TooLarge { limit } => ApiError::too_large(limit),
                other => ServiceError::from(other).into(),
            })?;
        }
    }
    let finished = tokio::task::spawn_blocking(move || writer.finish(claimed)).await.map_err(ServiceError::from)?;
    let (digest, size, _) = finished.map_err(|e| match e {
        BlobError::HashMismatch { .. } => ApiError::bad_request("hash_mismatch", format!("{e}; nothing was stored")),
        other => ServiceError::from(other).into(),
    })?;
    let created = !service.can_read(&tenant.0, &digest)?;
    // Recorded even when already owned: an upload renews the blob's retention.
    service.add_owner(&tenant.0, digest, size).await?;
    drop(placing);
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(BlobStored { blob: BlobRef { blake3: digest, size }, created })).into_response())
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn blob_not_found(digest: &Digest) -> ApiError {
    ApiError::not_found(format!("no blob {digest} that you uploaded or that your jobs made"))
}

async fn download_blob(
    State(service): State<Arc<Service>>,
    Extension(tenant): Extension<AuthenticatedTenant>,
    hash: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let digest = parse_hash(hash)?;
    if !service.can_read(&tenant.0, &digest)? {
        return Err(blob_not_found(&digest));
    }
    let octets = [(header::CONTENT_TYPE, "application/octet-stream")];
    if service.blobs().size(&digest).is_some_and(|size| size <= STREAM_ABOVE) {
        let bytes = service.read_blob(digest).await?;
        return Ok((octets, Bytes::from(bytes)).into_response());
    }
    // Large blobs are checked in one pass and then streamed in chunks, so that a download never
    // holds the whole blob in memory.
    let (file, size) = service.open_blob(digest).await?;
    let chunks = futures_util::stream::try_unfold(tokio::fs::File::from_std(file), |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut chunk = vec![0u8; DOWNLOAD_CHUNK];
        let read = file.read(&mut chunk).await?;
        chunk.truncate(read);
        Ok::<_, std::io::Error>((read > 0).then(|| (Bytes::from(chunk), file)))
    });
    let mut response = (octets, Body::from_stream(chunks)).into_response();
    response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    Ok(response)
}

async fn blob_exists(
    State(service): State<Arc<Service>>,
    Extension(tenant): Extension<AuthenticatedTenant>,
    hash: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let digest = parse_hash(hash)?;
    let size = match service.can_read(&tenant.0, &digest)? {
        true => service.blobs().size(&digest),
        false => None,
    };
    match size {
        Some(size) => Ok((StatusCode::OK, [(header::CONTENT_LENGTH, size.to_string())]).into_response()),
        None => Err(blob_not_found(&digest)),
    }
}

/// Reads a request body of at most `limit` bytes.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(ApiError::too_large(limit as u64)),
        Err(error) => Err(ApiError::bad_request("body_unreadable", format!("the request body broke off: {error}"))),
    }
}

async fn submit_job(
    State(service): State<Arc<Service>>,
    Extension(tenant): Extension<AuthenticatedTenant>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let limit = service.config().serve.max_request_bytes;
    if content_length(&headers).is_some_and(|length| length > limit as u64) {
        return Err(ApiError::too_large(limit as u64));
    }
    let bytes = read_body(body, limit).await?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json");
    let manifest = if content_type.starts_with("application/toml") {
        String::from_utf8(bytes.to_vec()).map_err(|_| ApiError::bad_request("invalid_manifest", "the manifest is not UTF-8"))?
    } else {
        let request: SubmitRequest = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request("invalid_json", format!("the body is not a job submission {{\"manifest\": \"<TOML>\"}}: {e}")))?;
        request.manifest
    };
    let status = service.submit(&tenant.0, &manifest).await?;
    let location = format!("/v1/jobs/{}", status.id);
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(status)).into_response())
}

async fn job_status(
    State(service): State<Arc<Service>>,
    Extension(tenant): Extension<AuthenticatedTenant>,
    id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let id = job_id(id)?;
    let mut wait = Duration::ZERO;
    for (name, value) in query_pairs(request.uri().query())? {
        match name.as_str() {
            "wait" => {
                let seconds: f64 = value
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                    .ok_or_else(|| ApiError::bad_request("invalid_query", format!("wait={value:?}: expected a number of seconds")))?;
                wait = Duration::from_secs_f64(seconds.min(service.config().serve.max_wait_s as f64));
            }
            _ => return Err(ApiError::bad_request("invalid_query", format!("unknown query parameter {name:?}; the only one is wait=SECONDS"))),
        }
    }
    Ok(Json(service.status(&tenant.0, &id, wait).await?).into_response())
}

/// The name-value pairs of a query, percent-decoded (`+` is a space), as HTML forms and every
/// HTTP client encode them.
fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let decode = |text: &str| -> Result<String, ApiError> {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'%' => {
                    let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
                    let byte = hex.ok_or_else(|| ApiError::bad_request("invalid_query", format!("{text:?}: a `%` must be followed by two hex digits")))?;
                    out.push(byte);
                    i += 3;
                }
                b'+' => {
                    out.push(b' ');
                    i += 1;
                }
                byte => {
                    out.push(byte);
                    i += 1;
                }
            }
        }
        String::from_utf8(out).map_err(|_| ApiError::bad_request("invalid_query", format!("{text:?} is not UTF-8 once decoded")))
    };
    let mut pairs = Vec::new();
    for pair in query.unwrap_or_default().split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        pairs.push((decode(name)?, decode(value)?));
    }
    Ok(pairs)
}

/// Most jobs one `GET /v1/jobs` returns.
const MAX_LIST: usize = 1000;

async fn list_jobs(State(service): State<Arc<Service>>, Extension(tenant): Extension<AuthenticatedTenant>, request: Request) -> Result<Response, ApiError> {
    let (mut limit, mut before) = (100, None);
    for (name, value) in query_pairs(request.uri().query())? {
        let number =
            |value: &str| value.parse::<u64>().map_err(|_| ApiError::bad_request("invalid_query", format!("{name}={value:?}: expected a whole number")));
        match name.as_str() {
            "limit" => {
                let n = number(&value)?;
                if !(1..=MAX_LIST as u64).contains(&n) {
                    return Err(ApiError::bad_request("invalid_query", format!("limit={n}: must be 1 to {MAX_LIST}")));
                }
                limit = n as usize;
            }
            "before" => before = Some(number(&value)?),
            _ => return Err(ApiError::bad_request("invalid_query", format!("unknown query parameter {name:?}; known: limit=N, before=CURSOR"))),
        }
    }
    let (jobs, next_before) = service.list(&tenant.0, before, limit)?;
    Ok(Json(JobList { jobs, next_before }).into_response())
}

async fn keep_job(
    State(service): State<Arc<Service>>,
    Extension(tenant): Extension<AuthenticatedTenant>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = job_id(id)?;
    Ok(Json(service.keep(&tenant.0, &id).await?).into_response())
}

async fn delete_job(
    State(service): State<Arc<Service>>,
    Extension(tenant): Extension<AuthenticatedTenant>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = job_id(id)?;
    service.forget(&tenant.0, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_blob(
    State(service): State<Arc<Service>>,
    Extension(tenant): Extension<AuthenticatedTenant>,
    hash: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let digest = parse_hash(hash)?;
    service.disown(&tenant.0, digest).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn usage(State(service): State<Arc<Service>>, Extension(tenant): Extension<AuthenticatedTenant>) -> Result<Response, ApiError> {
    let (bytes, quota_bytes) = service.usage(&tenant.0)?;
    Ok(Json(Usage { bytes, quota_bytes }).into_response())
}

async fn job_receipt(
    State(service): State<Arc<Service>>,
    Extension(tenant): Extension<AuthenticatedTenant>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = job_id(id)?;
    let bytes = service.receipt(&tenant.0, &id).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], Bytes::from(bytes)).into_response())
}

#[cfg(test)]
mod tests {
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::ServiceConfig;
    use crate::load::TINY_JOB_WASM;
    use crate::wire::{ErrorBody, JobState, JobStatus};
    use gridbox_core::engine::JobEngine;
    use gridbox_core::manifest::Manifest;

    const ALICE: &str = "alice-token-0123456789";
    const BOB: &str = "bob-token-0123456789ab";

    struct Fixture {
        _data: tempfile::TempDir,
        router: Router,
    }

    /// A service over a fresh folder; `serve` is the `[serve]` table, `workers` whether jobs run.
    fn fixture_with(serve: &str, workers: bool) -> Fixture {
        let data = tempfile::tempdir().unwrap();
        let text = format!(
            "[max]\nfuel = 1000000\n[[tenants]]\nname = \"alice\"\ntoken = \"{ALICE}\"\n[[tenants]]\nname = \"bob\"\ntoken = \"{BOB}\"\n[serve]\nworkers = 1\n{serve}"
        );
        let config = ServiceConfig::from_toml(&text).unwrap();
        let engine = JobEngine::new(&config.policy).unwrap();
        let key = gridbox_core::keys::generate().unwrap();
        let service = Service::open(config, engine, data.path(), key).unwrap();
        if workers {
            service.start_workers();
        }
        Fixture { router: router(service), _data: data }
    }

    fn fixture(extra: &str) -> Fixture {
        fixture_with(&format!("max_blob_bytes = 1000\nmax_request_bytes = 2000\n{extra}"), true)
    }

    async fn call(router: &Router, method: &str, uri: &str, token: Option<&str>, body: Vec<u8>) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = router.clone().oneshot(request.body(Body::from(body)).unwrap()).await.unwrap();
        let (parts, body) = response.into_parts();
        (parts.status, parts.headers, body.collect().await.unwrap().to_bytes().to_vec())
    }

    fn code(body: &[u8]) -> String {
        serde_json::from_slice::<ErrorBody>(body).map(|e| e.error.code).unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned())
    }

    fn submission(seed: u64) -> Vec<u8> {
        let mut manifest = Manifest::new(Digest::of(TINY_JOB_WASM));
        manifest.seed = seed;
        serde_json::to_vec(&SubmitRequest { manifest: toml::to_string(&manifest).unwrap() }).unwrap()
    }

    /// A job whose second bridge call meets a planted device failure every time it runs: the
    /// service retries it as the provider's fault, then fails it with no receipt and says why.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_device_failure_is_retried_as_a_provider_fault_then_fails_without_a_receipt() {
        use gridbox_compute::Backend;
        use gridbox_compute::backend::faults::{Fault, FaultPlan};
        use gridbox_core::Capability;
        let wasm = wat::parse_str(
            r#"(module
                (import "gridbox_tensor_v1" "create" (func $create (param i32 i32 i32 i32 i32 i32) (result i32)))
                (import "gridbox_tensor_v1" "relu" (func $relu (param i32 i32 i32 i32 i32) (result i32)))
                (memory (export "memory") 1)
                (data (i32.const 0) "\04\00\00\00")
                (func (export "_start")
                    (drop (call $create (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 16) (i32.const 16) (i32.const 64)))
                    (drop (call $relu (i32.const 64) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 68)))))"#,
        )
        .unwrap();
        let data = tempfile::tempdir().unwrap();
        let text = format!("[[tenants]]\nname = \"alice\"\ntoken = \"{ALICE}\"\n[serve]\nworkers = 1\n");
        let config = ServiceConfig::from_toml(&text).unwrap();
        let backend = Backend::cpu(1).with_fault(FaultPlan { at_op: 0, fault: Fault::DeviceError });
        let engine = JobEngine::with_backend(&config.policy, backend).unwrap();
        let service = Service::open(config, engine, data.path(), gridbox_core::keys::generate().unwrap()).unwrap();
        service.start_workers();
        let (digest, _) = service.blobs().put(&wasm).unwrap();
        service.add_owner("alice", digest, wasm.len() as u64).await.unwrap();
        let mut manifest = Manifest::new(digest);
        manifest.capabilities = vec![Capability::Wasi, Capability::Tensor];
        let submitted = service.submit("alice", &toml::to_string(&manifest).unwrap()).await.unwrap();
        let mut status = submitted;
        for _ in 0..30 {
            status = service.status("alice", &status.id, Duration::from_secs(1)).await.unwrap();
            if status.state.is_final() {
                break;
            }
        }
        assert_eq!(status.state, JobState::Failed, "{status:?}");
        assert!(status.receipt.is_none(), "no receipt is signed for a provider fault: {status:?}");
        let reason = status.reason.clone().unwrap_or_default();
        assert!(reason.contains("the provider failed to run it 3 times") && reason.contains("compute device failed"), "{reason}");
    }

    #[test]
    fn every_route_is_documented() {
        let openapi = include_str!("../../../../spec/openapi.yaml");
        let reference = include_str!("../../../../spec/http.md");
        for route in ROUTES {
            assert!(openapi.contains(&format!("\n  {route}:\n")), "spec/openapi.yaml lacks {route}");
            assert!(reference.contains(&format!(" {route}")), "spec/http.md lacks {route}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn health_and_metrics_need_no_token_but_tenant_routes_do() {
        let Fixture { router, _data } = fixture("");
        let (status, _, body) = call(&router, "GET", "/healthz", None, vec![]).await;
        assert_eq!((status, body), (StatusCode::OK, br#"{"status":"ok"}"#.to_vec()));
        for token in [None, Some("wrong-token-0123456789")] {
            let (status, headers, body) = call(&router, "GET", "/v1/jobs/abc", token, vec![]).await;
            assert_eq!((status, code(&body).as_str()), (StatusCode::UNAUTHORIZED, "unauthorized"));
            assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
        }
        let (status, _, body) = call(&router, "GET", "/nope", Some(ALICE), vec![]).await;
        assert_eq!((status, code(&body).as_str()), (StatusCode::NOT_FOUND, "not_found"));
        let (status, _, body) = call(&router, "DELETE", "/v1/jobs", Some(ALICE), vec![]).await;
        assert_eq!((status, code(&body).as_str()), (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"));
        let (_, _, body) = call(&router, "GET", "/metrics", None, vec![]).await;
        let text = String::from_utf8(body).unwrap();
        assert!(text.contains("gridbox_rejections_total{reason=\"unauthorized\"} 2"), "{text}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blobs_are_checked_limited_and_private_to_their_tenant() {
        let Fixture { router, _data } = fixture("");
        let digest = Digest::of(b"hello");
        let (status, _, body) = call(&router, "PUT", &format!("/v1/blobs/{}", Digest::of(b"other")), Some(ALICE), b"hello".to_vec()).await;
        assert_eq!((status, code(&body).as_str()), (StatusCode::BAD_REQUEST, "hash_mismatch"), "{}", String::from_utf8_lossy(&body));
        let (status, _, _) = call(&router, "HEAD", &format!("/v1/blobs/{digest}"), Some(ALICE), vec![]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "a mismatched upload stores nothing");

        let (status, _, body) = call(&router, "PUT", &format!("/v1/blobs/{digest}"), Some(ALICE), b"hello".to_vec()).await;
        assert_eq!(status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&body));
        let (status, _, _) = call(&router, "PUT", &format!("/v1/blobs/{digest}"), Some(ALICE), b"hello".to_vec()).await;
        assert_eq!(status, StatusCode::OK, "a second upload is deduplicated");
        let (status, _, body) = call(&router, "GET", &format!("/v1/blobs/{digest}"), Some(ALICE), vec![]).await;
        assert_eq!((status, body), (StatusCode::OK, b"hello".to_vec()));

        // Bob cannot see Alice's blob, nor learn that it exists, until he uploads the bytes.
        for method in ["GET", "HEAD"] {
            let (status, _, _) = call(&router, method, &format!("/v1/blobs/{digest}"), Some(BOB), vec![]).await;
            assert_eq!(status, StatusCode::NOT_FOUND);
        }
        let (status, _, _) = call(&router, "POST", "/v1/blobs", Some(BOB), b"hello".to_vec()).await;
        assert_eq!(status, StatusCode::CREATED);

        let (status, _, body) = call(&router, "POST", "/v1/blobs", Some(ALICE), vec![7; 1001]).await;
        assert_eq!((status, code(&body).as_str()), (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"));
        let (status, _, body) = call(&router, "GET", "/v1/blobs/xyz", Some(ALICE), vec![]).await;
        assert_eq!((status, code(&body).as_str()), (StatusCode::BAD_REQUEST, "invalid_hash"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_run_and_are_private_to_their_tenant() {
        let Fixture { router, _data } = fixture("");
        let module = Digest::of(TINY_JOB_WASM);
        let (status, _, body) = call(&router, "POST", "/v1/jobs", Some(ALICE), submission(1)).await;
        assert_eq!((status, code(&body).as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "blob_not_found"));
        call(&router, "PUT", &format!("/v1/blobs/{module}"), Some(ALICE), TINY_JOB_WASM.to_vec()).await;

        let (status, headers, body) = call(&router, "POST", "/v1/jobs", Some(ALICE), submission(1)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{}", String::from_utf8_lossy(&body));
        let job: JobStatus = serde_json::from_slice(&body).unwrap();
        assert_eq!(headers[header::LOCATION], format!("/v1/jobs/{}", job.id));
        let (_, _, body) = call(&router, "GET", &format!("/v1/jobs/{}?wait=10", job.id), Some(ALICE), vec![]).await;
        let done: JobStatus = serde_json::from_slice(&body).unwrap();
        assert_eq!(done.state, JobState::Succeeded, "{done:?}");
        let receipt = done.receipt.unwrap();
        let (status, _, body) = call(&router, "GET", &format!("/v1/jobs/{}/receipt", job.id), Some(ALICE), vec![]).await;
        assert_eq!((status, gridbox_core::digest::BlobRef::of(&body)), (StatusCode::OK, receipt));
        let (status, _, _) = call(&router, "GET", &format!("/v1/blobs/{}", receipt.blake3), Some(ALICE), vec![]).await;
        assert_eq!(status, StatusCode::OK, "a tenant reads what its jobs made");

        // Listing: Alice sees her jobs, newest first, in pages; Bob sees none of them.
        let (_, _, body) = call(&router, "POST", "/v1/jobs", Some(ALICE), submission(2)).await;
        let newer: JobStatus = serde_json::from_slice(&body).unwrap();
        let (_, _, body) = call(&router, "GET", "/v1/jobs?limit=1", Some(ALICE), vec![]).await;
        let page: JobList = serde_json::from_slice(&body).unwrap();
        assert_eq!(page.jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), [newer.id.as_str()]);
        let cursor = page.next_before.expect("a full page has a next one");
        let (_, _, body) = call(&router, "GET", &format!("/v1/jobs?limit=1&before={cursor}"), Some(ALICE), vec![]).await;
        let page: JobList = serde_json::from_slice(&body).unwrap();
        assert_eq!(page.jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), [job.id.as_str()]);
        let (_, _, body) = call(&router, "GET", "/v1/jobs", Some(BOB), vec![]).await;
        assert_eq!(serde_json::from_slice::<JobList>(&body).unwrap(), JobList { jobs: vec![], next_before: None });
        let (status, _, body) = call(&router, "GET", "/v1/jobs?limit=x", Some(ALICE), vec![]).await;
        assert_eq!((status, code(&body).as_str()), (StatusCode::BAD_REQUEST, "invalid_query"));

        for uri in [format!("/v1/jobs/{}", job.id), format!("/v1/jobs/{}/receipt", job.id), format!("/v1/blobs/{}", receipt.blake3)] {
            let (status, _, _) = call(&router, "GET", &uri, Some(BOB), vec![]).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_submissions_are_named() {
        let Fixture { router, _data } = fixture("");
        let module = Digest::of(TINY_JOB_WASM);
        call(&router, "PUT", &format!("/v1/blobs/{module}"), Some(ALICE), TINY_JOB_WASM.to_vec()).await;
        let too_much = format!("format = 1\nmodule = \"{module}\"\n[limits]\nfuel = 2000000\n");
        let cases: [(Vec<u8>, StatusCode, &str, &str); 5] = [
            (b"{".to_vec(), StatusCode::BAD_REQUEST, "invalid_json", "manifest"),
            (serde_json::to_vec(&SubmitRequest { manifest: "format = 1\n".into() }).unwrap(), StatusCode::BAD_REQUEST, "invalid_manifest", "module"),
            (serde_json::to_vec(&SubmitRequest { manifest: too_much }).unwrap(), StatusCode::UNPROCESSABLE_ENTITY, "limit_above_policy", "limits.fuel"),
            (vec![b' '; 2001], StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "2000"),
            (submission(1), StatusCode::ACCEPTED, "", ""),
        ];
        for (body, expected, expected_code, needle) in cases {
            let (status, _, body) = call(&router, "POST", "/v1/jobs", Some(ALICE), body).await;
            assert_eq!(status, expected, "{}", String::from_utf8_lossy(&body));
            if !expected_code.is_empty() {
                let error: ErrorBody = serde_json::from_slice(&body).unwrap();
                assert_eq!(error.error.code, expected_code);
                assert!(error.error.message.contains(needle), "{needle}: {}", error.error.message);
            }
        }
        let (status, _, body) = call(&router, "GET", "/v1/jobs/x?wait=soon", Some(ALICE), vec![]).await;
        assert_eq!((status, code(&body).as_str()), (StatusCode::BAD_REQUEST, "invalid_query"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_queue_and_each_tenant_s_share_of_it_are_bounded() {
        // No workers: jobs stay queued, so the bounds are met exactly.
        let Fixture { router, _data } = fixture_with("max_queued = 3\nmax_queued_per_tenant = 2\nretry_after_s = 7\n", false);
        let module = Digest::of(TINY_JOB_WASM);
        for token in [ALICE, BOB] {
            call(&router, "PUT", &format!("/v1/blobs/{module}"), Some(token), TINY_JOB_WASM.to_vec()).await;
        }
        let outcomes = [(ALICE, "202"), (ALICE, "202"), (ALICE, "tenant_queue_full"), (BOB, "202"), (BOB, "queue_full")];
        for (seed, (token, expected)) in outcomes.into_iter().enumerate() {
            let (status, headers, body) = call(&router, "POST", "/v1/jobs", Some(token), submission(seed as u64)).await;
            if expected == "202" {
                assert_eq!(status, StatusCode::ACCEPTED, "{}", String::from_utf8_lossy(&body));
                let job: JobStatus = serde_json::from_slice(&body).unwrap();
                assert_eq!(job.state, JobState::Queued);
            } else {
                assert_eq!((status, code(&body).as_str()), (StatusCode::TOO_MANY_REQUESTS, expected));
                assert_eq!(headers[header::RETRY_AFTER], "7");
            }
        }
        let (_, _, body) = call(&router, "GET", "/metrics", None, vec![]).await;
        let text = String::from_utf8(body).unwrap();
        assert!(text.contains("gridbox_queue_depth 3\n"), "{text}");
        assert!(text.contains("gridbox_rejections_total{reason=\"tenant_queue_full\"} 1\n"), "{text}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_blobs_stream_back_and_metrics_can_need_a_token() {
        let Fixture { router, _data } = fixture_with("metrics_token = \"metrics-0123456789abcdef\"\n", false);
        let big: Vec<u8> = (0..(3u32 << 20) + 5).map(|i| (i % 251) as u8).collect();
        let digest = Digest::of(&big);
        let (status, _, _) = call(&router, "PUT", &format!("/v1/blobs/{digest}"), Some(ALICE), big.clone()).await;
        assert_eq!(status, StatusCode::CREATED);
        let (status, headers, body) = call(&router, "GET", &format!("/v1/blobs/{digest}"), Some(ALICE), vec![]).await;
        assert_eq!((status, headers[header::CONTENT_LENGTH].to_str().unwrap()), (StatusCode::OK, big.len().to_string().as_str()));
        assert!(body == big, "the streamed blob differs");

        let (status, _, _) = call(&router, "GET", "/metrics", None, vec![]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _, body) = call(&router, "GET", "/metrics", Some("metrics-0123456789abcdef"), vec![]).await;
        assert_eq!(status, StatusCode::OK);
        assert!(String::from_utf8(body).unwrap().contains(&format!("gridbox_blob_bytes_stored {}", big.len())));
        // The scheme is case-insensitive; a path that is not UTF-8 is a JSON error, not a panic.
        let request = Request::builder().uri("/v1/jobs/nope").header(header::AUTHORIZATION, format!("bEaReR {ALICE}"));
        let response = router.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "authenticated, then no such job");
        let (status, _, body) = call(&router, "GET", "/v1/blobs/%FF", Some(ALICE), vec![]).await;
        assert_eq!((status, code(&body).as_str()), (StatusCode::BAD_REQUEST, "invalid_hash"));
    }
}

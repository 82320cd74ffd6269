//! The spot-check routes (spec/http.md, "Trace and tensors"): one entry of a job's trace log
//! with its proofs, and a kept tensor by its tensor hash.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::AuthenticatedTenant;
use crate::http::error::ApiError;
use crate::service::Service;
use crate::wire::TraceSample;
use gridbox_core::digest::Digest;

/// Both path parameters as text: each is checked on its own, so that a malformed one gets its own
/// error (an unknown job is 404 whatever the rest says).
type TwoParams = Result<Path<(String, String)>, PathRejection>;

fn params(path: TwoParams) -> Result<(String, String), ApiError> {
    path.map(|Path(pair)| pair).map_err(|e| ApiError::not_found(format!("no such job: {e}")))
}

/// `GET /v1/jobs/{id}/trace/{index}`.
pub(super) async fn job_trace_entry(
    State(service): State<Arc<Service>>,
    Extension(tenant): Extension<AuthenticatedTenant>,
    path: TwoParams,
) -> Result<Json<TraceSample>, ApiError> {
    let (id, index) = params(path)?;
    // Like `limit` and `before`: a whole number below 2^64, digits only.
    let index = Some(&index)
        .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|text| text.parse::<u64>().ok())
        .ok_or_else(|| ApiError::bad_request("invalid_index", format!("the entry index {index:?} is not a whole number below 2^64")))?;
    Ok(Json(service.trace_entry(&tenant.0, &id, index).await?))
}

/// `GET /v1/jobs/{id}/tensors/{hash}`.
pub(super) async fn job_tensor(
    State(service): State<Arc<Service>>,
    Extension(tenant): Extension<AuthenticatedTenant>,
    path: TwoParams,
) -> Result<Response, ApiError> {
    let (id, hash) = params(path)?;
    let hash: Digest = hash.parse().map_err(|e: gridbox_core::digest::DigestParseError| ApiError::bad_request("invalid_hash", e.to_string()))?;
    let bytes = service.kept_tensor(&tenant.0, &id, hash).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], Bytes::from(bytes)).into_response())
}

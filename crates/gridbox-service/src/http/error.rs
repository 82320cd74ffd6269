//! The API's errors: an HTTP status, a stable code (spec/http.md) and a message saying what to
//! fix. Every refusal the service makes is one of these, rendered as JSON.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use gridbox_core::errors::error_chain;

use crate::error::ServiceError;
use crate::wire::{ErrorBody, ErrorDetail};

/// An API error.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable code.
    pub code: &'static str,
    /// For people.
    pub message: String,
    /// Seconds for `Retry-After`, on 429 and 503.
    pub retry_after: Option<u64>,
}

/// Marks a response as an error with this code, for the rejection counter.
#[derive(Debug, Clone, Copy)]
pub struct RejectionCode(pub &'static str);

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), retry_after: None }
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 413 `body_too_large`.
    pub fn too_large(limit: u64) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", format!("the request body is larger than this server's limit of {limit} bytes"))
    }

    /// Adds a `Retry-After`.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code.to_string(), message: self.message } };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response.extensions_mut().insert(RejectionCode(self.code));
        response
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        let code = error.code();
        let status = match code {
            "invalid_manifest" | "hash_mismatch" => StatusCode::BAD_REQUEST,
            "limit_above_policy" | "capability_not_granted" | "blob_not_found" => StatusCode::UNPROCESSABLE_ENTITY,
            "queue_full" | "tenant_queue_full" => StatusCode::TOO_MANY_REQUESTS,
            "shutting_down" => StatusCode::SERVICE_UNAVAILABLE,
            "not_found" => StatusCode::NOT_FOUND,
            "no_receipt" | "not_ended" => StatusCode::CONFLICT,
            "storage_quota" => StatusCode::INSUFFICIENT_STORAGE,
            "body_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = error_chain(&error);
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            // The provider's problem: the operator must see it, not only the client.
            eprintln!("gridbox: {message}");
        }
        let mut api = ApiError::new(status, code, message);
        api.retry_after = error.retry_after();
        api
    }
}

//! Arbitrary requests (method, path, query, headers, body) through the service's router, in
//! process, against a real service over a temporary data folder: never a panic, never a 5xx.
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Method, Request};
use gridbox_core::{JobEngine, keys};
use gridbox_service::{Service, ServiceConfig};
use tower::ServiceExt;

const TOKEN: &str = "fuzz-token-0123456789";

struct Fixture {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    _data: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let data = tempfile::tempdir().expect("tempdir");
        let policy = format!("[[tenants]]\nname = \"fuzz\"\ntoken = \"{TOKEN}\"\n[serve]\nworkers = 1\nmax_blob_bytes = 65536\nmax_request_bytes = 65536\n");
        let config = ServiceConfig::from_toml(&policy).expect("policy");
        let engine = JobEngine::new(&config.policy).expect("engine");
        let service: Arc<Service> = Service::open(config, engine, data.path(), keys::generate().expect("key")).expect("service");
        let router = runtime.block_on(async { gridbox_service::http::routes::router(service) });
        Fixture { runtime, router, _data: data }
    })
}

const METHODS: [Method; 7] = [Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::HEAD, Method::PATCH, Method::OPTIONS];
const PATHS: [&str; 9] = ["/healthz", "/metrics", "/v1/blobs", "/v1/blobs/", "/v1/jobs", "/v1/jobs/", "/v1/usage", "/v1/jobs/x/keep", "/v1/jobs/x/receipt"];

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let fixture = fixture();
    let method = METHODS[usize::from(data[0]) % METHODS.len()].clone();
    let split = 3 + usize::from(data[2]).min(data.len() - 3);
    let suffix = String::from_utf8_lossy(&data[3..split]).replace(['\r', '\n', ' '], "");
    let path = format!("{}{suffix}", PATHS[usize::from(data[1]) % PATHS.len()]);
    let body = data[split..].to_vec();
    let mut builder = Request::builder().method(method).uri(&path);
    if data[1] & 0x80 == 0 {
        builder = builder.header("authorization", format!("Bearer {TOKEN}"));
    }
    if data[2] & 1 == 1 {
        builder = builder.header("content-type", "application/toml");
    }
    let Ok(request) = builder.body(Body::from(body)) else { return };
    let response = fixture.runtime.block_on(fixture.router.clone().oneshot(request)).expect("the router answers");
    assert!(!response.status().is_server_error(), "{path}: {}", response.status());
});

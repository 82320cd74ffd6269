//! The provider's service settings: tenants and their tokens, worker and queue sizes, body
//! limits and timeouts. They live in the same policy file as the job limits, so a provider keeps
//! one file (spec/http.md, "Policy file").

use std::collections::BTreeSet;
use std::time::Duration;

use gridbox_core::manifest::{ManifestError, Policy};

/// One tenant: a name (shown in logs and metrics, never to other tenants) and its bearer token.
#[derive(Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    /// The tenant's name: 1 to 64 of `[A-Za-z0-9_.-]`.
    pub name: String,
    /// The bearer token that authenticates it: at least 16 characters.
    pub token: String,
}

impl std::fmt::Debug for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens never reach logs.
        f.debug_struct("Tenant").field("name", &self.name).field("token", &"<redacted>").finish()
    }
}

/// The `[serve]` table.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeSettings {
    /// Jobs running at once; default: the number of CPUs.
    pub workers: usize,
    /// Jobs waiting to run before submissions get 429.
    pub max_queued: usize,
    /// Jobs of one tenant waiting to run before its submissions get 429.
    pub max_queued_per_tenant: usize,
    /// Jobs of one tenant running at once.
    pub max_running_per_tenant: usize,
    /// Largest blob upload, in bytes.
    pub max_blob_bytes: u64,
    /// Largest JSON request body, in bytes.
    pub max_request_bytes: usize,
    /// Time allowed for a request other than a blob transfer, in seconds.
    pub request_timeout_s: u64,
    /// Time allowed for a blob upload or download, in seconds.
    pub transfer_timeout_s: u64,
    /// Longest `?wait=` a status request may ask for, in seconds (below `request_timeout_s`).
    pub max_wait_s: u64,
    /// On SIGTERM, how long running jobs may take to finish before they are stopped and
    /// requeued, in seconds.
    pub grace_period_s: u64,
    /// The `Retry-After` sent with 429, in seconds.
    pub retry_after_s: u64,
    /// Longest a client may take to send a request's headers, in seconds.
    pub header_timeout_s: u64,
    /// Longest a client may accept no bytes of a response before its connection is closed, in
    /// seconds.
    pub stall_timeout_s: u64,
    /// Connections open at once; more wait to be accepted.
    pub max_connections: usize,
    /// When set, `/metrics` needs `Authorization: Bearer <metrics_token>` (the byte count it
    /// shows tells an observer whether an upload was deduplicated).
    pub metrics_token: Option<String>,
    /// How long a finished job (its record, results and receipt) and an upload no job has used
    /// are kept, in seconds, unless the tenant keeps the job.
    pub retention_s: u64,
    /// Most bytes of blobs one tenant may hold (uploads and the results of its jobs that have
    /// not expired); past it, uploads and submissions get 507.
    pub tenant_storage_bytes: u64,
    /// How often expired jobs and unowned blobs are collected, in seconds.
    pub gc_interval_s: u64,
    /// Keep every tensor a traced job's trace names, so that a verifier can spot-check its ops
    /// (`GET /v1/jobs/{id}/tensors/{hash}`). Off by default: they can be many times the job's
    /// own results.
    pub keep_tensors: bool,
    /// How long a kept tensor lives after it was first kept, in seconds.
    pub tensor_retention_s: u64,
    /// Most bytes of kept tensors one tenant may have; past it, the oldest go first. Kept
    /// tensors are evidence, not results: they are not counted in `tenant_storage_bytes`.
    pub tenant_tensor_bytes: u64,
}

impl Default for ServeSettings {
    fn default() -> Self {
        ServeSettings {
            workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, MAX_WORKERS),
            max_queued: 10_000,
            max_queued_per_tenant: 10_000,
            max_running_per_tenant: 64,
            max_blob_bytes: 1 << 30,
            max_request_bytes: 1 << 20,
            request_timeout_s: 60,
            transfer_timeout_s: 600,
            max_wait_s: 30,
            grace_period_s: 30,
            retry_after_s: 1,
            header_timeout_s: 10,
            stall_timeout_s: 60,
            max_connections: 4096,
            metrics_token: None,
            retention_s: 7 * 24 * 3600,
            tenant_storage_bytes: 10 << 30,
            gc_interval_s: 60,
            keep_tensors: false,
            tensor_retention_s: 7 * 24 * 3600,
            tenant_tensor_bytes: 1 << 30,
        }
    }
}

/// The `[fleet]` table: a gateway's market (`gridbox serve --fleet`, spec/fleet.md). A plain
/// `serve` ignores it.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetSettings {
    /// Jobs handed to the market and not yet ended, at once (the rest wait in the gateway's
    /// queue, bounded by `serve.max_queued`).
    pub in_flight: usize,
    /// How long a provider may go without a sign of life on a job before JetStream delivers it
    /// to another provider, in seconds. Providers signal every third of it while a job runs.
    pub ack_wait_s: u64,
    /// Copies of each stream and bucket in a NATS cluster (1 on a single server; 3 for a
    /// cluster that must survive losing a server).
    pub replicas: usize,
}

impl Default for FleetSettings {
    fn default() -> Self {
        FleetSettings { in_flight: 1024, ack_wait_s: 30, replicas: 1 }
    }
}

impl ServeSettings {
    /// Time allowed for ordinary requests.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_s)
    }

    /// How long finished jobs and unused uploads live, in ms.
    pub fn retention_ms(&self) -> u64 {
        self.retention_s.saturating_mul(1000)
    }

    /// Time allowed for blob transfers.
    pub fn transfer_timeout(&self) -> Duration {
        Duration::from_secs(self.transfer_timeout_s)
    }
}

/// Everything the policy file says: the job [`Policy`], the tenants and the `[serve]` settings.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Capabilities and limits every job is resolved against.
    pub policy: Policy,
    /// Who may use the service.
    pub tenants: Vec<Tenant>,
    /// Worker pool, queue, body limits and timeouts.
    pub serve: ServeSettings,
    /// The market's settings, for a gateway.
    pub fleet: FleetSettings,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceTables {
    #[serde(default)]
    tenants: Vec<Tenant>,
    #[serde(default)]
    serve: ServeSettings,
    #[serde(default)]
    fleet: FleetSettings,
}

/// The top-level keys of a policy file.
const POLICY_FILE_KEYS: [&str; 7] = ["capabilities", "kernel_threads", "max", "default", "tenants", "serve", "fleet"];

/// Most a limit in `[serve]` may be set to where a larger value is surely a mistake.
const MAX_WORKERS: usize = 64;

impl ServiceConfig {
    /// Parses a policy file: the job policy's keys plus `[[tenants]]` and `[serve]`.
    pub fn from_toml(text: &str) -> Result<Self, ManifestError> {
        let parse = |source| ManifestError::Parse { what: "policy", source };
        let mut table: toml::Table = toml::from_str(text).map_err(parse)?;
        // Unknown top-level keys are named with their line and every key a policy file has: the
        // two halves below would each list only their own.
        if let Some(unknown) = table.keys().find(|key| !POLICY_FILE_KEYS.contains(&key.as_str())) {
            let line =
                text.lines().position(|line| line.trim_start().trim_start_matches('[').trim_start().trim_start_matches('"').starts_with(unknown.as_str()));
            let at = line.map(|n| format!(" (line {})", n + 1)).unwrap_or_default();
            return Err(ManifestError::InvalidPolicyValue {
                key: unknown.clone(),
                reason: format!("unknown key{at}; a policy file has: capabilities, kernel_threads, [max], [default], [[tenants]], [serve], [fleet]"),
            });
        }
        let mut service = toml::Table::new();
        for key in ["tenants", "serve", "fleet"] {
            if let Some(value) = table.remove(key) {
                service.insert(key.into(), value);
            }
        }
        let policy: Policy = table.try_into().map_err(parse)?;
        let tables: ServiceTables = service.try_into().map_err(parse)?;
        let config = ServiceConfig { policy, tenants: tables.tenants, serve: tables.serve, fleet: tables.fleet };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ManifestError> {
        let invalid = |key: String, reason: String| ManifestError::InvalidPolicyValue { key, reason };
        let mut names = BTreeSet::new();
        let mut tokens = BTreeSet::new();
        for (index, tenant) in self.tenants.iter().enumerate() {
            let key = format!("tenants[{index}]");
            let name_ok = (1..=64).contains(&tenant.name.len()) && tenant.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !name_ok {
                return Err(invalid(format!("{key}.name"), format!("{:?}: use 1 to 64 of A-Z a-z 0-9 _ . -", tenant.name)));
            }
            if !names.insert(&tenant.name) {
                return Err(invalid(format!("{key}.name"), format!("{:?} is listed twice", tenant.name)));
            }
            if tenant.token.len() < 16 || tenant.token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid(format!("{key}.token"), "must be at least 16 characters, without spaces".into()));
            }
            if !tokens.insert(&tenant.token) {
                return Err(invalid(format!("{key}.token"), "is the same as another tenant's".into()));
            }
        }
        let serve = &self.serve;
        if !(1..=MAX_WORKERS).contains(&serve.workers) {
            return Err(invalid("serve.workers".into(), format!("{} is not between 1 and {MAX_WORKERS}", serve.workers)));
        }
        for (key, value) in [
            ("serve.max_queued", serve.max_queued as u64),
            ("serve.max_queued_per_tenant", serve.max_queued_per_tenant as u64),
            ("serve.max_running_per_tenant", serve.max_running_per_tenant as u64),
            ("serve.max_blob_bytes", serve.max_blob_bytes),
            ("serve.max_request_bytes", serve.max_request_bytes as u64),
            ("serve.request_timeout_s", serve.request_timeout_s),
            ("serve.transfer_timeout_s", serve.transfer_timeout_s),
            ("serve.header_timeout_s", serve.header_timeout_s),
            ("serve.stall_timeout_s", serve.stall_timeout_s),
            ("serve.max_connections", serve.max_connections as u64),
            ("serve.retention_s", serve.retention_s),
            ("serve.tenant_storage_bytes", serve.tenant_storage_bytes),
            ("serve.gc_interval_s", serve.gc_interval_s),
            ("serve.tensor_retention_s", serve.tensor_retention_s),
            ("serve.tenant_tensor_bytes", serve.tenant_tensor_bytes),
        ] {
            if value == 0 {
                return Err(invalid(key.into(), "must be at least 1".into()));
            }
        }
        let fleet = &self.fleet;
        if !(1..=65_536).contains(&fleet.in_flight) {
            return Err(invalid("fleet.in_flight".into(), format!("{} is not between 1 and 65536", fleet.in_flight)));
        }
        if !(1..=3600).contains(&fleet.ack_wait_s) {
            return Err(invalid("fleet.ack_wait_s".into(), format!("{} is not between 1 and 3600", fleet.ack_wait_s)));
        }
        if !(1..=5).contains(&fleet.replicas) {
            return Err(invalid("fleet.replicas".into(), format!("{} is not between 1 and 5 (JetStream's limit)", fleet.replicas)));
        }
        if serve.max_wait_s >= serve.request_timeout_s {
            return Err(invalid("serve.max_wait_s".into(), format!("must be below serve.request_timeout_s ({})", serve.request_timeout_s)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridbox_core::LimitKind;

    #[test]
    fn one_file_holds_policy_tenants_and_settings() {
        let text = r#"
            [max]
            fuel = 1000
            [[tenants]]
            name = "alice"
            token = "alice-token-0123456789"
            [serve]
            workers = 2
            max_queued = 5
        "#;
        let config = ServiceConfig::from_toml(text).unwrap();
        assert_eq!(config.policy.max(LimitKind::Fuel), 1000);
        assert_eq!(config.tenants[0].name, "alice");
        assert_eq!((config.serve.workers, config.serve.max_queued), (2, 5));
        assert!(!format!("{config:?}").contains("alice-token"), "tokens must not reach Debug output");
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            ("[serve]\nworkerz = 2\n", "workerz"),
            ("[serve]\nworkers = 0\n", "serve.workers"),
            ("[[tenants]]\nname = \"a b\"\ntoken = \"0123456789abcdef\"\n", "tenants[0].name"),
            ("[[tenants]]\nname = \"a\"\ntoken = \"short\"\n", "tenants[0].token"),
            ("[[tenants]]\nname = \"a\"\ntoken = \"0123456789abcdef\"\n[[tenants]]\nname = \"a\"\ntoken = \"0123456789abcdeg\"\n", "listed twice"),
            ("[serve]\nmax_wait_s = 60\nrequest_timeout_s = 60\n", "serve.max_wait_s"),
            ("[max]\nfule = 1\n", "fule"),
            (
                "# a policy\n[[tenant]]\nname = \"a\"\n",
                "policy key `tenant` is invalid: unknown key (line 2); a policy file has: capabilities, kernel_threads, [max], [default], [[tenants]], [serve], [fleet]",
            ),
        ];
        for (text, needle) in cases {
            let message = ServiceConfig::from_toml(text).unwrap_err().to_string();
            assert!(message.contains(needle), "{needle}: {message}");
            assert!(!message.contains("manifest key"), "a policy error is called a policy error: {message}");
        }
    }
}

//! The market's names and settings on JetStream, and connecting to it: the gateway creates the
//! streams, consumers and buckets ([`Market::create`]); providers and checkers only bind to them
//! ([`Market::open`]), so their NATS users need no right to create or change anything.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};

use crate::FleetError;

/// The work queue: one message per job to run (`{"id", "attempt"}`), taken by one provider.
pub const JOBS_STREAM: &str = "GRIDBOX_JOBS";
/// The subject jobs are published on.
pub const JOBS_SUBJECT: &str = "gridbox.jobs";
/// The providers' shared durable pull consumer on [`JOBS_STREAM`].
pub const PROVIDERS_CONSUMER: &str = "providers";
/// Job records, by job id (spec/fleet.md, "Job records").
pub const RECORDS_BUCKET: &str = "gridbox-jobs";
/// The stream behind [`RECORDS_BUCKET`], which checkers read every record update from.
pub const RECORDS_STREAM: &str = "KV_gridbox-jobs";
/// The checkers' shared durable pull consumer on [`RECORDS_STREAM`].
pub const CHECKERS_CONSUMER: &str = "checkers";
/// Blobs, by BLAKE3 in hex, larger ones in chunks (see [`crate::blobs`]).
pub const BLOBS_BUCKET: &str = "gridbox-blobs";
/// Verdicts, by job id.
pub const VERDICTS_BUCKET: &str = "gridbox-verdicts";
/// Each provider's tally of verdicts, by its public key in hex.
pub const TALLY_BUCKET: &str = "gridbox-providers";

/// Blobs up to this size are one KV value (one message); larger ones are chunks of this size.
/// Below NATS's default 1 MiB message limit, with room for headers.
pub const SMALL_BLOB_BYTES: usize = 256 << 10;
/// Largest job record (it carries the manifest's canonical text).
pub const MAX_RECORD_BYTES: usize = 128 << 10;
/// Largest verdict.
pub const MAX_VERDICT_BYTES: usize = 8192;
/// Largest message on [`JOBS_SUBJECT`].
pub const MAX_JOB_MESSAGE_BYTES: usize = 1024;
/// Deliveries of one job message before JetStream stops delivering it.
pub const MAX_DELIVERIES: i64 = 20;
/// How long JetStream drops a second publication of the same job message (`Nats-Msg-Id`).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// How a process authenticates to NATS. Its `Debug` shows which kinds are set, never a secret.
#[derive(Clone, Default)]
pub struct Credentials {
    /// A user and password (the server's `authorization { users = [...] }`).
    pub user_password: Option<(String, String)>,
    /// A `.creds` file (a JWT and an NKey seed, from `nsc`).
    pub creds_file: Option<PathBuf>,
    /// An NKey seed (`SU...`), for servers configured with `nkey` users.
    pub nkey_seed: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user_password.as_ref().map(|(user, _)| user))
            .field("password", &self.user_password.as_ref().map(|_| "***"))
            .field("creds_file", &self.creds_file)
            .field("nkey_seed", &self.nkey_seed.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Settings the gateway creates the market with.
#[derive(Debug, Clone)]
pub struct MarketSettings {
    /// How long records, blobs, verdicts and unconsumed job messages live.
    pub retention: Duration,
    /// A provider's time to show a sign of life on a job before it goes to another provider.
    pub ack_wait: Duration,
    /// Copies of each stream and bucket (a cluster's replication factor).
    pub replicas: usize,
}

/// The market's streams and buckets, bound.
#[derive(Clone)]
pub struct Market {
    /// The connection.
    pub client: async_nats::Client,
    /// JetStream on it.
    pub js: jetstream::Context,
    /// [`RECORDS_BUCKET`].
    pub records: kv::Store,
    /// [`BLOBS_BUCKET`].
    pub blobs: kv::Store,
    /// [`VERDICTS_BUCKET`].
    pub verdicts: kv::Store,
    /// [`TALLY_BUCKET`].
    pub tally: kv::Store,
}

/// The error for a stream, consumer or bucket of the market that could not be bound.
fn missing<E: Into<gridbox_core::errors::BoxError>>(what: String) -> impl FnOnce(E) -> FleetError {
    move |e| FleetError::MarketMissing { what, source: e.into() }
}

/// Connects to NATS at `url` as `name` (shown in the server's connection list). The client
/// reconnects by itself for as long as the process runs.
pub async fn connect(url: &str, credentials: &Credentials, name: &str) -> Result<async_nats::Client, FleetError> {
    let mut options = async_nats::ConnectOptions::new().name(name).connection_timeout(Duration::from_secs(5)).max_reconnects(None);
    if let Some((user, password)) = &credentials.user_password {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(seed) = &credentials.nkey_seed {
        options = options.nkey(seed.clone());
    }
    if let Some(path) = &credentials.creds_file {
        options = options.credentials_file(path).await.map_err(|source| FleetError::Credentials { path: path.clone(), source })?;
    }
    options.connect(url).await.map_err(|e| FleetError::Connect { url: crate::redacted_url(url), source: e.into() })
}

impl Market {
    /// Creates the market's streams, consumers and buckets, or binds to those that exist (the
    /// gateway, at every start). Settings take effect when a stream or bucket is first made: an
    /// existing one keeps its own (change it with NATS's tools; spec/fleet.md).
    pub async fn create(client: async_nats::Client, settings: &MarketSettings) -> Result<Market, FleetError> {
        let js = jetstream::new(client.clone());
        let replicas = settings.replicas;
        let jobs = js
            .get_or_create_stream(stream::Config {
                name: JOBS_STREAM.into(),
                subjects: vec![JOBS_SUBJECT.into()],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                max_age: settings.retention,
                max_message_size: MAX_JOB_MESSAGE_BYTES as i32,
                duplicate_window: DUPLICATE_WINDOW,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| FleetError::nats(format!("create stream {JOBS_STREAM}"), e))?;
        jobs.get_or_create_consumer(
            PROVIDERS_CONSUMER,
            consumer::pull::Config {
                durable_name: Some(PROVIDERS_CONSUMER.into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: settings.ack_wait,
                // A message nobody can handle (a provider killed by it each time, say) stops
                // coming back; the gateway publishes a job again when its record goes stale.
                max_deliver: MAX_DELIVERIES,
                max_ack_pending: -1,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| FleetError::nats(format!("create consumer {PROVIDERS_CONSUMER}"), e))?;
        // Each bucket's stream is made here as the client library would make it (a KV bucket is
        // a stream named KV_<bucket> on `$KV.<bucket>.>`), because the library's own bucket
        // creation first reads the account's details in a shape servers before 2.10 do not send.
        let create_kv = |name: &'static str, max_value_size: usize, max_age: Duration| {
            let js = js.clone();
            async move {
                js.get_or_create_stream(stream::Config {
                    name: format!("KV_{name}"),
                    subjects: vec![format!("$KV.{name}.>")],
                    max_messages_per_subject: 1,
                    max_age,
                    max_message_size: max_value_size as i32,
                    storage: stream::StorageType::File,
                    allow_rollup: true,
                    deny_delete: true,
                    // Reads go through the stream's message API, which hands a stored value's
                    // headers back as data: with direct gets, a value whose headers look like a
                    // NATS status line would be read as that status (an error, or "no value").
                    allow_direct: false,
                    discard: stream::DiscardPolicy::New,
                    num_replicas: replicas,
                    duplicate_window: if max_age.is_zero() { Duration::from_secs(120) } else { max_age.min(Duration::from_secs(120)) },
                    ..Default::default()
                })
                .await
                .map_err(|e| FleetError::nats(format!("create bucket {name}"), e))?;
                js.get_key_value(name).await.map_err(|e| FleetError::nats(format!("open bucket {name}"), e))
            }
        };
        let retention = settings.retention;
        let records = create_kv(RECORDS_BUCKET, MAX_RECORD_BYTES, retention).await?;
        let blobs = create_kv(BLOBS_BUCKET, SMALL_BLOB_BYTES, retention).await?;
        let verdicts = create_kv(VERDICTS_BUCKET, MAX_VERDICT_BYTES, retention).await?;
        let tally = create_kv(TALLY_BUCKET, 1024, Duration::ZERO).await?;
        // Checkers read every record update; replays take a while, so their deliveries wait long.
        let records_stream = js.get_stream(RECORDS_STREAM).await.map_err(|e| FleetError::nats(format!("open stream {RECORDS_STREAM}"), e))?;
        records_stream
            .get_or_create_consumer(
                CHECKERS_CONSUMER,
                consumer::pull::Config {
                    durable_name: Some(CHECKERS_CONSUMER.into()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: settings.ack_wait.max(Duration::from_secs(60)),
                    max_deliver: -1,
                    max_ack_pending: -1,
                    deliver_policy: consumer::DeliverPolicy::All,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| FleetError::nats(format!("create consumer {CHECKERS_CONSUMER}"), e))?;
        Ok(Market { client, js, records, blobs, verdicts, tally })
    }

    /// Binds to a market the gateway created (providers and checkers).
    pub async fn open(client: async_nats::Client) -> Result<Market, FleetError> {
        let js = jetstream::new(client.clone());
        let records = js.get_key_value(RECORDS_BUCKET).await.map_err(missing(format!("bucket {RECORDS_BUCKET}")))?;
        let blobs = js.get_key_value(BLOBS_BUCKET).await.map_err(missing(format!("bucket {BLOBS_BUCKET}")))?;
        let verdicts = js.get_key_value(VERDICTS_BUCKET).await.map_err(missing(format!("bucket {VERDICTS_BUCKET}")))?;
        let tally = js.get_key_value(TALLY_BUCKET).await.map_err(missing(format!("bucket {TALLY_BUCKET}")))?;
        Ok(Market { client, js, records, blobs, verdicts, tally })
    }

    /// A durable pull consumer the gateway created: `consumer` on `stream`.
    pub async fn consumer(&self, stream: &str, consumer: &str) -> Result<consumer::PullConsumer, FleetError> {
        let handle = self.js.get_stream_no_info(stream).await.map_err(missing(format!("stream {stream}")))?;
        handle.get_consumer(consumer).await.map_err(missing(format!("consumer {consumer} on stream {stream}")))
    }
}

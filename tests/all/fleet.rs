//! The market (spec/fleet.md) as operators run it: a real `nats-server -js` on loopback, the
//! gateway (`gridbox serve --fleet`), providers (`gridbox provide`) and a checker
//! (`gridbox check`) as separate processes, tenants through the HTTP API.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gridbox_core::{Digest, Receipt};
use gridbox_service::client::Client;
use gridbox_service::wire::{JobState, JobStatus};

use crate::common::{gridbox_output, probe};
use crate::fleet_procs::{Nats, Proc, http_get, metric};
use crate::serve::{ALICE, BOB, SLOW, Server, api_code, manifest, runtime, verify_job, wait_for_end};

/// `[serve]` and `[fleet]` for a gateway: a short ack wait so that a dead provider's job moves on
/// in seconds.
const GATEWAY: &str = "workers = 1\n[fleet]\nack_wait_s = 2\n";

/// A gateway on `nats`, its data in `dir`.
fn gateway(dir: &Path, nats: &Nats) -> Server {
    Server::start_with(dir, GATEWAY, &["--fleet", &nats.url()])
}

/// A new provider key file in `dir`; its path and public key (hex).
fn provider_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(format!("{name}.key"));
    let output = gridbox_output(&[&"keygen", &path]);
    assert!(output.status.success());
    let public = std::fs::read_to_string(path.with_extension("key.pub")).unwrap().trim().to_string();
    (path, public)
}

/// The number of lines of the gateway's log saying that job `id` ended.
fn ended_lines(log: &str, id: &str) -> usize {
    log.lines().filter(|line| line.contains(&format!("job {id} ended"))).count()
}

/// Waits until `check` holds, up to two minutes.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Submits `count` probe jobs writing one file of `index + 1` bytes, as `client`; their ids.
async fn submit_jobs(client: &Client, module: &[u8], count: u64, seed_base: u64) -> Vec<String> {
    client.ensure_blob(&Bytes::copy_from_slice(module)).await.unwrap();
    let mut ids = Vec::new();
    for index in 0..count {
        let text = manifest(module, &["write-files", "1", &(index % 64 + 1).to_string()], seed_base + index);
        ids.push(client.submit(&text).await.unwrap().id);
    }
    ids
}

async fn wait_all(client: &Client, ids: &[String]) -> Vec<JobStatus> {
    let mut ended = Vec::new();
    for id in ids {
        ended.push(wait_for_end(client, id).await);
    }
    ended
}

#[test]
fn three_providers_and_a_checker_end_a_thousand_jobs_of_two_tenants_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(&dir.path().join("nats"));
    let gateway = gateway(&dir.path().join("gateway"), &nats);
    let keys: Vec<(PathBuf, String)> = (0..3).map(|i| provider_key(dir.path(), &format!("p{i}"))).collect();
    let providers: Vec<Proc> = keys.iter().map(|(key, _)| Proc::provider(&nats.url(), key, 2)).collect();
    let checker = Proc::checker(&nats.url());
    let module = probe();
    let (alice_jobs, bob_jobs) = runtime().block_on(async {
        let (alice, bob) = (gateway.client(ALICE), gateway.client(BOB));
        let (a, b) = tokio::join!(submit_jobs(&alice, &module, 500, 0), submit_jobs(&bob, &module, 500, 10_000));
        let (alice_jobs, bob_jobs) = tokio::join!(wait_all(&alice, &a), wait_all(&bob, &b));
        for status in alice_jobs.iter().chain(&bob_jobs) {
            assert_eq!(status.state, JobState::Succeeded, "{status:?}");
        }
        // Tenants see only their own jobs and results.
        for (owner, other, status) in [(&alice, &bob, &alice_jobs[7]), (&bob, &alice, &bob_jobs[9])] {
            assert_eq!(api_code(&other.status(&status.id, Duration::ZERO).await.unwrap_err()), (404, "not_found"));
            assert_eq!(api_code(&other.receipt(&status.id).await.unwrap_err()), (404, "not_found"));
            assert!(owner.receipt(&status.id).await.is_ok());
        }
        // Receipts verify by replay, and each is signed by one of the three providers.
        for (client, statuses) in [(&alice, &alice_jobs), (&bob, &bob_jobs)] {
            for status in statuses.iter().step_by(50) {
                verify_job(client, status, &module).await;
            }
            for status in statuses {
                let receipt = Receipt::from_json(&client.receipt(&status.id).await.unwrap()).unwrap();
                assert!(keys.iter().any(|(_, public)| *public == receipt.public_key), "signed by an unknown key: {}", receipt.public_key);
            }
        }
        (alice_jobs, bob_jobs)
    });
    // Each job ended exactly once: one end in the gateway's log, one winning end in the market.
    let log = gateway.log();
    for status in alice_jobs.iter().chain(&bob_jobs) {
        assert_eq!(ended_lines(&log, &status.id), 1, "job {}", status.id);
    }
    let ended: u64 = providers.iter().map(|p| p.metric("gridbox_fleet_provider_ended_total")).sum();
    assert_eq!(ended, 1000, "ends recorded in the market");
    assert!(providers.iter().all(|p| p.metric("gridbox_fleet_provider_ended_total") > 0), "every provider took jobs");
    // The checker replays every job: all match, and the gateway shows each provider's tally.
    eventually("the checker's 1000 verdicts", || checker.metric("gridbox_fleet_checker_verdicts_total{verdict=\"match\"}") == 1000);
    assert_eq!(checker.metric("gridbox_fleet_checker_verdicts_total{verdict=\"mismatch\"}"), 0);
    let metrics = http_get(&format!("{}/metrics", gateway.url));
    assert_eq!(metric(&metrics, "gridbox_jobs{state=\"succeeded\"}"), 1000, "{metrics}");
    eventually("the tallies on the gateway", || {
        let metrics = http_get(&format!("{}/metrics", gateway.url));
        keys.iter().map(|(_, public)| metric(&metrics, &format!("gridbox_fleet_provider_checked_total{{provider=\"{public}\"}}"))).sum::<u64>() == 1000
    });
    for ((_, public), provider) in keys.iter().zip(&providers) {
        assert_eq!(metric(&metrics, &format!("gridbox_fleet_provider_mismatches_total{{provider=\"{public}\"}}")), 0);
        let jobs = metric(&metrics, &format!("gridbox_fleet_provider_jobs_total{{provider=\"{public}\"}}"));
        assert_eq!(jobs, provider.metric("gridbox_fleet_provider_ended_total"), "jobs per provider, as the gateway counts them");
    }
    runtime().block_on(async {
        let status = gateway.client(ALICE).status(&alice_jobs[0].id, Duration::ZERO).await.unwrap();
        let verdict = status.verdict.expect("a verdict in the status");
        assert_eq!(verdict.verdict, "match");
        assert!(keys.iter().any(|(_, public)| *public == verdict.provider));
    });
}

#[test]
fn a_provider_killed_mid_job_loses_nothing_the_job_ends_once_on_another_provider() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(&dir.path().join("nats"));
    let gateway = gateway(&dir.path().join("gateway"), &nats);
    let (first_key, _) = provider_key(dir.path(), "first");
    let (second_key, second_public) = provider_key(dir.path(), "second");
    let first = Proc::provider(&nats.url(), &first_key, 1);
    let module = probe();
    let id = runtime().block_on(async {
        let alice = gateway.client(ALICE);
        alice.ensure_blob(&Bytes::copy_from_slice(&module)).await.unwrap();
        alice.submit(&manifest(&module, SLOW, 1)).await.unwrap().id
    });
    first.wait_for_line(&format!("job {id} started"));
    first.kill_9();
    let second = Proc::provider(&nats.url(), &second_key, 1);
    let status = runtime().block_on(async {
        let alice = gateway.client(ALICE);
        let status = wait_for_end(&alice, &id).await;
        assert_eq!(status.state, JobState::Succeeded, "{status:?}");
        verify_job(&alice, &status, &module).await;
        let receipt = Receipt::from_json(&alice.receipt(&id).await.unwrap()).unwrap();
        assert_eq!(receipt.public_key, second_public, "the second provider ran and signed it");
        status
    });
    assert!(second.log().contains(&format!("job {id} started (delivery 2)")), "{}", second.log());
    assert_eq!(ended_lines(&gateway.log(), &status.id), 1);
    assert_eq!(second.metric("gridbox_fleet_provider_redelivered_total"), 1);
}

#[test]
fn the_gateway_killed_and_nats_restarted_lose_no_accepted_job() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(&dir.path().join("nats"));
    let folder = dir.path().join("gateway");
    let gateway_before = gateway(&folder, &nats);
    let (key, _) = provider_key(dir.path(), "p");
    let provider = Proc::provider(&nats.url(), &key, 2);
    let module = probe();
    let ids = runtime().block_on(submit_jobs(&gateway_before.client(ALICE), &module, 40, 0));
    // Killed with jobs accepted, some in the market, some waiting in it.
    gateway_before.stop("-KILL");
    let nats = nats.restart();
    let gateway = gateway(&folder, &nats);
    assert!(gateway.log().contains("queued jobs recovered"), "{}", gateway.log());
    // NATS restarts again while the gateway and the provider are connected.
    let nats = nats.restart();
    let statuses = runtime().block_on(wait_all(&gateway.client(ALICE), &ids));
    for status in &statuses {
        assert_eq!(status.state, JobState::Succeeded, "{status:?}");
    }
    runtime().block_on(verify_job(&gateway.client(ALICE), &statuses[39], &module));
    let log = gateway.log();
    // The restarted gateway records each end at most once (the first may have recorded some).
    for status in &statuses {
        assert!(ended_lines(&log, &status.id) <= 1, "job {}", status.id);
    }
    assert_eq!(provider.metric("gridbox_fleet_provider_ended_total"), 40, "each job ended once in the market: {}", provider.log());
    drop(nats);
}

#[test]
fn a_lying_provider_is_caught_and_recorded_against_its_key_and_the_honest_one_never_is() {
    let liar_binary = build_lying_provider();
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(&dir.path().join("nats"));
    let gateway = gateway(&dir.path().join("gateway"), &nats);
    let (liar_key, liar_public) = provider_key(dir.path(), "liar");
    let (honest_key, honest_public) = provider_key(dir.path(), "honest");
    let mut command = std::process::Command::new(&liar_binary);
    command.arg(nats.url()).arg(&liar_key);
    let liar = Proc::start(command, "lying provider");
    let honest = Proc::provider(&nats.url(), &honest_key, 1);
    let checker = Proc::checker(&nats.url());
    let module = probe();
    let statuses = runtime().block_on(async {
        let alice = gateway.client(ALICE);
        let ids = submit_jobs(&alice, &module, 24, 0).await;
        wait_all(&alice, &ids).await
    });
    let (mut by_liar, mut by_honest) = (Vec::new(), Vec::new());
    runtime().block_on(async {
        let alice = gateway.client(ALICE);
        for status in &statuses {
            let receipt = Receipt::from_json(&alice.receipt(&status.id).await.unwrap()).unwrap();
            if receipt.public_key == liar_public { by_liar.push(status.id.clone()) } else { by_honest.push(status.id.clone()) }
        }
    });
    assert!(!by_liar.is_empty() && !by_honest.is_empty(), "both providers ran jobs: liar {by_liar:?}, honest {by_honest:?}");
    eventually("a verdict on every job", || checker.metric("gridbox_fleet_checker_checked_total") >= 24);
    let verdicts: BTreeMap<String, String> = runtime().block_on(async {
        let alice = gateway.client(ALICE);
        let mut verdicts = BTreeMap::new();
        for status in &statuses {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(verdict) = alice.status(&status.id, Duration::ZERO).await.unwrap().verdict {
                    verdicts.insert(status.id.clone(), format!("{} {} {}", verdict.verdict, verdict.provider, verdict.detail.unwrap_or_default()));
                    break;
                }
                assert!(Instant::now() < deadline, "no verdict on {}", status.id);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        verdicts
    });
    for id in &by_liar {
        assert!(verdicts[id].starts_with(&format!("mismatch {liar_public} outputs[\"f0.bin\"]")), "{id}: {}", verdicts[id]);
    }
    for id in &by_honest {
        assert!(verdicts[id].starts_with(&format!("match {honest_public}")), "{id}: {}", verdicts[id]);
    }
    eventually("the liar's tally on the gateway", || {
        let metrics = http_get(&format!("{}/metrics", gateway.url));
        metric(&metrics, &format!("gridbox_fleet_provider_mismatches_total{{provider=\"{liar_public}\"}}")) == by_liar.len() as u64
    });
    let metrics = http_get(&format!("{}/metrics", gateway.url));
    assert_eq!(metric(&metrics, &format!("gridbox_fleet_provider_mismatches_total{{provider=\"{honest_public}\"}}")), 0, "{metrics}");
    assert!(checker.log().contains(&format!("MISMATCH: provider {liar_public}")), "{}", checker.log());
    drop((liar, honest));
}

/// Builds the lying provider (`crates/gridbox-fleet/examples/lying_provider.rs`, feature
/// `lying-provider`), a test-only build; its path.
fn build_lying_provider() -> PathBuf {
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "gridbox-fleet", "--features", "lying-provider", "--example", "lying_provider"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo");
    assert!(status.success(), "cannot build the lying provider");
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("debug/examples/lying_provider")
}

#[test]
fn malformed_messages_and_rogue_records_get_clear_errors_and_the_jobs_still_end() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(&dir.path().join("nats"));
    let gateway = gateway(&dir.path().join("gateway"), &nats);
    let module = probe();
    // With no provider yet, the jobs wait in the market while a rogue writes over their records.
    let ids = runtime().block_on(submit_jobs(&gateway.client(ALICE), &module, 4, 0));
    let rogue_key = "ab".repeat(32);
    runtime().block_on(async {
        // The rogue reads the first job's record and ends it with a receipt that is not there.
        use gridbox_fleet::record::{End, JobRecord, RecordState};
        let client = gridbox_fleet::market::connect(&nats.url(), &Default::default(), "rogue").await.unwrap();
        let market = gridbox_fleet::Market::open(client).await.unwrap();
        let entry = market.records.entry(ids[0].as_str()).await.unwrap().unwrap();
        let mut record = JobRecord::parse(&ids[0], &entry.value).unwrap();
        let receipt = gridbox_core::digest::BlobRef { blake3: Digest::of(b"no such receipt"), size: 10 };
        record.state =
            RecordState::Ended { provider: rogue_key.clone(), started_at_ms: 1, finished_at_ms: 2, end: End::Ran { receipt, trace: None, reason: None } };
        market.records.put(ids[0].as_str(), record.to_bytes().into()).await.unwrap();
        // And rewrites the third job's manifest.
        let entry = market.records.entry(ids[2].as_str()).await.unwrap().unwrap();
        let mut record = JobRecord::parse(&ids[2], &entry.value).unwrap();
        record.manifest = "module = \"0000\"".into();
        market.records.put(ids[2].as_str(), record.to_bytes().into()).await.unwrap();
        // And deletes the fourth job's record twice (the gateway writes it again in between):
        // two of the three attempts a job has.
        for _ in 0..2 {
            let deadline = Instant::now() + Duration::from_secs(30);
            while market.records.get(ids[3].as_str()).await.unwrap().is_none() {
                assert!(Instant::now() < deadline, "the gateway did not write the record again");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            market.records.delete(ids[3].as_str()).await.unwrap();
        }
    });
    nats.publish_raw(&format!("$KV.gridbox-jobs.{}", ids[1]), b"\xff not a record");
    // Garbage on the work queue, and a job message for a job that does not exist.
    nats.publish_raw("gridbox.jobs", b"{\"id\": \"../../etc\", \"attempt\": 0}");
    nats.publish_raw("gridbox.jobs", b"\x00\x01garbage");
    nats.publish_raw("gridbox.jobs", b"{\"id\": \"abcdef\", \"attempt\": 0}");
    let (key, _) = provider_key(dir.path(), "p");
    let provider = Proc::provider(&nats.url(), &key, 1);
    let statuses = runtime().block_on(wait_all(&gateway.client(ALICE), &ids));
    for status in &statuses {
        assert_eq!(status.state, JobState::Succeeded, "{status:?}");
    }
    let log = gateway.log();
    assert!(log.contains(&format!("job {}: provider {rogue_key}: its receipt: blob", ids[0])), "{log}");
    assert!(log.contains(&format!("job {}: malformed job record {}", ids[1], ids[1])), "{log}");
    assert!(
        log.contains(&format!("job {}: malformed job record {}: it names another manifest than the job's; queueing the job again", ids[2], ids[2])),
        "{log}"
    );
    let provider_log = provider.log();
    assert!(provider_log.contains("dropped a message from the work queue: malformed job message"), "{provider_log}");
    assert!(provider.metric("gridbox_fleet_provider_malformed_total") >= 2, "{provider_log}");
    assert!(!provider_log.contains("panicked") && !log.contains("panicked"));
    // A job its wall-time limit stops: no replay can check where it stopped, so the checker
    // calls it unverifiable, never a mismatch against the honest provider that ran it.
    let spinning = runtime().block_on(async {
        let alice = gateway.client(ALICE);
        let mut spin = gridbox_core::Manifest::new(Digest::of(&module));
        spin.args = vec!["spin".into()];
        spin.limits.set(gridbox_core::LimitKind::WallTimeMs, 300);
        spin.limits.set(gridbox_core::LimitKind::Fuel, 1_000_000_000_000);
        let status = alice.submit(&toml::to_string(&spin).unwrap()).await.unwrap();
        wait_for_end(&alice, &status.id).await
    });
    assert_eq!(spinning.state, JobState::Failed, "{spinning:?}");
    assert!(spinning.reason.as_deref().unwrap_or_default().contains("wall_time_ms"), "{spinning:?}");
    // A checker started now reads every record update the market still holds: the jobs' ends
    // match, and nothing the rogue wrote becomes a mismatch against anyone.
    let checker = Proc::checker(&nats.url());
    eventually("the checker's verdicts", || checker.metric("gridbox_fleet_checker_verdicts_total{verdict=\"match\"}") >= 3);
    eventually("the stopped job's verdict", || checker.metric("gridbox_fleet_checker_verdicts_total{verdict=\"unverifiable\"}") >= 1);
    assert_eq!(checker.metric("gridbox_fleet_checker_verdicts_total{verdict=\"mismatch\"}"), 0, "{}", checker.log());
    let metrics = http_get(&format!("{}/metrics", gateway.url));
    assert!(metric(&metrics, "gridbox_fleet_refused_results_total") >= 1, "{metrics}");
    assert!(metric(&metrics, "gridbox_fleet_malformed_records_total") >= 1, "{metrics}");
    // A provider refused a market that is not there with one line that says what to do.
    let empty = Nats::start(&dir.path().join("empty"));
    let output = gridbox_output(&[&"provide", &"--nats", &empty.url(), &"--key", &key, &"--device", &"cpu"]);
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("does not exist: start the gateway (`gridbox serve --fleet`)"), "{text}");
}

#[test]
fn a_blob_whose_bytes_do_not_match_its_name_is_never_used_and_limits_hold_before_reading() {
    use gridbox_fleet::FleetError;
    use gridbox_fleet::market::{self, Market, MarketSettings};
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(&dir.path().join("nats"));
    runtime().block_on(async {
        let client = market::connect(&nats.url(), &Default::default(), "test").await.unwrap();
        let settings = MarketSettings { retention: Duration::from_secs(3600), ack_wait: Duration::from_secs(5), replicas: 1 };
        let market = Market::create(client, &settings).await.unwrap();
        // Small and large blobs round-trip under their hash.
        let small = b"small blob".to_vec();
        let large: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for bytes in [&small, &large] {
            let stored = market.put_blob(bytes).await.unwrap();
            assert_eq!(market.get_blob(&stored.blake3, bytes.len() as u64, "input").await.unwrap(), *bytes);
            // Above the reader's limit: refused before it is read whole.
            let refused = market.get_blob(&stored.blake3, bytes.len() as u64 - 1, "input").await.unwrap_err();
            assert!(matches!(refused, FleetError::BlobTooLarge { .. }), "{refused}");
        }
        // A rogue stores other bytes under a blob's name, small and large.
        let claimed = Digest::of(b"what the name promises");
        market.blobs.put(claimed.to_hex(), Bytes::from_static(b"something else")).await.unwrap();
        let error = market.get_blob(&claimed, 1 << 20, "module").await.unwrap_err();
        assert!(matches!(error, FleetError::BlobMismatch { .. }), "{error}");
        assert!(error.to_string().contains("refused"), "{error}");
        let large_name = Digest::of(&large);
        let index = market.blobs.get(format!("index.{}", large_name.to_hex())).await.unwrap().unwrap();
        let claimed_large = Digest::of(b"a large promise");
        market.blobs.put(format!("index.{}", claimed_large.to_hex()), index.clone()).await.unwrap();
        let error = market.get_blob(&claimed_large, 1 << 20, "input").await.unwrap_err();
        assert!(matches!(error, FleetError::BlobMismatch { .. }), "{error}");
        // A chunk overwritten with other bytes, an index that claims more than its chunks hold, or
        // one that is not an index: refused with a clear error, before anything large is read.
        let first_chunk = Digest(index[8..40].try_into().unwrap());
        market.blobs.put(first_chunk.to_hex(), Bytes::from_static(b"not the chunk")).await.unwrap();
        let error = market.get_blob(&large_name, 1 << 20, "input").await.unwrap_err();
        assert!(error.to_string().contains("chunk 0 is 13 bytes"), "{error}");
        let mut lying_index = index.to_vec();
        lying_index[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        market.blobs.put(format!("index.{}", claimed_large.to_hex()), lying_index.into()).await.unwrap();
        let error = market.get_blob(&claimed_large, u64::MAX, "input").await.unwrap_err();
        assert!(error.to_string().contains("chunks cannot hold"), "{error}");
        market.blobs.put(format!("index.{}", claimed_large.to_hex()), Bytes::from_static(b"short")).await.unwrap();
        let error = market.get_blob(&claimed_large, u64::MAX, "input").await.unwrap_err();
        assert!(error.to_string().contains("is not a size and whole chunk hashes"), "{error}");
        let missing = market.get_blob(&Digest::of(b"never stored"), 10, "input").await.unwrap_err();
        assert!(matches!(missing, FleetError::BlobMissing(_)), "{missing}");
    });
}

#[test]
fn large_inputs_and_outputs_cross_the_market_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(&dir.path().join("nats"));
    let gateway = gateway(&dir.path().join("gateway"), &nats);
    let (key, _) = provider_key(dir.path(), "p");
    let _provider = Proc::provider(&nats.url(), &key, 1);
    let module = probe();
    // Three chunks and a bit in, two out (chunks are 256 KiB).
    let big: Vec<u8> = (0..800_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    runtime().block_on(async {
        let alice = gateway.client(ALICE);
        alice.ensure_blob(&Bytes::copy_from_slice(&module)).await.unwrap();
        alice.ensure_blob(&Bytes::copy_from_slice(&big)).await.unwrap();
        let mut reading = gridbox_core::Manifest::new(Digest::of(&module));
        reading.args = vec!["read".into(), "/input/big".into()];
        reading.inputs.insert("big".into(), Digest::of(&big));
        let read = alice.submit(&toml::to_string(&reading).unwrap()).await.unwrap();
        let write = alice.submit(&manifest(&module, &["write-files", "1", "300000"], 1)).await.unwrap();
        let read = wait_for_end(&alice, &read.id).await;
        assert_eq!(read.state, JobState::Succeeded, "{read:?}");
        let stdout = alice.download(&read.stdout.unwrap()).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&stdout), "read 800000 bytes from /input/big\n");
        let write = wait_for_end(&alice, &write.id).await;
        assert_eq!(write.state, JobState::Succeeded, "{write:?}");
        assert_eq!(alice.download(&write.outputs["f0.bin"]).await.unwrap(), vec![7u8; 300_000]);
        verify_job(&alice, &write, &module).await;
    });
}

//! Spot checks (spec/trace.md, "Spot checks"): a server keeps a traced job's trace log and, when
//! its policy says so, its tensors; `gridbox spot-check` checks K random entries of the job from
//! what the server hands out. An honest job passes, another tenant sees nothing, tensors past the
//! tenant's cap are gone (and a spot check that needs them fails saying so), a kill -9 after the
//! job's end loses no trace log, and at the library level K = 30 samples catch a provider that
//! falsified 10% of its ops in at least 95 of 100 seeded trials and never flag an honest one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use gridbox_compute::{TraceChain, TraceEntry, merkle, trace_log};
use gridbox_core::kept_tensors::TensorDir;
use gridbox_core::verify::check_op;
use gridbox_core::verify::spot::{SplitMix64, sample_indices};
use gridbox_core::{Capability, Digest, Job, Manifest, Policy, Receipt, RunOptions, keys};

use crate::common::{engine, gridbox_output, stderr};
use crate::guests;
use crate::serve::{ALICE, BOB, Server, api_code, runtime, wait_for_end};

const TENSOR_POLICY: &str = "capabilities = [\"wasi\", \"tensor\"]";

fn probe_module() -> Vec<u8> {
    std::fs::read(guests::TENSOR_PROBE.path()).unwrap()
}

/// `chain n`: a create, n x (matmul, tanh) and a read: 2n + 2 entries.
fn chain_manifest(module: &[u8], n: usize) -> Manifest {
    let mut manifest = Manifest::new(Digest::of(module));
    manifest.args = vec!["chain".into(), n.to_string()];
    manifest.capabilities = vec![Capability::Wasi, Capability::Tensor];
    manifest
}

/// Runs `chain n` on `server` as alice; the job's id and its receipt, written to `dir`.
fn run_chain(server: &Server, n: usize, dir: &Path) -> (String, PathBuf) {
    let module = probe_module();
    let client = server.client(ALICE);
    runtime().block_on(async {
        client.ensure_blob(&Bytes::from(module.clone())).await.unwrap();
        let status = client.submit(&toml::to_string(&chain_manifest(&module, n)).unwrap()).await.unwrap();
        let status = wait_for_end(&client, &status.id).await;
        assert!(status.trace.is_some(), "a traced job's result names its trace log: {status:?}");
        let path = dir.join(format!("{}.receipt.json", status.id));
        std::fs::write(&path, client.receipt(&status.id).await.unwrap()).unwrap();
        (status.id, path)
    })
}

/// `gridbox spot-check --json`: exit status, the JSON and stderr.
fn spot_check(server: &Server, token: &str, receipt: &Path, job: &str, k: u64, seed: u64) -> (i32, serde_json::Value, String) {
    let (k, seed) = (k.to_string(), seed.to_string());
    let output =
        gridbox_output(&[&"spot-check", &receipt, &"--server", &server.url, &"--token", &token, &"--job", &job, &"--samples", &k, &"--seed", &seed, &"--json"]);
    let json = serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
    (output.status.code().unwrap(), json, stderr(&output))
}

/// A GET with alice's token, raw: the status line and body.
async fn get_as_alice(url: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {ALICE}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

#[test]
fn an_honest_job_passes_30_spot_checks_other_tenants_get_404_and_a_kill_9_loses_no_trace_log() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let key = work.path().join("provider.key");
    assert!(gridbox_output(&[&"keygen", &key]).status.success());
    let key_flag = key.to_str().unwrap();
    let server = Server::start_policy(&data, TENSOR_POLICY, "workers = 1\nkeep_tensors = true\n", &["--key", key_flag]);
    let (id, receipt) = run_chain(&server, 20, work.path());
    let (code, json, err) = spot_check(&server, ALICE, &receipt, &id, 30, 7);
    assert_eq!((code, json["verdict"].as_str(), json["entries"].as_u64()), (0, Some("ok"), Some(42)), "{json} {err}");
    assert_eq!(json["samples"].as_array().unwrap().len(), 30);
    assert!(json["samples"].as_array().unwrap().iter().all(|s| s["verdict"] == "ok"), "{json}");

    // Another tenant: the job's trace and tensors do not exist for it; bad indices are refused.
    let bob = server.client(BOB);
    let log = Receipt::from_json(&std::fs::read(&receipt).unwrap()).unwrap();
    runtime().block_on(async {
        assert_eq!(api_code(&bob.trace_entry(&id, 0).await.unwrap_err()), (404, "not_found"));
        let sample = server.client(ALICE).trace_entry(&id, 1).await.unwrap();
        let input = sample.entry.entry["inputs"][0].as_str().unwrap().parse::<Digest>().unwrap();
        assert!(!server.client(ALICE).kept_tensor(&id, &input).await.unwrap().is_empty());
        assert_eq!(api_code(&bob.kept_tensor(&id, &input).await.unwrap_err()), (404, "not_found"));
        assert_eq!(api_code(&server.client(ALICE).trace_entry(&id, log.trace.length).await.unwrap_err()), (404, "not_found"));
        let answer = get_as_alice(&server.url, &format!("/v1/jobs/{id}/trace/x1")).await;
        assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("invalid_index"), "{answer}");
    });
    let (code, _, err) = spot_check(&server, BOB, &receipt, &id, 3, 7);
    assert_eq!(code, 2, "another tenant's job cannot be checked: {err}");

    // kill -9 once the end is recorded: after a restart, the log is all there.
    server.stop("-KILL");
    let server = Server::start_policy(&data, TENSOR_POLICY, "workers = 1\nkeep_tensors = true\n", &["--key", key_flag]);
    let (code, json, err) = spot_check(&server, ALICE, &receipt, &id, 42, 8);
    assert_eq!((code, json["verdict"].as_str()), (0, Some("ok")), "{json} {err}");
    drop(server);

    // Keeping tensors never changes a result: the same job without them signs the same receipt.
    let plain = Server::start_policy(&work.path().join("plain"), TENSOR_POLICY, "workers = 1\n", &["--key", key_flag]);
    let (_, plain_receipt) = run_chain(&plain, 20, work.path());
    assert_eq!(std::fs::read(&plain_receipt).unwrap(), std::fs::read(&receipt).unwrap());
}

#[test]
fn tensors_past_the_tenants_cap_go_oldest_first_and_a_spot_check_that_needs_them_fails() {
    let work = tempfile::tempdir().unwrap();
    // 8x8 f32 tensors are 292-byte files: the cap keeps the last three.
    let server = Server::start_policy(&work.path().join("data"), TENSOR_POLICY, "workers = 1\nkeep_tensors = true\ntenant_tensor_bytes = 900\n", &[]);
    let (id, receipt) = run_chain(&server, 20, work.path());
    let (code, json, err) = spot_check(&server, ALICE, &receipt, &id, 30, 7);
    assert_eq!((code, json["verdict"].as_str()), (1, Some("failed")), "{json} {err}");
    let missing = json["samples"].as_array().unwrap().iter().find(|s| s["verdict"] == "not produced").expect("a sample needed an evicted tensor");
    assert!(missing["detail"].as_str().unwrap().contains("the provider could not produce tensor"), "{missing}");
}

#[test]
fn kept_tensors_expire_after_tensor_retention_s_and_the_trace_log_stays() {
    let work = tempfile::tempdir().unwrap();
    let serve = "workers = 1\nkeep_tensors = true\ntensor_retention_s = 1\ngc_interval_s = 1\n";
    let server = Server::start_policy(&work.path().join("data"), TENSOR_POLICY, serve, &[]);
    let (id, receipt) = run_chain(&server, 2, work.path());
    std::thread::sleep(std::time::Duration::from_secs(4));
    let (code, json, err) = spot_check(&server, ALICE, &receipt, &id, 6, 3);
    assert_eq!((code, json["verdict"].as_str()), (1, Some("failed")), "{json} {err}");
    assert!(json["samples"].as_array().unwrap().iter().all(|s| s["verdict"] == "not produced" && s["op"].is_string()), "{json}");
}

/// Runs `chain n` here with its log and tensors kept: the job, its receipt (signed with a fresh
/// key), its entries and the tensors' folder.
fn local_run(n: usize, tensors: &Path) -> (Receipt, Vec<TraceEntry>, ed25519_dalek::SigningKey) {
    let module: Arc<[u8]> = probe_module().into();
    let manifest = chain_manifest(&module, n);
    let job = Job::new(module, manifest.resolve(&Policy::default()).unwrap(), Default::default()).unwrap();
    let keeper = Arc::new(TensorDir::create(tensors).unwrap());
    let options = RunOptions { keep_trace_log: true, keep_tensors: Some(keeper.clone()), ..RunOptions::default() };
    let run = engine().run(&job, options).unwrap();
    keeper.finish().unwrap();
    let key = keys::generate().unwrap();
    let receipt = Receipt::sign(&job, &run, &engine().backend().name(), &key);
    (receipt, run.trace_log.entries().unwrap().to_vec(), key)
}

/// Whether K = 30 samples drawn with `seed` flag the log: any sample that does not hold.
fn flagged(receipt: &Receipt, log: &[TraceEntry], tensors: &Path, seed: u64) -> bool {
    sample_indices(log.len() as u64, 30, seed).into_iter().any(|index| !check_op(receipt, log, index, tensors, 1).is_ok_and(|report| report.ok()))
}

#[test]
fn thirty_samples_catch_a_provider_that_falsified_10_percent_of_its_ops_in_95_of_100_trials() {
    let work = tempfile::tempdir().unwrap();
    let tensors = work.path().join("tensors");
    let (honest, log, key) = local_run(50, &tensors);
    let n = log.len();
    assert_eq!(n, 102);
    // The liar reports wrong outputs for 10% of the entries (all ops), and re-chains and
    // re-commits its log so that every proof and chain step still holds.
    let mut lying = log.clone();
    let mut rng = SplitMix64::new(2026);
    let mut falsified = std::collections::BTreeSet::new();
    while falsified.len() < n.div_ceil(10) {
        let at = 1 + rng.below(n as u64 - 2) as usize;
        if falsified.insert(at) {
            lying[at].link.output[0] ^= 1;
        }
    }
    let mut chain = TraceChain::new();
    for entry in &mut lying {
        entry.root = chain.append(&entry.link);
    }
    let mut liar = honest.clone();
    liar.trace.root = Digest(chain.root());
    liar.trace.log_root = Digest(merkle::root(&trace_log::leaves(&lying)));
    liar.sign_with(&key);
    // Each falsified entry alone fails only its output check.
    let at = *falsified.first().unwrap() as u64;
    assert_eq!(check_op(&liar, &lying, at, &tensors, 1).unwrap().verdict(), "output differs");

    let honest_flagged = (0..100).filter(|&seed| flagged(&honest, &log, &tensors, seed)).count();
    let caught = (0..100).filter(|&seed| flagged(&liar, &lying, &tensors, seed)).count();
    assert_eq!(honest_flagged, 0, "an honest provider is never flagged");
    assert!(caught >= 95, "caught in {caught} of 100 trials");
}

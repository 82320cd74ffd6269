//! `gridbox serve` as a provider runs it: the real binary on a loopback port, driven by the
//! library's client and by `gridbox submit`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gridbox_core::verify::{self, Evidence};
use gridbox_core::{Digest, JobEngine, Manifest, Policy, Receipt};
use gridbox_service::client::{Client, ClientError};
use gridbox_service::wire::{JobState, JobStatus};

use crate::common::{gridbox, gridbox_output, probe, stderr};
use crate::guests;

pub(crate) const ALICE: &str = "alice-token-0123456789";
pub(crate) const BOB: &str = "bob-token-0123456789ab";

/// A `gridbox serve` process on a loopback port.
pub(crate) struct Server {
    child: Child,
    pub(crate) url: String,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts a server over `data` with the tenants alice and bob and `[serve]` settings `serve`.
    pub(crate) fn start(data: &Path, serve: &str) -> Server {
        Self::start_with(data, serve, &[])
    }

    /// [`Server::start`] with more flags for `gridbox serve`.
    pub(crate) fn start_with(data: &Path, serve: &str, flags: &[&str]) -> Server {
        Self::start_policy(data, "", serve, flags)
    }

    /// [`Server::start_with`] with `top` (policy keys such as `capabilities`) before the tables.
    pub(crate) fn start_policy(data: &Path, top: &str, serve: &str, flags: &[&str]) -> Server {
        let policy = data.with_extension("policy.toml");
        std::fs::write(
            &policy,
            format!("{top}\n[[tenants]]\nname = \"alice\"\ntoken = \"{ALICE}\"\n[[tenants]]\nname = \"bob\"\ntoken = \"{BOB}\"\n[serve]\n{serve}"),
        )
        .unwrap();
        let mut child = gridbox()
            .args(["serve", "--addr", "127.0.0.1:0", "--device", "cpu", "--data"])
            .arg(data)
            .arg("--policy")
            .arg(&policy)
            .args(flags)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start gridbox serve");
        let log = Arc::new(Mutex::new(String::new()));
        let (sender, receiver) = std::sync::mpsc::channel();
        let lines = BufReader::new(child.stderr.take().unwrap());
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&format!("{line}\n"));
                if let Some(rest) = line.split("serving on ").nth(1) {
                    let _ = sender.send(rest.split_whitespace().next().unwrap_or_default().to_string());
                }
            }
        });
        let url = receiver.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| panic!("server did not start: {}", log.lock().unwrap()));
        Server { child, url, log }
    }

    pub(crate) fn client(&self, token: &str) -> Client {
        Client::new(&self.url, token).unwrap()
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The log's lines about job `id`, once one of them contains `last` (the reading thread may
    /// lag behind the server).
    fn job_log(&self, id: &str, last: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let lines: Vec<String> = self.log().lines().filter(|line| line.contains(id)).map(str::to_string).collect();
            if lines.iter().any(|line| line.contains(last)) {
                return lines;
            }
            assert!(Instant::now() < deadline, "no {last:?} for job {id} in the log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` and waits for the process to end.
    pub(crate) fn stop(mut self, signal: &str) -> std::process::ExitStatus {
        let status = std::process::Command::new("kill").args([signal, &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let status = self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(50)); // let the log thread catch the last lines
        status
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

pub(crate) fn manifest(module: &[u8], args: &[&str], seed: u64) -> String {
    let mut manifest = Manifest::new(Digest::of(module));
    manifest.args = args.iter().map(|a| a.to_string()).collect();
    manifest.seed = seed;
    toml::to_string(&manifest).unwrap()
}

pub(crate) async fn wait_for_end(client: &Client, id: &str) -> JobStatus {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = client.status(id, Duration::from_secs(10)).await.unwrap();
        if status.state.is_final() {
            return status;
        }
        assert!(Instant::now() < deadline, "job {id} did not end: {status:?}");
    }
}

/// Downloads the job's receipt and artifacts and replays it on the CPU.
pub(crate) async fn verify_job(client: &Client, status: &JobStatus, module: &[u8]) {
    let receipt = Receipt::from_json(&client.receipt(&status.id).await.unwrap()).unwrap();
    let mut artifacts = gridbox_core::artifacts::Artifacts {
        stdout: Some(client.download(&status.stdout.unwrap()).await.unwrap()),
        stderr: Some(client.download(&status.stderr.unwrap()).await.unwrap()),
        ..Default::default()
    };
    for (name, blob) in &status.outputs {
        artifacts.outputs.insert(name.clone(), client.download(blob).await.unwrap());
    }
    let evidence = Evidence { module: module.into(), inputs: Default::default(), artifacts: Some(artifacts), requested: None, trace: None };
    let engine = JobEngine::new(&Policy::default()).unwrap();
    let report = tokio::task::block_in_place(|| verify::verify(&engine, &receipt, &evidence, verify::VerifyOptions::default())).expect("the replay runs");
    assert!(report.ok(), "job {}: {:?}", status.id, report.first_mismatch());
}

pub(crate) fn api_code(error: &ClientError) -> (u16, &str) {
    match error {
        ClientError::Api { status, code, .. } => (*status, code),
        other => panic!("expected an API error, got {other}"),
    }
}

#[test]
fn tenants_submit_concurrently_and_see_only_their_own_jobs_and_blobs() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(&data.path().join("data"), "workers = 2\n");
    let module = probe();
    runtime().block_on(async {
        let (alice, bob) = (server.client(ALICE), server.client(BOB));
        for client in [&alice, &bob] {
            assert!(client.ensure_blob(&Bytes::copy_from_slice(&module)).await.unwrap());
            assert!(!client.ensure_blob(&Bytes::copy_from_slice(&module)).await.unwrap(), "deduplicated");
        }
        let mut tasks = Vec::new();
        for index in 0..12u64 {
            let client = if index % 2 == 0 { alice.clone() } else { bob.clone() };
            let text = manifest(&module, &["write-files", "1", &(index + 1).to_string()], index);
            tasks.push(tokio::spawn(async move {
                let status = client.submit(&text).await.unwrap();
                (index, wait_for_end(&client, &status.id).await)
            }));
        }
        let mut ended = Vec::new();
        for task in tasks {
            ended.push(task.await.unwrap());
        }
        for (index, status) in &ended {
            assert_eq!(status.state, JobState::Succeeded, "{status:?}");
            let owner = if index % 2 == 0 { &alice } else { &bob };
            let other = if index % 2 == 0 { &bob } else { &alice };
            let output = status.outputs["f0.bin"];
            assert_eq!(owner.download(&output).await.unwrap(), vec![7u8; *index as usize + 1]);
            assert_eq!(api_code(&other.status(&status.id, Duration::ZERO).await.unwrap_err()), (404, "not_found"));
            assert_eq!(api_code(&other.receipt(&status.id).await.unwrap_err()), (404, "not_found"));
            if *index > 1 {
                // Sizes 1 and 2 were made by both tenants; the others by one only.
                assert_eq!(api_code(&other.download(&output).await.unwrap_err()), (404, "not_found"));
            }
        }
        verify_job(&alice, &ended[0].1, &module).await;
        verify_job(&bob, &ended[1].1, &module).await;

        let stranger = server.client("not-a-token-at-all-0000");
        assert_eq!(api_code(&stranger.status(&ended[0].1.id, Duration::ZERO).await.unwrap_err()), (401, "unauthorized"));
    });
}

#[test]
fn oversized_bodies_and_mismatched_hashes_are_refused_and_nothing_is_stored() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(&data.path().join("data"), "max_blob_bytes = 4096\nmax_request_bytes = 8192\n");
    runtime().block_on(async {
        let alice = server.client(ALICE);
        let error = alice.upload(Bytes::from(vec![1u8; 5000])).await.unwrap_err();
        assert_eq!(api_code(&error), (413, "body_too_large"), "{error}");
        assert!(error.to_string().contains("4096"), "{error}");

        // A raw PUT whose body is not what its URL claims.
        let http = reqwest_like_put(&server.url, &format!("/v1/blobs/{}", Digest::of(b"claimed")), b"actual").await;
        assert!(http.starts_with("HTTP/1.1 400") && http.contains("hash_mismatch"), "{http}");
        assert!(!alice.has_blob(&Digest::of(b"actual")).await.unwrap());
        assert!(!alice.has_blob(&Digest::of(b"claimed")).await.unwrap());

        let huge = format!("format = 1\nmodule = \"{}\"\nargs = [\"{}\"]\n", Digest::of(b"m"), "x".repeat(9000));
        assert_eq!(api_code(&alice.submit(&huge).await.unwrap_err()), (413, "body_too_large"));
    });
    let blobs: Vec<_> = walk(&data.path().join("data/blobs"));
    assert!(blobs.is_empty(), "nothing stored: {blobs:?}");
    assert!(walk(&data.path().join("data/tmp")).is_empty(), "no temporary file left");
}

/// Sends a PUT over a raw socket (the client always claims the right hash) and returns the
/// response head and body as text.
async fn reqwest_like_put(url: &str, path: &str, body: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head =
        format!("PUT {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {ALICE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.path().is_dir() {
            found.extend(walk(&entry.path()));
        } else {
            found.push(entry.path());
        }
    }
    found
}

/// A probe job that computes for a while (0.6 G fuel, a few hundred milliseconds) and then succeeds.
pub(crate) const SLOW: &[&str] = &["work", "20000000"];

/// A probe job that runs for seconds (7.5 G fuel, within the default budget of 10 G).
const LONG: &[&str] = &["work", "250000000"];

#[test]
fn a_full_queue_answers_429_with_retry_after_and_the_accepted_jobs_still_run() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(&data.path().join("data"), "workers = 1\nmax_queued = 2\nretry_after_s = 3\n");
    let module = probe();
    runtime().block_on(async {
        let alice = server.client(ALICE);
        alice.ensure_blob(&Bytes::copy_from_slice(&module)).await.unwrap();
        let mut accepted = Vec::new();
        let mut refusal = None;
        for seed in 0..5 {
            match alice.submit(&manifest(&module, SLOW, seed)).await {
                Ok(status) => accepted.push(status.id),
                Err(error) => {
                    refusal = Some(error);
                    break;
                }
            }
        }
        match refusal.expect("a queue of 2 behind 1 worker refuses within 5 submissions") {
            ClientError::Api { status: 429, code, retry_after, .. } => {
                assert_eq!((code.as_str(), retry_after), ("queue_full", Some(3)));
            }
            other => panic!("expected 429, got {other}"),
        }
        assert!((2..=3).contains(&accepted.len()), "{accepted:?}");
        for id in &accepted {
            assert_eq!(wait_for_end(&alice, id).await.state, JobState::Succeeded);
        }
    });
    let text = runtime().block_on(http_get(&server.url, "/metrics"));
    assert!(text.contains("gridbox_rejections_total{reason=\"queue_full\"} 1"), "{text}");
    assert!(text.contains("gridbox_jobs{state=\"succeeded\"}"), "{text}");
}

async fn http_get(url: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

#[test]
fn after_sigkill_every_accepted_job_ends_exactly_once_with_a_receipt_that_verifies() {
    let data = tempfile::tempdir().unwrap();
    let folder = data.path().join("data");
    let module = probe();
    let server = Server::start(&folder, "workers = 2\n");
    let ids: Vec<String> = runtime().block_on(async {
        let alice = server.client(ALICE);
        alice.ensure_blob(&Bytes::copy_from_slice(&module)).await.unwrap();
        let mut ids = Vec::new();
        for seed in 0..8 {
            ids.push(alice.submit(&manifest(&module, SLOW, seed)).await.unwrap().id);
        }
        // Kill it while a job is running.
        let deadline = Instant::now() + Duration::from_secs(60);
        while alice.status(&ids[0], Duration::ZERO).await.unwrap().state != JobState::Running {
            assert!(Instant::now() < deadline, "the first job never started");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        ids
    });
    server.stop("-KILL");

    let server = Server::start(&folder, "workers = 2\n");
    assert!(server.log().contains("queued jobs recovered"), "{}", server.log());
    runtime().block_on(async {
        let alice = server.client(ALICE);
        for id in &ids {
            let status = wait_for_end(&alice, id).await;
            assert_eq!(status.state, JobState::Succeeded, "{status:?}");
            verify_job(&alice, &status, &module).await;
        }
    });
    let metrics = runtime().block_on(http_get(&server.url, "/metrics"));
    assert!(metrics.contains(&format!("gridbox_jobs{{state=\"succeeded\"}} {}\n", ids.len())), "each job ended once: {metrics}");
    assert!(metrics.contains("gridbox_jobs{state=\"queued\"} 0\n"), "{metrics}");
}

#[test]
fn sigterm_lets_running_jobs_finish_within_the_grace_period_and_requeues_the_rest() {
    let data = tempfile::tempdir().unwrap();
    let folder = data.path().join("data");
    let module = probe();
    // One worker and no grace: the running job is stopped and requeued at once.
    let server = Server::start(&folder, "workers = 1\ngrace_period_s = 0\n");
    let ids: Vec<String> = runtime().block_on(async {
        let alice = server.client(ALICE);
        alice.ensure_blob(&Bytes::copy_from_slice(&module)).await.unwrap();
        let ids = vec![alice.submit(&manifest(&module, LONG, 0)).await.unwrap().id, alice.submit(&manifest(&module, SLOW, 1)).await.unwrap().id];
        while alice.status(&ids[0], Duration::ZERO).await.unwrap().state != JobState::Running {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        ids
    });
    let status = server.stop("-TERM");
    assert!(status.success(), "SIGTERM ends the server cleanly: {status:?}");

    let server = Server::start(&folder, "workers = 1\n");
    assert!(server.log().contains("2 queued jobs recovered"), "{}", server.log());
    runtime().block_on(async {
        let alice = server.client(ALICE);
        for id in &ids {
            assert_eq!(wait_for_end(&alice, id).await.state, JobState::Succeeded);
        }
    });
}

#[test]
fn gridbox_submit_uploads_waits_downloads_and_verifies() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(&data.path().join("data"), "");
    let job = data.path().join("job");
    std::fs::create_dir_all(&job).unwrap();
    std::fs::write(job.join("note.txt"), b"from the client").unwrap();
    let manifest_path = job.join("job.toml");
    let mut manifest = Manifest::new(Digest::of(&probe()));
    manifest.args = vec!["stdin".into()];
    manifest.stdin = Some("note.txt".into());
    manifest.inputs.insert("note.txt".into(), Digest::of(b"from the client"));
    std::fs::write(&manifest_path, toml::to_string(&manifest).unwrap()).unwrap();
    let out = data.path().join("out");
    let input = format!("note.txt={}", job.join("note.txt").display());
    let probe_path = guests::PROBE.path();
    let args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
        &"submit",
        &probe_path,
        &"--manifest",
        &manifest_path,
        &"--input",
        &input,
        &"--server",
        &server.url,
        &"--token",
        &ALICE,
        &"--out",
        &out,
        &"--verify",
        &"--device",
        &"cpu",
    ];
    let output = gridbox_output(&args);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("uploaded 2 of 2 blobs"), "{}", stderr(&output));
    assert!(stderr(&output).contains("every field of the receipt matches"), "{}", stderr(&output));
    assert_eq!(std::fs::read(out.join("stdout")).unwrap(), b"stdin: 15 bytes: from the client\n");
    assert!(out.join("receipt.json").exists());
    // The job's output is echoed with --out too, as `gridbox run` does.
    assert_eq!(output.stdout, b"stdin: 15 bytes: from the client\n");
    // The server logged the job's life, one line per event, without the token.
    let id = stderr(&output).lines().find_map(|line| line.strip_prefix("gridbox: job ")?.split_whitespace().next().map(str::to_string)).unwrap();
    let lines = server.job_log(&id, " ended: ");
    assert_eq!(lines[0], format!("gridbox: job {id} accepted (tenant alice)"), "{lines:?}");
    assert!(lines[1].starts_with(&format!("gridbox: job {id} started (queued ")), "{lines:?}");
    assert!(lines[2].starts_with(&format!("gridbox: job {id} ended: succeeded: exited with code 0 (fuel ")) && lines[2].ends_with(" ms)"), "{lines:?}");
    assert!(!server.log().contains(ALICE), "a token in the log: {}", server.log());

    // Again, into stdout: the server has both blobs now.
    let output = gridbox_output(&args[..args.len() - 5]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("uploaded 0 of 2 blobs"), "{}", stderr(&output));
    assert_eq!(output.stdout, b"stdin: 15 bytes: from the client\n");
    assert!(!stderr(&output).contains("tensor ops on"), "no tensors, no --device: {}", stderr(&output));
    // --quiet: no echo, with --out or without.
    let mut quiet = args[..args.len() - 5].to_vec();
    quiet.push(&"-q");
    let output = gridbox_output(&quiet);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(output.stdout.is_empty(), "{}", String::from_utf8_lossy(&output.stdout));

    // Without a manifest, the flags describe the job as for `gridbox run`; the exit status is the job's.
    let exited =
        gridbox_output(&[&"submit", &guests::PROBE.path(), &"--server", &server.url, &"--token", &ALICE, &"--limit", &"fuel=10_000_000", &"--", &"exit", &"3"]);
    assert_eq!(exited.status.code(), Some(3), "{}", stderr(&exited));
    let both = gridbox_output(&[&"submit", &guests::PROBE.path(), &"--manifest", &manifest_path, &"--server", &server.url, &"--token", &ALICE, &"--", &"x"]);
    assert_eq!(both.status.code(), Some(136));
    assert!(stderr(&both).contains("go in the manifest"), "{}", stderr(&both));

    let refused = gridbox_output(&[&"submit", &guests::PROBE.path(), &"--server", &server.url, &"--token", &"wrong-token-000000000"]);
    assert_eq!(refused.status.code(), Some(136));
    assert!(stderr(&refused).contains("401 unauthorized"), "{}", stderr(&refused));

    let load = gridbox_output(&[&"load", &"--server", &server.url, &"--token", &BOB, &"--jobs", &"40", &"--concurrency", &"4"]);
    assert!(load.status.success(), "{}", stderr(&load));
    let report = String::from_utf8_lossy(&load.stdout);
    assert!(report.contains("40 jobs") && report.contains("jobs/s") && report.contains("p99"), "{report}");
}

#[test]
fn a_tenant_at_its_running_cap_waits_while_others_run_and_status_shows_fuel_so_far() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(&data.path().join("data"), "workers = 2\nmax_running_per_tenant = 1\n");
    let module = probe();
    runtime().block_on(async {
        let (alice, bob) = (server.client(ALICE), server.client(BOB));
        for client in [&alice, &bob] {
            client.ensure_blob(&Bytes::copy_from_slice(&module)).await.unwrap();
        }
        // Alice's first job runs for seconds; her second must wait for it although a worker is free.
        let long = alice.submit(&manifest(&module, LONG, 0)).await.unwrap().id;
        let second = alice.submit(&manifest(&module, SLOW, 1)).await.unwrap().id;
        let mut status = alice.status(&long, Duration::ZERO).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while status.state != JobState::Running || status.fuel_used == 0 {
            assert!(Instant::now() < deadline, "no progress reported: {status:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
            status = alice.status(&long, Duration::ZERO).await.unwrap();
        }
        let earlier = status.fuel_used;
        let bobs = bob.submit(&manifest(&module, SLOW, 2)).await.unwrap().id;
        assert_eq!(wait_for_end(&bob, &bobs).await.state, JobState::Succeeded, "Bob's job runs on the free worker");
        let now = alice.status(&long, Duration::ZERO).await.unwrap();
        assert_eq!(now.state, JobState::Running, "the long job outlasts Bob's: {now:?}");
        assert!(now.fuel_used > earlier, "fuel used so far grows: {earlier} then {}", now.fuel_used);
        assert_eq!(alice.status(&second, Duration::ZERO).await.unwrap().state, JobState::Queued, "Alice is at her cap");
        let ended = wait_for_end(&alice, &long).await;
        assert_eq!((ended.state, ended.fuel_used > now.fuel_used), (JobState::Succeeded, true));
        assert_eq!(wait_for_end(&alice, &second).await.state, JobState::Succeeded);
    });
}

#[test]
fn a_blob_damaged_on_disk_is_never_served_and_its_job_fails_with_the_reason() {
    let data = tempfile::tempdir().unwrap();
    let folder = data.path().join("data");
    let server = Server::start(&folder, "workers = 1\n");
    let module = probe();
    let digest = Digest::of(&module);
    runtime().block_on(async {
        let alice = server.client(ALICE);
        alice.ensure_blob(&Bytes::copy_from_slice(&module)).await.unwrap();
        // Flip one byte of the stored file, as a failing disk would.
        let hex = digest.to_hex();
        let path = folder.join("blobs").join(&hex[..2]).join(&hex);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[100] ^= 1;
        std::fs::write(&path, bytes).unwrap();

        let blob = gridbox_core::BlobRef::of(&module);
        assert_eq!(api_code(&alice.download(&blob).await.unwrap_err()), (500, "blob_corrupted"));
        let id = alice.submit(&manifest(&module, &["hello"], 0)).await.unwrap().id;
        let status = wait_for_end(&alice, &id).await;
        assert_eq!(status.state, JobState::Failed);
        let reason = status.reason.unwrap_or_default();
        assert!(reason.contains("failed to run it 3 times") && reason.contains("corrupted"), "{reason}");
        assert!(status.receipt.is_none());
        let lines = server.job_log(&id, " ended: ");
        let requeued: Vec<&String> = lines.iter().filter(|line| line.contains(" requeued: the provider failed (")).collect();
        assert_eq!(requeued.len(), 2, "two tries again, then it fails: {lines:?}");
        assert!(requeued[0].contains("(1 of 3 tries)") && requeued[0].contains("corrupted"), "{lines:?}");
        assert!(lines.last().unwrap().contains("ended: failed: the provider failed to run it 3 times"), "{lines:?}");
    });
}

#[test]
fn hostile_requests_get_errors_and_never_bring_the_server_down() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(&data.path().join("data"), "max_request_bytes = 4096\nheader_timeout_s = 1\n");
    let address = server.url.trim_start_matches("http://").to_string();
    let auth = format!("Authorization: Bearer {ALICE}\r\n");
    let requests: Vec<Vec<u8>> = vec![
        b"\x00\x01\x02garbage\r\n\r\n".to_vec(),
        b"GET / HTTP/9.9\r\n\r\n".to_vec(),
        format!("GET /v1/jobs/{} HTTP/1.1\r\nHost: x\r\n{auth}\r\n", "a".repeat(100_000)).into_bytes(),
        format!("GET /v1/blobs/%ZZ%00 HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").into_bytes(),
        [
            format!("POST /v1/jobs HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/toml\r\nContent-Length: 4\r\nConnection: close\r\n\r\n").as_bytes(),
            &[0xff, 0xfe, 0xfd, 0xfc],
        ]
        .concat(),
        format!("POST /v1/jobs HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 18\r\nConnection: close\r\n\r\n{{\"manifest\": 12}}").into_bytes(),
        format!("POST /v1/jobs HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 99999999999999999999\r\nConnection: close\r\n\r\n").into_bytes(),
        format!("POST /v1/jobs HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n").into_bytes(),
        format!("PUT /v1/blobs/{} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 10\r\nConnection: close\r\n\r\nshort", Digest::of(b"x")).into_bytes(),
        format!("GET /v1/jobs/x?wait=1e308 HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").into_bytes(),
        format!("GET /v1/jobs/x?wait=-1 HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").into_bytes(),
        b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer\r\nConnection: close\r\n\r\n".to_vec(),
    ];
    runtime().block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for request in &requests {
            let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
            let _ = stream.write_all(request).await;
            let _ = stream.shutdown().await; // half-close: a truncated body ends here
            let mut response = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut response)).await;
            assert!(read.is_ok(), "the server held a hostile connection open: {:?}", String::from_utf8_lossy(&request[..request.len().min(80)]));
            let text = String::from_utf8_lossy(&response);
            if let Some(status) = text.strip_prefix("HTTP/1.1 ").and_then(|rest| rest.get(..3)) {
                assert!(status.starts_with('4') || status.starts_with('5'), "{status} for {:?}", String::from_utf8_lossy(&request[..request.len().min(80)]));
            }
        }
    });
    // Headers that never finish, from a client that keeps the connection open: the header
    // timeout (1 s here) closes it.
    runtime().block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        let mut response = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut response)).await;
        assert!(read.is_ok(), "a client that never finishes its headers is cut off");
    });
    let health = runtime().block_on(http_get(&server.url, "/healthz"));
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

/// Counts the blob files under a data folder.
fn blob_files(data: &Path) -> usize {
    let mut count = 0;
    for shard in std::fs::read_dir(data.join("blobs")).unwrap().flatten() {
        count += std::fs::read_dir(shard.path()).map(|files| files.count()).unwrap_or(0);
    }
    count
}

/// With a one-second retention, finished jobs, their results and unused uploads go away and the
/// blob files nothing holds are deleted, so the data folder does not grow with the jobs run;
/// a kept job stays. A tenant past its storage quota gets 507.
#[test]
fn finished_jobs_expire_and_their_blobs_are_collected() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, "workers = 2\nretention_s = 1\ngc_interval_s = 1\ntenant_storage_bytes = 4000000\n");
    let client = server.client(ALICE);
    let module = probe();
    runtime().block_on(async {
        client.ensure_blob(&Bytes::copy_from_slice(&module)).await.unwrap();
        let mut ids = Vec::new();
        for seed in 0..6 {
            let status = client.submit(&manifest(&module, &["write-files"], seed)).await.unwrap();
            ids.push(wait_for_end(&client, &status.id).await.id);
        }
        let kept = ids.pop().unwrap();
        let kept_status = client.keep(&kept).await.unwrap();
        assert!(kept_status.kept && kept_status.expires_at_ms.is_none(), "{kept_status:?}");
        let before = blob_files(&data);
        // Past one retention time and a collection or two, only the kept job's blobs remain.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let gone = matches!(client.status(&ids[0], Duration::ZERO).await, Err(ClientError::Api { status: 404, .. }));
            if gone && blob_files(&data) < before {
                break;
            }
            assert!(Instant::now() < deadline, "nothing expired: {} blobs, log:\n{}", blob_files(&data), server.log());
        }
        for id in &ids {
            assert!(matches!(client.status(id, Duration::ZERO).await, Err(ClientError::Api { status: 404, .. })), "job {id} did not expire");
            server.job_log(id, &format!("job {id} expired (tenant alice)"));
        }
        let kept_status = client.status(&kept, Duration::ZERO).await.unwrap();
        for blob in kept_status.outputs.values().chain(kept_status.receipt.iter()) {
            client.download(blob).await.unwrap();
        }
        // The module upload expired too (unused for a retention time); only the kept job's
        // results are held.
        let usage = client.usage().await.unwrap();
        let kept_bytes: u64 = kept_status
            .outputs
            .values()
            .chain(kept_status.receipt.iter())
            .chain(kept_status.stdout.iter())
            .chain(kept_status.stderr.iter())
            .map(|b| b.size)
            .collect::<std::collections::BTreeSet<_>>()
            .iter()
            .sum();
        assert!(usage.bytes <= kept_bytes + module.len() as u64, "{usage:?}");
        // The quota: an upload that would pass it is refused before anything is stored.
        let big = Bytes::from(vec![7u8; 4_000_000]);
        match client.ensure_blob(&big).await {
            Err(ClientError::Api { status: 507, code, .. }) => assert_eq!(code, "storage_quota"),
            other => panic!("expected 507 storage_quota, got {other:?}"),
        }
    });
    assert!(server.log().contains("serving on"));
}

#[test]
fn a_job_with_a_writable_mount_at_root_runs_on_a_server_and_its_mount_outputs_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), "");
    let files = dir.path().join("files");
    for (name, bytes) in [("words.txt", &b"one two three"[..]), ("log.txt", b""), ("old.txt", b"o"), ("remove-me.txt", b"r")] {
        crate::common::put(&files, name, bytes);
    }
    let out = dir.path().join("out");
    let mount = format!("{}::/", files.display());
    let probe_path = guests::PROBE.path();
    let output = gridbox_output(&[
        &"submit",
        &probe_path,
        &"--dir",
        &mount,
        &"--server",
        &server.url,
        &"--token",
        &ALICE,
        &"--out",
        &out,
        &"--verify",
        &"--device",
        &"cpu",
        &"--",
        &"rooted",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("every field of the receipt matches"), "{}", stderr(&output));
    assert_eq!(std::fs::read(out.join("mounts/counts/summary.txt")).unwrap(), b"3 words\n");
    assert_eq!(std::fs::read(out.join("mounts/archive/old.txt")).unwrap(), b"o");
    assert!(!out.join("mounts/remove-me.txt").exists());
    let verify = gridbox_output(&[&"verify", &out.join("receipt.json"), &"--module", &probe_path, &"--dir", &mount, &"--device", &"cpu"]);
    assert!(verify.status.success(), "{}", stderr(&verify));
}

#[test]
fn with_log_format_json_every_job_event_is_one_json_object_per_line() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_with(&data.path().join("data"), "workers = 1\n", &["--log-format", "json"]);
    let module = probe();
    let (ok, trapped) = runtime().block_on(async {
        let alice = server.client(ALICE);
        alice.ensure_blob(&Bytes::copy_from_slice(&module)).await.unwrap();
        let ok = alice.submit(&manifest(&module, &["hello"], 0)).await.unwrap().id;
        let trapped = alice.submit(&manifest(&module, &["trap"], 1)).await.unwrap().id;
        for id in [&ok, &trapped] {
            wait_for_end(&alice, id).await;
        }
        (ok, trapped)
    });
    let events = |id: &str| -> Vec<serde_json::Value> {
        server.job_log(id, "\"ended\"").iter().map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"))).collect()
    };
    let ok_events = events(&ok);
    let names: Vec<&str> = ok_events.iter().map(|event| event["event"].as_str().unwrap()).collect();
    assert_eq!(names, ["accepted", "started", "ended"], "{ok_events:?}");
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    for event in &ok_events {
        assert_eq!((event["job"].as_str(), event["tenant"].as_str()), (Some(ok.as_str()), Some("alice")), "{event}");
        let at = event["at_ms"].as_u64().unwrap();
        assert!(now_ms - 600_000 < at && at <= now_ms, "at_ms is Unix milliseconds: {event}");
    }
    assert!(ok_events[1]["waited_ms"].is_u64(), "{:?}", ok_events[1]);
    let ended = &ok_events[2];
    assert_eq!((ended["state"].as_str(), ended["outcome"].as_str()), (Some("succeeded"), Some("exited with code 0")), "{ended}");
    assert!(ended["fuel_used"].as_u64().unwrap() > 0 && ended["wall_ms"].is_u64() && ended["reason"].is_null(), "{ended}");
    let trap_end = events(&trapped).pop().unwrap();
    assert_eq!(trap_end["state"], "failed", "{trap_end}");
    assert!(trap_end["reason"].as_str().unwrap().starts_with("trapped"), "{trap_end}");
    assert!(!server.log().contains(ALICE), "a token in the log: {}", server.log());
}

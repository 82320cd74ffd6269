//! Tests of the job database: recovery, ending once, indexes, ownership and expiry.

use super::*;

/// A database with a day's retention and no blob sizes to migrate.
fn open(path: &Path) -> Result<(JobDb, Recovered), DbError> {
    JobDb::open(path, DAY_MS, &|_| 0)
}

const DAY_MS: u64 = 24 * 3600 * 1000;

fn record(id: &str, seq: u64) -> JobRecord {
    JobRecord {
        id: id.into(),
        tenant: "alice".into(),
        seq,
        state: JobState::Queued,
        manifest: "format = 1\n".into(),
        submitted_at_ms: 1,
        starts: 0,
        result: None,
        kept: false,
    }
}

fn finished(mut record: JobRecord) -> JobRecord {
    record.state = JobState::Succeeded;
    record.result = Some(JobResult {
        started_at_ms: 2,
        finished_at_ms: 3,
        fuel_used: 4,
        outcome: Some("exited with status 0".into()),
        reason: None,
        receipt: Some(BlobRef::of(b"receipt")),
        stdout: None,
        stderr: None,
        outputs: BTreeMap::new(),
        trace: None,
    });
    record
}

#[tokio::test]
async fn the_tenant_index_is_rebuilt_for_a_database_made_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.redb");
    {
        let (db, _) = open(&path).unwrap();
        for (index, id) in ["a", "b"].into_iter().enumerate() {
            db.insert(record(id, index as u64), Vec::new()).await.unwrap();
        }
    }
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.delete_table(TENANT_JOBS).unwrap();
        txn.commit().unwrap();
    }
    let (db, _) = open(&path).unwrap();
    assert_eq!(db.tenant_jobs("alice", u64::MAX, 10).unwrap(), ["b", "a"]);
    assert_eq!(db.tenant_jobs("alice", 1, 10).unwrap(), ["a"]);
    assert!(db.tenant_jobs("bob", u64::MAX, 10).unwrap().is_empty());
}

#[tokio::test]
async fn unfinished_jobs_survive_reopening_and_jobs_end_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.redb");
    {
        let (db, recovered) = open(&path).unwrap();
        assert!(recovered.unfinished.is_empty());
        for (index, id) in ["a", "b", "c"].into_iter().enumerate() {
            db.insert(record(id, index as u64), Vec::new()).await.unwrap();
        }
        assert!(db.finish(finished(record("b", 1))).await.unwrap());
        assert!(!db.finish(finished(record("b", 1))).await.unwrap(), "a job ends once");
        assert!(db.owns("alice", &Digest::of(b"receipt")).unwrap());
        assert!(!db.owns("bob", &Digest::of(b"receipt")).unwrap());
    }
    let (db, recovered) = open(&path).unwrap();
    let ids: Vec<_> = recovered.unfinished.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["a", "c"]);
    assert_eq!(recovered.next_seq, 3);
    assert_eq!(recovered.finished.get("succeeded"), Some(&1));
    assert_eq!(db.get("b").unwrap().unwrap().state, JobState::Succeeded);
    assert_eq!(db.get("zzz").unwrap(), None);

    // "a" was running when the server stopped, MAX_STARTS times: it is given up on.
    for _ in 0..MAX_STARTS {
        db.started("a").await.unwrap();
    }
    db.started("c").await.unwrap();
    drop(db);
    let (db, recovered) = open(&path).unwrap();
    assert_eq!(recovered.unfinished.iter().map(|r| (r.id.as_str(), r.starts)).collect::<Vec<_>>(), [("c", 1)]);
    assert_eq!(recovered.given_up.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["a"]);
    let a = db.get("a").unwrap().unwrap();
    assert_eq!(a.state, JobState::Failed);
    assert!(a.result.unwrap().reason.unwrap().contains("running 3 times since it was first recovered"));
    assert_eq!(recovered.finished.get("failed"), Some(&1));
}

fn ended_at(mut record: JobRecord, finished_at_ms: u64, blobs: &[(&[u8], &str)]) -> JobRecord {
    record = finished(record);
    if let Some(result) = record.result.as_mut() {
        result.finished_at_ms = finished_at_ms;
        for (bytes, name) in blobs {
            result.outputs.insert((*name).into(), BlobRef::of(bytes));
        }
    }
    record
}

#[tokio::test]
async fn uploads_and_results_count_toward_usage_and_expire_unless_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = open(&dir.path().join("jobs.redb")).unwrap();
    let now = now_ms();
    let (a, b) = (Digest::of(b"upload a"), Digest::of(b"upload b"));
    // Uploads count once per tenant, within the quota; owning one already never needs room.
    assert!(db.own("alice", a, 100, 1000).await.unwrap());
    assert!(!db.own("alice", b, 950, 1000).await.unwrap(), "past the quota");
    assert_eq!(db.usage("alice").unwrap(), 100);
    assert!(db.own("alice", b, 900, 1000).await.unwrap());
    assert!(db.own("alice", a, 100, 0).await.unwrap(), "a re-upload renews, whatever the quota");
    assert!(db.own("bob", a, 100, 1000).await.unwrap());
    assert_eq!((db.usage("alice").unwrap(), db.usage("bob").unwrap()), (1000, 100));

    // Two jobs whose results name the upload `a` (alice's) and a blob of their own each.
    for (id, seq) in [("expires", 0), ("kept", 1)] {
        db.insert(record(id, seq), vec![(a, 100)]).await.unwrap();
        let output = format!("output of {id}");
        assert!(db.finish(ended_at(record(id, seq), now, &[(output.as_bytes(), "out.txt"), (b"upload a", "copy")])).await.unwrap());
    }
    assert!(db.keep("alice", "kept").await.unwrap());
    assert!(!db.keep("bob", "kept").await.unwrap(), "another tenant's job");
    let status = db.get("expires").unwrap().unwrap();
    assert_eq!(db.expires_at(&status), Some(now + DAY_MS));
    assert_eq!(db.expires_at(&db.get("kept").unwrap().unwrap()), None);
    let receipt_size = BlobRef::of(b"receipt").size;
    let outputs = ["output of expires", "output of kept"].map(|s| s.len() as u64).iter().sum::<u64>();
    assert_eq!(db.usage("alice").unwrap(), 1000 + receipt_size + outputs);

    // Nothing is due yet.
    assert_eq!(db.expire(now, 100).unwrap(), Expiry::default());
    // A retention time later: the unkept job and the unused upload `b` go; `a` lives on through
    // the kept job's result, the receipt too (both jobs' receipts are the same bytes).
    // (The uses were noted a few ms after `now`.)
    let later = now + DAY_MS + 60_000;
    let Expiry { more, jobs, mut orphans } = db.expire(later, 100).unwrap();
    assert!(!more);
    assert_eq!(jobs, [("expires".to_string(), "alice".to_string())]);
    orphans.sort();
    let mut expected = vec![Digest::of(b"output of expires"), b];
    expected.sort();
    assert_eq!(orphans, expected);
    assert_eq!(db.get("expires").unwrap(), None);
    assert_eq!(db.tenant_jobs("alice", u64::MAX, 10).unwrap(), ["kept"]);
    assert!(db.owns("alice", &a).unwrap() && db.owns("alice", &Digest::of(b"receipt")).unwrap());
    assert!(!db.owns("alice", &b).unwrap());
    assert_eq!(db.usage("alice").unwrap(), 100 + receipt_size + "output of kept".len() as u64);
    assert_eq!(db.collectable(&orphans).unwrap(), orphans, "no queued job reads them");
    // Bob's upload of `a` was not used within the retention time either.
    assert_eq!(db.usage("bob").unwrap(), 0);

    // Deleting the kept job lets everything go; `a` was alice's upload, unused too: no rows left.
    assert!(db.forget("alice", "kept").await.unwrap());
    assert!(!db.forget("alice", "kept").await.unwrap());
    let orphans = db.expire(later, 100).unwrap().orphans;
    assert!(orphans.contains(&a), "{orphans:?}");
    assert_eq!(db.usage("alice").unwrap(), 0);
    assert!(!db.disown("alice", a).await.unwrap());
}

#[tokio::test]
async fn blobs_an_unfinished_job_reads_are_never_collectable() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = open(&dir.path().join("jobs.redb")).unwrap();
    let module = Digest::of(b"module");
    let mut queued = record("q", 0);
    queued.manifest = gridbox_core::Manifest::new(module).resolve(&gridbox_core::Policy::default()).unwrap().text().to_string();
    db.insert(queued, vec![(module, 6)]).await.unwrap();
    assert!(db.disown("alice", module).await.unwrap());
    assert!(!db.owns("alice", &module).unwrap());
    assert!(db.collectable(&[module]).unwrap().is_empty(), "the queued job still reads it");
}

//! A data dir written by an earlier release (`tests/fixtures/data-v1`, schema version 1) opens
//! with this one: it checks clean with every hash, lists what it held (credentials included),
//! and records on. A schema migration must keep this test passing.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use syncer::layout::DataDir;

/// Copies the fixture into a new temporary dir (the tests change it).
fn fixture() -> (tempfile::TempDir, DataDir) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/data-v1");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    std::fs::create_dir_all(root.join("sample")).unwrap();
    for rel in ["db.sqlite3"].into_iter().map(String::from).chain(
        std::fs::read_dir(src.join("sample"))
            .unwrap()
            .map(|e| format!("sample/{}", e.unwrap().file_name().to_str().unwrap())),
    ) {
        std::fs::copy(src.join(&rel), root.join(&rel)).unwrap();
    }
    (tmp, DataDir::new(root))
}

fn nvr(d: &DataDir, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_nvr"))
        .arg("--data-dir")
        .arg(&d.root)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "nvr {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_version_1_data_dir_checks_clean_and_records_on() {
    let (_tmp, d) = fixture();
    let report: serde_json::Value =
        serde_json::from_str(&nvr(&d, &["check", "--hash", "--json"])).unwrap();
    assert_eq!(report["clean"], true, "{report:#}");
    let listed: serde_json::Value =
        serde_json::from_str(&nvr(&d, &["recordings", "--json"])).unwrap();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 11, "{ids:?}");
    assert_eq!(ids.iter().filter(|i| i.starts_with("00000002")).count(), 4);
    let cameras = nvr(&d, &["camera", "list"]);
    assert!(
        cameras.contains("rtsp://admin:***@127.0.0.1:9/stream1"),
        "{cameras}"
    );
    let db = syncer::db::Database::open_read_only(&d.db_path()).unwrap();
    let door = db
        .streams()
        .unwrap()
        .into_iter()
        .find(|s| s.name == "door")
        .unwrap();
    assert!(
        door.config.source.contains("admin:fixture%2Dsecret@"),
        "credentials kept: {}",
        door.config.source
    );
    drop(db);

    // Recording goes on where the fixture stopped.
    let mut syncer = e2e::start_syncer(&d);
    let source = "synthetic:?fps=10&bitrate=20000&gop=10";
    let mut ingest = e2e::start_ingest(&d, "back", source, &[]);
    e2e::wait_until("a new recording of back", Duration::from_secs(30), || {
        syncer::admin_client::AdminClient::connect(&d)
            .and_then(|mut a| a.recordings(None))
            .is_ok_and(|r| r.iter().any(|r| r.id == protocol::CompositeId::new(2, 4)))
    });
    ingest.stop(Duration::from_secs(30));
    syncer.stop(Duration::from_secs(30));
    let violations = e2e::check(&d);
    assert!(violations.is_empty(), "{violations:#?}");
}

//! `nvr check` as a real process: exit status, naming what is wrong, `--repair`, `--json`, and
//! a read-only check while the syncer runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use protocol::clock::RealClock;
use protocol::messages::{RecordingTimes, SampleReport};
use protocol::{CompositeId, Duration, Time};
use syncer::admin_client::AdminClient;
use syncer::db::{Database, StreamConfig};
use syncer::fs::write_all;
use syncer::layout::{DataDir, sample_file_name};
use syncer::{CloseRequest, Syncer, SyncerOptions};

/// Four frames make a second: shorter recordings end their run (MIN_RECORDING_DURATION_90K).
const FRAME_90K: i64 = 22500;

/// A data dir with one camera and a run of two committed recordings, and an id below the next
/// id that was discarded (its garbage row collected and forgotten), so that a file with it is
/// an orphan.
struct Fixture {
    _tmp: tempfile::TempDir,
    d: DataDir,
    ids: Vec<CompositeId>,
    discarded: CompositeId,
}

impl Fixture {
    fn path(&self, id: CompositeId) -> PathBuf {
        self.d.sample_dir_path().join(sample_file_name(id))
    }
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let d = DataDir::new(tmp.path().join("data"));
    d.init().unwrap();
    let dir = Arc::new(d.lock_sample_dir().unwrap());
    let db = Database::open(&d.db_path()).unwrap();
    let (mut s, _) = Syncer::start(dir, db, Arc::new(RealClock), SyncerOptions::default()).unwrap();
    let stream = s
        .add_stream(
            "cam",
            StreamConfig {
                source: "synthetic:".to_owned(),
                retain_bytes: 1 << 30,
                flush_if_sec: 0,
                rotate_sec: 60,
            },
        )
        .unwrap();
    let entry = s
        .add_sample_entry(stream, &[], 640, 480, "avc1.4d401e", b"entry")
        .unwrap();
    let mut start = Time::from_system(std::time::SystemTime::now());
    let mut ids = Vec::new();
    for run_offset in 0..2 {
        let (id, mut w) = s.open_recording(stream, run_offset, entry).unwrap();
        let frames: Vec<Vec<u8>> = (0..4u8)
            .map(|i| vec![i + 10 * run_offset as u8; 900])
            .collect();
        for f in &frames {
            write_all(&mut w, f).unwrap();
        }
        let path = d.sample_dir_path().join(sample_file_name(id));
        let written = std::fs::File::open(path).unwrap();
        let writer_blake3 = syncer::durability::hash_prefix(&written, 3600)
            .map_err(|e| e.to_string())
            .unwrap();
        let media_90k = FRAME_90K * frames.len() as i64;
        s.close_recording(
            id,
            CloseRequest {
                samples: (0..frames.len() as i64)
                    .map(|i| SampleReport {
                        pts_90k: i * FRAME_90K,
                        bytes: 900,
                        is_key: i == 0,
                    })
                    .collect(),
                last_sample_duration_90k: Some(FRAME_90K as i32),
                times: RecordingTimes {
                    start,
                    wall_duration_90k: media_90k as i32,
                    local_time_delta_90k: 0,
                },
                end_reason: Some("rotation".to_owned()),
                writer_blake3,
            },
        )
        .unwrap();
        ids.push(id);
        start += Duration(media_90k);
    }
    let (discarded, _) = s.open_recording(stream, 0, entry).unwrap();
    s.abandon_recording(discarded, "test").unwrap();
    s.shutdown().unwrap();
    Fixture {
        _tmp: tmp,
        d,
        ids,
        discarded,
    }
}

/// Runs `nvr --data-dir D check ARGS...`.
fn nvr_check(d: &DataDir, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_nvr"))
        .arg("--data-dir")
        .arg(&d.root)
        .arg("check")
        .args(args)
        .env_remove("NVR_DATA_DIR")
        .output()
        .unwrap();
    eprintln!(
        "nvr check {args:?}: {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn len(p: &Path) -> Option<u64> {
    std::fs::metadata(p).ok().map(|m| m.len())
}

#[test]
fn healthy_data_dir_exits_0() {
    let fx = fixture();
    let out = nvr_check(&fx.d, &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("check: 2 recordings, 2 sample files: clean"));

    let out = nvr_check(&fx.d, &["--hash"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains("7 KiB hashed: clean"),
        "{}",
        stdout(&out)
    );
    // Not a terminal: a progress line per tenth, the last at 100%.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hashing: 7 KiB / 7 KiB (100%)"), "{err}");
}

#[test]
fn orphan_and_truncated_files_exit_1_and_repair_fixes_only_what_is_safe() {
    let fx = fixture();
    let orphan = fx.path(fx.discarded);
    std::fs::write(&orphan, b"stray").unwrap();
    let truncated = fx.path(fx.ids[1]);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&truncated)
        .unwrap()
        .set_len(100)
        .unwrap();

    let out = nvr_check(&fx.d, &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("violation: {}: file is neither", fx.discarded)),
        "{text}"
    );
    assert!(
        text.contains(&format!("violation: {}: file has 100 bytes", fx.ids[1])),
        "{text}"
    );
    assert!(text.contains("NOT CLEAN: 2 violations"), "{text}");

    // Repair trashes the orphan but leaves the truncated recording as evidence.
    let out = nvr_check(&fx.d, &["--repair"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "repaired: {}: recorded as garbage and unlinked",
            fx.discarded
        )),
        "{text}"
    );
    assert!(text.contains("1 left after repair"), "{text}");
    assert_eq!(len(&orphan), None);
    assert_eq!(len(&truncated), Some(100));

    // Once the file is gone altogether, repair marks its row, and the check is clean.
    std::fs::remove_file(&truncated).unwrap();
    let out = nvr_check(&fx.d, &["--repair"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains(&format!("repaired: {}: row flagged as missing", fx.ids[1])),
        "{}",
        stdout(&out)
    );
    let out = nvr_check(&fx.d, &["--hash"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains(&format!("note: {}: file is missing", fx.ids[1])),
        "{}",
        stdout(&out)
    );
}

#[test]
fn json_output_parses_and_names_each_violation() {
    let fx = fixture();
    std::fs::write(fx.path(fx.discarded), b"stray").unwrap();
    let out = nvr_check(&fx.d, &["--json", "--hash"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["clean"], false);
    assert_eq!(v["recordings"], 2);
    assert_eq!(v["files"], 3);
    assert_eq!(
        v["violations"],
        serde_json::json!([{
            "kind": "orphan_file",
            "subject": fx.discarded.to_string(),
            "message": "file is neither a committed recording nor garbage",
        }])
    );
    assert_eq!(v["repaired"], serde_json::json!([]));

    let out = nvr_check(&fx.d, &["--json", "--repair"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["clean"], true);
    assert_eq!(v["repaired"][0]["action"], "trashed_file");
    assert_eq!(v["repaired"][0]["subject"], fx.discarded.to_string());
}

#[test]
fn while_recording_is_active_check_runs_read_only_and_repair_is_refused() {
    let fx = fixture();
    let d = fx.d.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        syncer::server::serve(&d, Default::default(), move || ready_tx.send(()).unwrap())
    });
    ready_rx.recv().unwrap();

    let out = nvr_check(&fx.d, &["--repair"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("recording is active; stop `nvr run` first"),
        "{err}"
    );

    let out = nvr_check(&fx.d, &["--hash"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains("note: recording was active"),
        "{}",
        stdout(&out)
    );

    AdminClient::connect(&fx.d).unwrap().shutdown().unwrap();
    server.join().unwrap().unwrap();
}

/// Another data dir's database (or an older backup) must not make repair unlink this dir's
/// recordings as strays: check names the mismatch first, repair refuses and changes nothing.
#[test]
fn repair_refuses_a_database_that_does_not_match_the_sample_dir() {
    let fx = fixture();
    let other = fixture();
    for suffix in ["", "-wal", "-shm"] {
        let to = format!("{}{suffix}", fx.d.db_path().display());
        let _ = std::fs::remove_file(&to);
        let from = format!("{}{suffix}", other.d.db_path().display());
        if Path::new(&from).exists() {
            std::fs::copy(&from, &to).unwrap();
        }
    }
    let before: Vec<Option<u64>> = fx.ids.iter().map(|&id| len(&fx.path(id))).collect();

    let out = nvr_check(&fx.d, &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let first = text.lines().find(|l| l.starts_with("violation:")).unwrap();
    assert!(first.starts_with("violation: meta:"), "{text}");

    let out = nvr_check(&fx.d, &["--repair"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("repair refused"), "{err}");
    let after: Vec<Option<u64>> = fx.ids.iter().map(|&id| len(&fx.path(id))).collect();
    assert_eq!(after, before);
    assert!(after.iter().all(Option::is_some));
}

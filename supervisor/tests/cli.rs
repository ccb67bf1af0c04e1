//! The `nvr` command line as a user runs it: the real binary, on real data dirs, offline and
//! with a real `nvr-syncer` running (started here and ended only by its pid).

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::{Proc, start_ingest, start_syncer};
use nix::sys::signal::Signal;
use protocol::clock::RealClock;
use protocol::messages::{RecordingTimes, SampleReport};
use protocol::{CompositeId, Time};
use serde_json::Value;
use syncer::admin_client::AdminClient;
use syncer::db::Database;
use syncer::layout::DataDir;
use syncer::{CloseRequest, Syncer};

/// What one run of `nvr` did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn ok(self) -> Run {
        assert_eq!(self.code, 0, "nvr failed: {self:#?}");
        self
    }

    #[track_caller]
    fn fails(self, code: i32, message: &str) -> Run {
        assert_eq!(self.code, code, "{self:#?}");
        assert!(
            self.stderr.contains(message),
            "stderr lacks {message:?}: {self:#?}"
        );
        self
    }

    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }
}

/// Runs `nvr --data-dir ROOT ARGS...`.
fn nvr(d: &DataDir, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_nvr"))
        .arg("--data-dir")
        .arg(&d.root)
        .args(args)
        .env_remove("NVR_DATA_DIR")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run nvr");
    Run {
        code: out.status.code().expect("nvr exited, not killed"),
        stdout: String::from_utf8(out.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(out.stderr).expect("UTF-8 stderr"),
    }
}

/// A new, initialized data dir with the given cameras, each `add`ed with these extra args.
fn data_dir(cameras: &[(&str, &[&str])]) -> (tempfile::TempDir, DataDir) {
    let tmp = tempfile::tempdir().unwrap();
    let d = DataDir::new(tmp.path().join("data"));
    nvr(&d, &["init"]).ok();
    for (name, args) in cameras {
        let mut a = vec!["camera", "add", name];
        a.extend_from_slice(args);
        nvr(&d, &a).ok();
    }
    (tmp, d)
}

/// `nvr-syncer` sits next to `nvr` (built by `cargo test --workspace`).
fn syncer_is_built() {
    let p = Path::new(env!("CARGO_BIN_EXE_nvr")).with_file_name("nvr-syncer");
    assert!(
        p.exists(),
        "{} is not built; run `cargo test --workspace` (or `cargo build --workspace --bins`)",
        p.display()
    );
}

fn start(d: &DataDir) -> Proc {
    syncer_is_built();
    start_syncer(d)
}

fn stop(mut syncer: Proc) {
    syncer.signal(Signal::SIGTERM);
    assert!(syncer.wait(Duration::from_secs(20)).success());
}

/// One committed recording: 3 samples of 1000 bytes (each recording rounds up to 4 KiB).
const RECORDING_BYTES: i64 = 3000;

/// Records `n` recordings of one run for `camera`, through the syncer library on the locked
/// data dir (no syncer may be running), and commits them. Returns their ids.
fn record(d: &DataDir, camera: &str, n: i32) -> Vec<CompositeId> {
    let dir = Arc::new(d.lock_sample_dir().unwrap());
    let db = Database::open(&d.db_path()).unwrap();
    let (mut s, _) = Syncer::start(dir, db, Arc::new(RealClock), Default::default()).unwrap();
    let stream = s
        .stream_rows()
        .into_iter()
        .find(|r| r.name == camera)
        .unwrap()
        .id;
    // One whole (if empty) box, as an export needs.
    let avc1 = [0, 0, 0, 16, b'a', b'v', b'c', b'1', 0, 0, 0, 0, 0, 0, 0, 0];
    let entry = s
        .add_sample_entry(stream, &[], 640, 480, "avc1.4d401e", &avc1)
        .unwrap();
    let mut start = Time::from_system(std::time::SystemTime::now());
    let mut ids = Vec::new();
    for run_offset in 0..n {
        let (id, mut w) = s.open_recording(stream, run_offset, entry).unwrap();
        let mut hasher = blake3::Hasher::new();
        for i in 0..3u8 {
            let frame = vec![i.wrapping_add(run_offset as u8); 1000];
            w.write_all(&frame).unwrap();
            hasher.update(&frame);
        }
        let req = CloseRequest {
            samples: (0..3)
                .map(|i| SampleReport {
                    pts_90k: i * 30000,
                    bytes: 1000,
                    is_key: i == 0,
                })
                .collect(),
            // A second: shorter recordings end their run (MIN_RECORDING_DURATION_90K).
            last_sample_duration_90k: Some(30000),
            times: RecordingTimes {
                start,
                wall_duration_90k: 90000,
                local_time_delta_90k: 0,
            },
            end_reason: Some("rotation".to_owned()),
            writer_blake3: *hasher.finalize().as_bytes(),
        };
        s.close_recording(id, req).unwrap();
        start += protocol::Duration(90000);
        ids.push(id);
    }
    s.shutdown().unwrap();
    ids
}

/// Sample files of `stream` in the sample dir.
fn files_of(d: &DataDir, stream: i32) -> Vec<CompositeId> {
    let mut ids: Vec<CompositeId> = std::fs::read_dir(d.sample_dir_path())
        .unwrap()
        .filter_map(|e| CompositeId::parse_file_name(e.unwrap().file_name().as_encoded_bytes()))
        .filter(|id| id.stream() == stream)
        .collect();
    ids.sort();
    ids
}

fn ids_of(json: &Value) -> Vec<String> {
    json.as_array()
        .expect("an array")
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn init_creates_a_data_dir_then_finds_it_initialized() {
    let tmp = tempfile::tempdir().unwrap();
    let d = DataDir::new(tmp.path().join("data"));
    let first = nvr(&d, &["init"]).ok();
    assert!(first.stdout.contains("created"), "{first:#?}");
    assert!(d.db_path().exists() && d.sample_dir_path().is_dir());
    let second = nvr(&d, &["init"]).ok();
    assert!(second.stdout.contains("already initialized"), "{second:#?}");
    // An existing empty directory is fine too.
    let empty = DataDir::new(tmp.path().join("empty"));
    std::fs::create_dir(&empty.root).unwrap();
    nvr(&empty, &["init"]).ok();
}

/// The database holds every camera's credentials: after `init` and offline commands the data
/// dir is 0700 and every file in it 0600, and `init` tightens a dir an older version left open.
#[test]
fn the_data_dir_and_everything_in_it_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let (_tmp, d) = data_dir(&[("cam", &["--source", "synthetic:"])]);
    nvr(&d, &["camera", "list"]).ok();
    nvr(&d, &["recordings", "--json"]).ok();
    assert!(d.db_path().exists());
    let bad = e2e::not_private(&d);
    assert!(bad.is_empty(), "{bad:?}");

    let open = std::fs::Permissions::from_mode(0o755);
    std::fs::set_permissions(&d.root, open.clone()).unwrap();
    std::fs::set_permissions(d.sample_dir_path(), open).unwrap();
    std::fs::set_permissions(d.db_path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(e2e::not_private(&d).len(), 3);
    nvr(&d, &["init"]).ok();
    let bad = e2e::not_private(&d);
    assert!(bad.is_empty(), "{bad:?}");
}

#[test]
fn init_refuses_a_directory_that_holds_something_else() {
    let tmp = tempfile::tempdir().unwrap();
    let d = DataDir::new(tmp.path().join("home"));
    std::fs::create_dir(&d.root).unwrap();
    std::fs::write(d.root.join("notes.txt"), "mine").unwrap();
    nvr(&d, &["init"]).fails(1, "is not empty and is not an nvr data dir");
    assert!(!d.db_path().exists(), "nothing created");
    assert!(!d.sample_dir_path().exists(), "nothing created");
}

#[test]
fn init_refuses_a_damaged_database_and_another_databases_sample_dir() {
    let (_tmp, d) = data_dir(&[]);
    std::fs::write(d.db_path(), vec![b'x'; 8192]).unwrap();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(d.root.join(format!("db.sqlite3{suffix}")));
    }
    nvr(&d, &["init"]).fails(1, "not a database");

    let (_tmp2, other) = data_dir(&[]);
    std::fs::copy(other.db_path(), d.db_path()).unwrap();
    nvr(&d, &["init"]).fails(1, "belongs to database");
}

#[test]
fn bad_sizes_are_refused_naming_the_text_and_the_accepted_forms() {
    let (_tmp, d) = data_dir(&[]);
    for args in [
        &["--retain", "10XB"][..],
        &["--retain", "-5GiB"],
        &["--retain=-5GiB"],
        &["--retain", ""],
        &["--retain", "99999999PiB"],
    ] {
        let mut a = vec!["camera", "add", "cam", "--source", "synthetic:"];
        a.extend_from_slice(args);
        let r = nvr(&d, &a).fails(2, "invalid size");
        assert!(r.stderr.contains("500MiB"), "{r:#?}");
    }
    let r = nvr(
        &d,
        &[
            "camera",
            "add",
            "cam",
            "--source",
            "synthetic:",
            "--retain",
            "-5GiB",
        ],
    );
    assert!(
        r.stderr.contains("\"-5GiB\": a size cannot be negative"),
        "{r:#?}"
    );
    nvr(&d, &["camera", "list", "--json"]).ok();
    assert_eq!(
        nvr(&d, &["camera", "list", "--json"]).ok().json(),
        Value::Array(vec![])
    );
}

#[test]
fn invalid_names_and_settings_are_refused_before_anything_changes() {
    let (_tmp, d) = data_dir(&[]);
    for (args, message) in [
        (
            &["camera", "add", "a b", "--source", "synthetic:"][..],
            "camera name \"a b\" is invalid",
        ),
        (
            &["camera", "add", "cam", "--source", "http://cam/"],
            "camera source \"http://cam/\" is invalid",
        ),
        (
            &["camera", "add", "cam", "--source", "rtsp:///x"],
            "no host",
        ),
        (
            &["camera", "add", "cam", "--source", "synthetic:?fps=0"],
            "fps=0 is outside",
        ),
        (
            &["camera", "add", "cam", "--source", "file:"],
            "file: needs a path",
        ),
        (
            &[
                "camera",
                "add",
                "cam",
                "--source",
                "rtsp://cam/x?transport=quic",
            ],
            "transport=\"quic\" is neither tcp nor udp",
        ),
        (
            &[
                "camera",
                "add",
                "cam",
                "--source",
                "synthetic:",
                "--username",
                "u",
            ],
            "--username applies to rtsp:// sources only",
        ),
        (
            &[
                "camera",
                "add",
                "cam",
                "--source",
                "rtsp://a:b@cam/x",
                "--username",
                "u",
            ],
            "give them in the URL or with --username, not both",
        ),
        (
            &[
                "camera",
                "add",
                "cam",
                "--source",
                "synthetic:",
                "--rotate-sec",
                "0",
            ],
            "rotate_sec 0 is out of range",
        ),
        (
            &[
                "camera",
                "add",
                "cam",
                "--source",
                "synthetic:",
                "--flush-if-sec",
                "3601",
            ],
            "flush_if_sec 3601 is out of range",
        ),
    ] {
        nvr(&d, args).fails(1, message);
    }
    assert_eq!(
        nvr(&d, &["camera", "list", "--json"]).ok().json(),
        Value::Array(vec![])
    );
}

/// Credentials given apart from the URL are stored in it, percent-encoded; listings show the
/// password as `***`; the password file's first line is the password.
#[test]
fn camera_credentials_are_stored_with_the_url_and_listed_redacted() {
    let (tmp, d) = data_dir(&[]);
    let pass = tmp.path().join("cam.pass");
    std::fs::write(&pass, "p@ss:word\nignored\n").unwrap();
    let out = nvr(
        &d,
        &[
            "camera",
            "add",
            "cam",
            "--source",
            "rtsp://10.0.0.7:554/h264?transport=udp",
            "--username",
            "ad min",
            "--password-file",
            pass.to_str().unwrap(),
        ],
    )
    .ok();
    assert!(!out.stdout.contains("p@ss"), "{}", out.stdout);
    let stored = Database::open(&d.db_path()).unwrap().streams().unwrap()[0]
        .config
        .source
        .clone();
    assert_eq!(
        stored,
        "rtsp://ad%20min:p%40ss%3Aword@10.0.0.7:554/h264?transport=udp"
    );
    let list = nvr(&d, &["camera", "list"]).ok().stdout;
    assert!(
        list.contains("rtsp://ad%20min:***@10.0.0.7:554/h264"),
        "{list}"
    );
    let json = nvr(&d, &["camera", "list", "--json"]).ok().json();
    assert_eq!(
        json[0]["source"],
        "rtsp://ad%20min:***@10.0.0.7:554/h264?transport=udp"
    );
    // The camera gets exactly the file's bytes, `%` included.
    std::fs::write(&pass, "50%41off\n").unwrap();
    nvr(
        &d,
        &[
            "camera",
            "set",
            "cam",
            "--source",
            "rtsp://cam/x",
            "--username",
            "u",
            "--password-file",
            pass.to_str().unwrap(),
        ],
    )
    .ok();
    let stored = Database::open(&d.db_path()).unwrap().streams().unwrap()[0]
        .config
        .source
        .clone();
    let parsed = protocol::source_url::RtspUrl::parse(&stored).unwrap();
    assert_eq!(parsed.credentials.unwrap().password, "50%41off");
    // A password given in the URL is redacted the same way.
    nvr(
        &d,
        &["camera", "set", "cam", "--source", "rtsp://u:hunter2@cam/x"],
    )
    .ok();
    let list = nvr(&d, &["camera", "list"]).ok().stdout;
    assert!(
        list.contains("rtsp://u:***@cam/x") && !list.contains("hunter2"),
        "{list}"
    );
}

#[test]
fn unknown_cameras_are_an_error_offline() {
    let (_tmp, d) = data_dir(&[("cam", &["--source", "synthetic:"])]);
    for args in [
        &["camera", "set", "nope", "--retain", "1GiB"][..],
        &["camera", "remove", "nope"],
        &["camera", "remove", "nope", "--delete-recordings"],
        &["recordings", "--camera", "nope"],
        &["recordings", "--camera", "nope", "--json"],
    ] {
        nvr(&d, args).fails(1, "no camera named \"nope\"");
    }
    let r = nvr(&d, &["camera", "add", "cam", "--source", "synthetic:"]).fails(1, "\"cam\"");
    assert!(r.stderr.contains("already exists"), "{r:#?}");
}

#[test]
fn commands_need_an_initialized_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let d = DataDir::new(tmp.path().join("none"));
    for args in [&["status"][..], &["camera", "list"], &["recordings"]] {
        nvr(&d, args).fails(1, "run `nvr init` first");
    }
}

#[test]
fn cameras_are_added_listed_changed_and_removed_offline() {
    let (_tmp, d) = data_dir(&[]);
    let r = nvr(
        &d,
        &[
            "camera",
            "add",
            "front",
            "--source",
            "rtsp://10.0.0.7:554/h264",
        ],
    )
    .ok();
    assert!(r.stdout.contains("front"), "{r:#?}");
    nvr(
        &d,
        &[
            "camera",
            "add",
            "back",
            "--source",
            "synthetic:?fps=10",
            "--retain",
            "500MiB",
            "--flush-if-sec",
            "5",
            "--rotate-sec",
            "30",
        ],
    )
    .ok();
    let list = nvr(&d, &["camera", "list", "--json"]).ok().json();
    assert_eq!(
        list,
        serde_json::json!([
            {"id": 1, "name": "front", "source": "rtsp://10.0.0.7:554/h264",
             "retain_bytes": 10i64 << 30, "flush_if_sec": 60, "rotate_sec": 60},
            {"id": 2, "name": "back", "source": "synthetic:?fps=10",
             "retain_bytes": 500i64 << 20, "flush_if_sec": 5, "rotate_sec": 30},
        ])
    );
    let table = nvr(&d, &["camera", "list"]).ok().stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("ID  NAME "), "{table}");
    assert!(
        lines[1].contains("front") && lines[1].contains("10 GiB"),
        "{table}"
    );
    assert!(lines[2].contains("500 MiB"), "{table}");
    // Columns line up: each header starts where its cells start or end.
    let source_col = lines[0].find("SOURCE").unwrap();
    assert_eq!(lines[1].find("rtsp://"), Some(source_col), "{table}");
    assert_eq!(lines[2].find("synthetic:"), Some(source_col), "{table}");

    nvr(
        &d,
        &[
            "camera",
            "set",
            "front",
            "--source",
            "synthetic:",
            "--rotate-sec",
            "10",
        ],
    )
    .ok();
    nvr(&d, &["camera", "set", "front"]).fails(1, "nothing to change");
    nvr(&d, &["camera", "remove", "back"]).ok();
    let list = nvr(&d, &["camera", "list", "--json"]).ok().json();
    assert_eq!(
        list,
        serde_json::json!([
            {"id": 1, "name": "front", "source": "synthetic:",
             "retain_bytes": 10i64 << 30, "flush_if_sec": 60, "rotate_sec": 10},
        ])
    );
    // Stream ids are never reused.
    nvr(&d, &["camera", "add", "back", "--source", "synthetic:"]).ok();
    let list = nvr(&d, &["camera", "list", "--json"]).ok().json();
    assert_eq!(list[1]["id"], 3, "{list}");
}

#[test]
fn lowering_retain_offline_deletes_the_excess_at_once() {
    let (_tmp, d) = data_dir(&[
        ("cam", &["--source", "synthetic:"]),
        ("other", &["--source", "synthetic:"]),
    ]);
    let ids = record(&d, "cam", 4);
    let other = record(&d, "other", 1);
    assert_eq!(files_of(&d, 1), ids);
    // Room for two recordings of 4 KiB (rounded).
    let r = nvr(&d, &["camera", "set", "cam", "--retain", "8KiB"]).ok();
    assert!(r.stdout.contains("2 recording(s) deleted"), "{r:#?}");
    assert_eq!(files_of(&d, 1), ids[2..], "the oldest went, at once");
    assert_eq!(files_of(&d, 2), other, "the other camera untouched");
    let json = nvr(&d, &["recordings", "--camera", "cam", "--json"])
        .ok()
        .json();
    let expected: Vec<String> = ids[2..].iter().map(|i| i.to_string()).collect();
    assert_eq!(ids_of(&json), expected);
    assert!(e2e::check(&d).is_empty(), "{:#?}", e2e::check(&d));
}

#[test]
fn removing_a_camera_with_recordings_needs_delete_recordings_offline() {
    let (_tmp, d) = data_dir(&[
        ("cam", &["--source", "synthetic:"]),
        ("other", &["--source", "synthetic:"]),
    ]);
    let ids = record(&d, "cam", 2);
    let other = record(&d, "other", 2);
    nvr(&d, &["camera", "remove", "cam"])
        .fails(1, "camera \"cam\" has 2 committed recording(s)")
        .fails(1, "--delete-recordings");
    assert_eq!(files_of(&d, 1), ids, "nothing deleted");
    let r = nvr(&d, &["camera", "remove", "cam", "--delete-recordings"]).ok();
    assert!(r.stdout.contains("2 "), "{r:#?}");
    assert!(files_of(&d, 1).is_empty());
    assert_eq!(files_of(&d, 2), other);
    let json = nvr(&d, &["recordings", "--json"]).ok().json();
    let expected: Vec<String> = other.iter().map(|i| i.to_string()).collect();
    assert_eq!(ids_of(&json), expected);
    assert!(e2e::check(&d).is_empty(), "{:#?}", e2e::check(&d));
}

#[test]
fn status_shows_recordings_bytes_quota_and_the_newest_offline() {
    let (_tmp, d) = data_dir(&[
        ("cam", &["--source", "synthetic:", "--retain", "1MiB"]),
        ("idle", &["--source", "synthetic:"]),
    ]);
    let ids = record(&d, "cam", 3);
    let s = nvr(&d, &["status", "--json"]).ok().json();
    assert_eq!(s["syncer"], "stopped");
    assert_eq!(s["supervisor_pid"], Value::Null);
    let cam = &s["cameras"][0];
    assert_eq!(cam["name"], "cam");
    assert_eq!(cam["state"], "stopped");
    assert_eq!(cam["restarts"], 0);
    assert_eq!(cam["committed_recordings"], 3);
    assert_eq!(cam["committed_bytes"], 3 * 4096);
    assert_eq!(cam["retain_bytes"], 1 << 20);
    assert_eq!(cam["newest_recording"]["id"], ids[2].to_string());
    let start = cam["newest_recording"]["start"].as_str().unwrap();
    assert!(start.ends_with('Z') && start.contains('T'), "{start}");
    assert_eq!(s["cameras"][1]["newest_recording"], Value::Null);

    let table = nvr(&d, &["status"]).ok().stdout;
    let row = table.lines().find(|l| l.starts_with("cam ")).expect(&table);
    assert!(
        row.contains("12 KiB") && row.contains("1 MiB") && row.contains(&ids[2].to_string()),
        "{table}"
    );
}

#[test]
fn a_locked_data_dir_without_a_syncer_is_reported_clearly() {
    let (_tmp, d) = data_dir(&[("cam", &["--source", "synthetic:"])]);
    let _lock = d.lock_sample_dir().unwrap();
    for args in [&["status"][..], &["recordings"], &["camera", "list"]] {
        nvr(&d, args).fails(1, "holds the data dir's lock, but no syncer answers");
    }
}

/// A read-only data dir (a read-only bind mount, as of a disk mounted read-only) can be read:
/// status, recordings, camera list, `check --hash` and export work, and commands that would
/// change it say that it is read-only (all of them used to fail with SQLite's "unable to open
/// database file"). Nothing is changed.
#[test]
fn a_read_only_data_dir_is_readable_and_changes_are_refused_saying_why() {
    let (tmp, d) = data_dir(&[("cam", &["--source", "synthetic:"])]);
    let ids = record(&d, "cam", 2);
    let db_before = std::fs::read(d.db_path()).unwrap();
    let Some(read_only) = e2e::bind_read_only(&d.root) else {
        return;
    };
    let s = nvr(&d, &["status", "--json"]).ok().json();
    assert_eq!(s["cameras"][0]["committed_recordings"], 2);
    let listed = nvr(&d, &["recordings", "--json"]).ok().json();
    let want: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    assert_eq!(ids_of(&listed), want);
    assert!(nvr(&d, &["camera", "list"]).ok().stdout.contains("cam"));
    nvr(&d, &["check", "--hash"]).ok();
    let mp4 = tmp.path().join("one.mp4");
    let id = ids[0].to_string();
    let export = [
        "export",
        "--camera",
        "cam",
        "--id",
        &id,
        "-o",
        mp4.to_str().unwrap(),
    ];
    nvr(&d, &export).ok();
    assert!(std::fs::metadata(&mp4).unwrap().len() > 3000);
    let changes: [&[&str]; 5] = [
        &["camera", "add", "new", "--source", "synthetic:"],
        &["camera", "set", "cam", "--retain", "1MiB"],
        &["camera", "remove", "cam", "--delete-recordings"],
        &["check", "--repair"],
        &["run"],
    ];
    for args in changes {
        nvr(&d, args).fails(1, "the data dir cannot be written");
    }
    drop(read_only);
    assert_eq!(std::fs::read(d.db_path()).unwrap(), db_before);
    assert_eq!(files_of(&d, 1), ids);
}

/// A read-only data dir whose write-ahead log holds commits (a syncer killed, then the disk
/// mounted read-only) is read with those commits; without the log's index (lost in a copy),
/// it is refused with what to do rather than shown without them.
#[test]
fn a_read_only_data_dir_with_a_leftover_log_is_read_whole_or_not_at_all() {
    let (_tmp, d) = data_dir(&[("cam", &["--source", "synthetic:"])]);
    let mut syncer = start(&d);
    nvr(&d, &["camera", "add", "logged", "--source", "synthetic:"]).ok();
    syncer.signal(Signal::SIGKILL);
    syncer.wait(Duration::from_secs(10));
    let wal = d.root.join("db.sqlite3-wal");
    assert!(std::fs::metadata(&wal).unwrap().len() > 0, "a log is left");
    {
        let Some(_read_only) = e2e::bind_read_only(&d.root) else {
            return;
        };
        let listed = nvr(&d, &["camera", "list"]).ok().stdout;
        assert!(listed.contains("logged"), "{listed}");
    }
    std::fs::remove_file(d.root.join("db.sqlite3-shm")).unwrap();
    let _read_only = e2e::bind_read_only(&d.root).unwrap();
    nvr(&d, &["camera", "list"]).fails(1, "holds commits not yet in the database file");
}

/// A data dir whose sample dir is gone (its disk not mounted) says so, offline and at the
/// syncer's start, and nothing makes a new empty one in its place.
#[test]
fn a_missing_sample_dir_is_reported_as_such() {
    let (_tmp, d) = data_dir(&[("cam", &["--source", "synthetic:"])]);
    std::fs::remove_dir_all(d.sample_dir_path()).unwrap();
    let missing = "is missing: its file system is not mounted, or it was removed";
    for args in [&["status"][..], &["camera", "list"], &["check"], &["run"]] {
        nvr(&d, args).fails(1, missing);
    }
    let out = Command::new(e2e::binary("nvr-syncer"))
        .arg("--data-dir")
        .arg(&d.root)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(missing));
    assert!(!d.sample_dir_path().exists());
}

/// While an `nvr run` holds the data dir (its lock) but its syncer is between runs, a command
/// waits for that syncer instead of locking the dir itself (which would make the restarting
/// syncer fail), and goes through it once it answers; if the supervisor goes away instead, the
/// command works offline.
#[test]
fn commands_wait_for_a_supervised_syncer_instead_of_going_offline() {
    let (_tmp, d) = data_dir(&[("cam", &["--source", "synthetic:"])]);
    let spawn_status = || {
        Command::new(env!("CARGO_BIN_EXE_nvr"))
            .arg("--data-dir")
            .arg(&d.root)
            .args(["status", "--json"])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    // The syncer comes back: the command went through it.
    let lock = supervisor::state::SupervisorLock::acquire(&d, None).unwrap();
    let mut status = spawn_status();
    std::thread::sleep(Duration::from_secs(1));
    assert!(status.try_wait().unwrap().is_none(), "it waits");
    drop(
        d.lock_sample_dir()
            .expect("the waiting command holds no lock"),
    );
    let syncer = start(&d);
    let out = status.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["syncer"], "running");
    assert!(String::from_utf8_lossy(&out.stderr).contains("waiting for the syncer"));
    stop(syncer);
    // The supervisor goes away: offline.
    let mut status = spawn_status();
    std::thread::sleep(Duration::from_secs(1));
    assert!(status.try_wait().unwrap().is_none(), "it waits");
    drop(lock);
    let out = status.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["syncer"], "stopped");
}

/// Checks one `nvr recordings --json` entry against the database row it shows.
fn check_recording_json(r: &Value, row: &syncer::db::RecordingRow, camera: &str) {
    assert_eq!(r["id"], row.id.to_string());
    let id = r["id"].as_str().unwrap();
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    assert_eq!(r["camera"], camera);
    assert_eq!(r["start"], row.start.to_string());
    assert_eq!(r["start_90k"], row.start.0);
    assert_eq!(r["wall_duration_90k"], 90000);
    assert_eq!(r["media_duration_90k"], 90000);
    assert_eq!(r["sample_file_bytes"], RECORDING_BYTES);
    assert_eq!(r["video_samples"], 3);
    assert_eq!(r["video_sync_samples"], 1);
    assert_eq!(r["run_offset"], row.run_offset);
    let hex: String = row.blake3.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(r["blake3"], hex);
    assert_eq!(r["end_reason"], "rotation");
    assert_eq!(r["flags"], 0);
}

#[test]
fn recordings_json_is_the_same_from_the_running_syncer_and_from_the_database() {
    let (_tmp, d) = data_dir(&[
        ("cam", &["--source", "synthetic:"]),
        ("other", &["--source", "synthetic:"]),
    ]);
    record(&d, "cam", 3);
    record(&d, "other", 1);
    let rows = e2e::recordings(&d);

    let syncer = start(&d);
    // Proof that the socket answers: offline access would need the lock the syncer holds.
    assert!(d.lock_sample_dir().is_err());
    let online = nvr(&d, &["recordings", "--json"]).ok();
    let online_cam = nvr(&d, &["recordings", "--camera", "cam", "--json"]).ok();
    let status = nvr(&d, &["status", "--json"]).ok().json();
    assert_eq!(status["syncer"], "running");
    assert_eq!(status["cameras"][0]["committed_recordings"], 3);
    nvr(&d, &["recordings", "--camera", "nope"]).fails(1, "no camera named \"nope\"");
    stop(syncer);

    let offline = nvr(&d, &["recordings", "--json"]).ok();
    let offline_cam = nvr(&d, &["recordings", "--camera", "cam", "--json"]).ok();
    assert_eq!(online.stdout, offline.stdout);
    assert_eq!(online_cam.stdout, offline_cam.stdout);

    let all = online.json();
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 4);
    for (r, row) in all.iter().zip(&rows) {
        let camera = if row.id.stream() == 1 { "cam" } else { "other" };
        check_recording_json(r, row, camera);
        // The id is the sample file's name.
        assert!(
            d.sample_dir_path()
                .join(r["id"].as_str().unwrap())
                .is_file()
        );
    }
    assert_eq!(online_cam.json().as_array().unwrap().len(), 3);

    let table = nvr(&d, &["recordings"]).ok().stdout;
    assert_eq!(table.lines().count(), 5, "{table}");
    assert!(table.lines().nth(1).unwrap().contains("1.000s"), "{table}");
}

#[test]
fn camera_changes_go_through_the_running_syncer() {
    let (_tmp, d) = data_dir(&[("cam", &["--source", "synthetic:"])]);
    let ids = record(&d, "cam", 4);
    let syncer = start(&d);

    nvr(
        &d,
        &[
            "camera",
            "add",
            "new",
            "--source",
            "synthetic:",
            "--retain",
            "1GiB",
        ],
    )
    .ok();
    let list = nvr(&d, &["camera", "list", "--json"]).ok().json();
    assert_eq!(list[1]["name"], "new");
    assert_eq!(list[1]["retain_bytes"], 1 << 30);
    // The syncer itself knows it: it would broker a connection for it.
    let mut admin = AdminClient::connect(&d).unwrap();
    assert!(admin.cameras().unwrap().iter().any(|c| c.name == "new"));

    nvr(&d, &["camera", "add", "new", "--source", "synthetic:"]).fails(1, "already exists");
    nvr(&d, &["camera", "set", "nope", "--rotate-sec", "5"]).fails(1, "no camera named \"nope\"");
    nvr(&d, &["camera", "remove", "nope"]).fails(1, "no camera named \"nope\"");
    nvr(&d, &["camera", "set", "cam", "--rotate-sec", "271"]).fails(1, "rotate_sec 271");

    let r = nvr(&d, &["camera", "set", "cam", "--retain", "8KiB"]).ok();
    assert!(r.stdout.contains("2 recording(s) deleted"), "{r:#?}");
    assert_eq!(files_of(&d, 1), ids[2..], "deleted before the answer");

    nvr(&d, &["camera", "remove", "cam"]).fails(1, "--delete-recordings");
    nvr(&d, &["camera", "remove", "cam", "--delete-recordings"]).ok();
    assert!(files_of(&d, 1).is_empty(), "unlinked before the answer");
    nvr(&d, &["camera", "remove", "new"]).ok();
    assert!(admin.cameras().unwrap().is_empty());
    drop(admin);
    stop(syncer);

    assert_eq!(
        nvr(&d, &["camera", "list", "--json"]).ok().json(),
        Value::Array(vec![])
    );
    assert!(e2e::check(&d).is_empty(), "{:#?}", e2e::check(&d));
}

/// Waits until the syncer reports a growing recording for `camera`.
fn wait_growing(d: &DataDir, camera: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = AdminClient::connect(d).unwrap().status().unwrap();
        if status
            .streams
            .iter()
            .any(|s| s.name == camera && s.growing.is_some())
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{camera} never started recording"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn removing_a_recording_camera_drops_its_ingest_and_deletes_its_salvaged_recording() {
    let (_tmp, d) = data_dir(&[
        (
            "cam",
            &[
                "--source",
                "synthetic:",
                "--flush-if-sec",
                "0",
                "--rotate-sec",
                "1",
            ],
        ),
        ("other", &["--source", "synthetic:"]),
    ]);
    let other = record(&d, "other", 1);
    let syncer = start(&d);
    let mut ingest = start_ingest(&d, "cam", "synthetic:?fps=30", &[]);
    wait_growing(&d, "cam");
    let status = nvr(&d, &["status", "--json"]).ok().json();
    assert_eq!(status["syncer"], "running");
    let cam = &status["cameras"][0];
    assert_eq!(cam["state"], "running", "{status}");
    assert!(
        cam["growing"]
            .as_str()
            .is_some_and(|g| g.starts_with("00000001")),
        "{status}"
    );

    // Without --delete-recordings, a camera that is recording is refused and keeps recording.
    let r = nvr(&d, &["camera", "remove", "cam"]);
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(
        r.stderr.contains("being written") || r.stderr.contains("--delete-recordings"),
        "{r:#?}"
    );
    assert!(ingest.try_status().is_none(), "the ingest keeps recording");

    nvr(&d, &["camera", "remove", "cam", "--delete-recordings"]).ok();
    let status = ingest.wait(Duration::from_secs(20));
    assert!(
        !status.success(),
        "the ingest lost its connection: {status:?}"
    );
    assert!(files_of(&d, 1).is_empty(), "salvaged, then deleted");
    assert_eq!(files_of(&d, 2), other);
    nvr(&d, &["recordings", "--camera", "cam"]).fails(1, "no camera named \"cam\"");
    // A new connection for the removed camera is refused.
    let e = AdminClient::connect(&d)
        .unwrap()
        .connect_ingest("cam")
        .unwrap_err();
    assert!(e.to_string().contains("no camera named"), "{e}");
    stop(syncer);
    assert!(e2e::check(&d).is_empty(), "{:#?}", e2e::check(&d));
}

#[test]
fn status_merges_what_nvr_run_knows_about_each_camera() {
    use supervisor::state::{CameraState, ProcessState, SupervisorLock, SupervisorState};
    let (_tmp, d) = data_dir(&[
        ("cam", &["--source", "synthetic:"]),
        ("new", &["--source", "synthetic:"]),
    ]);
    // A state file as a running `nvr run` (this test's own pid, so it counts as alive) writes.
    SupervisorState {
        pid: std::process::id(),
        syncer: ProcessState::Running,
        syncer_restarts: 1,
        cameras: vec![CameraState {
            name: "cam".to_owned(),
            state: ProcessState::Failed,
            restarts: 5,
            last_error: Some("nvr-ingest exited with status 4: no such file".to_owned()),
            retry_at: Some(protocol::Time(1_800_000_000 * 90_000)),
        }],
    }
    .write(&d, &SupervisorLock::acquire(&d, None).unwrap())
    .unwrap();
    let s = nvr(&d, &["status", "--json"]).ok().json();
    assert_eq!(s["supervisor_pid"], std::process::id());
    let cam = &s["cameras"][0];
    assert_eq!(cam["state"], "failed");
    assert_eq!(cam["restarts"], 5);
    assert_eq!(
        cam["last_error"],
        "nvr-ingest exited with status 4: no such file"
    );
    // A camera the supervisor does not know (added after it started) is not running.
    assert_eq!(s["cameras"][1]["state"], "stopped");
    let table = nvr(&d, &["status"]).ok().stdout;
    assert!(
        table.contains(&format!("pid {}", std::process::id())),
        "{table}"
    );
    let row = table.lines().find(|l| l.starts_with("cam ")).expect(&table);
    assert!(
        row.contains("failed") && row.contains("status 4: no such file"),
        "{table}"
    );
}

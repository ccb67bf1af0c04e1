//! Compromised ingests under `nvr run`, each beside an honest camera: `nvr-hostile-ingest`
//! (see its docs) stands in for `nvr-ingest` in a bin dir of this test's, performing one
//! attack per camera named `evil-ATTACK`, while the camera `honest` runs the real ingest.
//!
//! Each test asserts what the attack got (the evil camera's end, as `nvr status` shows it),
//! that it is logged naming the camera, that the honest camera lost none of its recordings
//! meanwhile and kept recording, and that `check --hash` is clean afterwards. As root (CI),
//! every ingest runs under a uid of its own.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use e2e::{camera, wait_until};
use nix::sys::signal::Signal;
use protocol::CompositeId;
use supervisor_state::{CameraState, read_state};
use syncer::admin_client::AdminClient;
use syncer::layout::DataDir;

/// The supervisor's state file, read without depending on the supervisor crate: only what
/// these tests look at.
mod supervisor_state {
    use syncer::layout::DataDir;

    #[derive(Debug)]
    pub struct CameraState {
        pub name: String,
        pub last_error: String,
    }

    pub fn read_state(d: &DataDir) -> Vec<CameraState> {
        let Ok(text) = std::fs::read_to_string(d.root.join("supervisor.json")) else {
            return Vec::new();
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            return Vec::new();
        };
        let field = |c: &serde_json::Value, k: &str| c[k].as_str().unwrap_or_default().to_owned();
        v["cameras"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .map(|c| CameraState {
                        name: field(c, "name"),
                        last_error: field(c, "last_error"),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A bin dir holding `nvr` and `nvr-syncer` (hard links, else copies) and the hostile ingest
/// as `nvr-ingest`, readable by every uid (ingests run under their own).
fn bin_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("hostile-bin")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let hostile = PathBuf::from(env!("CARGO_BIN_EXE_nvr-hostile-ingest"));
    for (name, from) in [
        ("nvr", e2e::binary("nvr")),
        ("nvr-syncer", e2e::binary("nvr-syncer")),
        ("nvr-ingest", hostile),
    ] {
        let to = dir.path().join(name);
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).unwrap();
        }
    }
    dir
}

fn committed_ids(d: &DataDir, camera: &str) -> Vec<CompositeId> {
    AdminClient::connect(d)
        .and_then(|mut a| a.recordings(Some(camera)))
        .map(|r| r.iter().map(|r| r.id).collect())
        .unwrap_or_default()
}

/// What one attack came to.
struct Outcome {
    evil: CameraState,
    /// `nvr run`'s log, with its children's.
    log: String,
    /// The evil camera's committed recordings at the end.
    evil_recordings: usize,
    data_dir: DataDir,
    _tmp: tempfile::TempDir,
}

/// Runs `attack` under `nvr run` beside an honest camera until `done` holds for the evil
/// camera's state (at most a minute), then lets the honest camera record three more
/// recordings, stops, and checks what every test checks.
fn run_attack(attack: &str, done: impl Fn(&CameraState, &DataDir) -> bool) -> Outcome {
    run_attack_owned(attack, None, done)
}

/// [`run_attack`] on a data dir given to the user `owner` (`nvr init --user`), so that the
/// syncer runs unprivileged as that user.
fn run_attack_owned(
    attack: &str,
    owner: Option<&str>,
    done: impl Fn(&CameraState, &DataDir) -> bool,
) -> Outcome {
    let evil = format!("evil-{attack}");
    let tmp = tempfile::tempdir().unwrap();
    let clip = tmp.path().join("clip.h264");
    std::fs::copy(e2e::clip_path(), &clip).unwrap();
    let d = DataDir::new(tmp.path().join("data"));
    let honest_source = format!("file:{}", clip.display());
    e2e::init_data_dir(
        &d,
        &[
            ("honest", camera(&honest_source, 1, 1)),
            (&evil, camera("synthetic:", 1, 1)),
        ],
    );
    let bin = bin_dir();
    if let Some(user) = owner {
        // The owner must reach its data dir.
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = std::process::Command::new(e2e::binary("nvr"))
            .arg("--data-dir")
            .arg(&d.root)
            .args(["init", "--user", user])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let log_path = tmp.path().join("nvr.log");
    let real = e2e::binary("nvr-ingest");
    let mut nvr = e2e::start_nvr_run_from(
        &bin.path().join("nvr"),
        &d,
        &["--max-restarts", "3", "--restart-backoff-ms", "200"],
        Some(&log_path),
        &[("NVR_REAL_INGEST", real.as_os_str())],
    );
    wait_until(
        "the honest camera's first recording",
        Duration::from_secs(60),
        || !committed_ids(&d, "honest").is_empty(),
    );
    let evil_state = |d: &DataDir| read_state(d).into_iter().find(|c| c.name == evil);
    let started = Instant::now();
    while !evil_state(&d).is_some_and(|s| done(&s, &d)) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{attack}: never done; state {:?}; log:\n{}",
            evil_state(&d),
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let seen = committed_ids(&d, "honest");
    wait_until(
        "three more honest recordings",
        Duration::from_secs(60),
        || committed_ids(&d, "honest").len() >= seen.len() + 3,
    );
    let evil_at_end = evil_state(&d).unwrap();
    nvr.signal(Signal::SIGTERM);
    assert!(
        nvr.wait(Duration::from_secs(60)).success(),
        "{attack}: nvr run failed"
    );
    let log = std::fs::read_to_string(&log_path).unwrap();
    let rows = e2e::recordings(&d);
    let honest_id = rows
        .iter()
        .find(|r| seen.contains(&r.id))
        .unwrap()
        .id
        .stream();
    let kept: Vec<CompositeId> = rows.iter().map(|r| r.id).collect();
    for id in &seen {
        assert!(kept.contains(id), "{attack}: the honest camera lost {id}");
    }
    let violations = e2e::check(&d);
    assert!(violations.is_empty(), "{attack}: {violations:#?}");
    let evil_recordings = rows.iter().filter(|r| r.id.stream() != honest_id).count();
    Outcome {
        evil: evil_at_end,
        log,
        evil_recordings,
        data_dir: d,
        _tmp: tmp,
    }
}

/// The attack ended its ingest with an error containing `what`.
fn ended_with(what: &'static str) -> impl Fn(&CameraState, &DataDir) -> bool {
    move |s, _| s.last_error.contains(what)
}

/// The syncer cut the file back and dropped the connection; the supervisor ended the
/// process, naming why, and restarted it (until it was marked failed).
fn assert_dropped_for_growing(o: &Outcome) {
    assert!(
        o.evil.last_error.contains("the syncer dropped it"),
        "{:?}",
        o.evil
    );
    assert!(o.evil.last_error.contains("more than the"), "{:?}", o.evil);
    assert!(
        o.log
            .lines()
            .any(|l| l.contains("dropping ingest connection")
                && l.contains(&format!("stream={}", o.evil.name))),
        "{}",
        o.log
    );
    assert!(
        o.log
            .contains("an ingest wrote past what its recording may hold: cut back"),
        "{}",
        o.log
    );
}

/// Whether this test process is root; the syncer's watch of the files an ingest holds needs
/// it (an ingest is not dumpable, so only root may list its descriptors).
fn root_or_skip() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("SKIPPED: watching an ingest's descriptors needs root");
    }
    root
}

#[test]
fn writing_through_a_committed_recordings_descriptor() {
    if !root_or_skip() {
        return;
    }
    let o = run_attack("keep-fd", ended_with("the syncer dropped it"));
    assert_dropped_for_growing(&o);
    assert!(o.evil_recordings >= 1, "its honest-looking recording stays");
}

/// The same with the syncer running unprivileged as the data dir's owner: the supervisor lists
/// what the ingest holds for it, so the file is still cut back.
#[test]
fn writing_through_a_kept_descriptor_with_an_unprivileged_syncer() {
    if !root_or_skip() {
        return;
    }
    if nix::unistd::User::from_name("nobody")
        .ok()
        .flatten()
        .is_none()
    {
        eprintln!("SKIPPED: no user nobody");
        return;
    }
    let o = run_attack_owned(
        "keep-fd",
        Some("nobody"),
        ended_with("the syncer dropped it"),
    );
    assert_dropped_for_growing(&o);
}

#[test]
fn preallocating_past_a_committed_recording_unsandboxed() {
    if !root_or_skip() {
        return;
    }
    let o = run_attack("fallocate-unsandboxed", ended_with("the syncer dropped it"));
    assert_dropped_for_growing(&o);
    assert!(o.evil.last_error.contains("on disk"), "{:?}", o.evil);
}

#[test]
fn preallocating_truncating_or_clearing_append_in_the_sandbox() {
    for attack in ["fallocate", "ftruncate", "clear-append"] {
        run_attack(attack, ended_with("killed by the sandbox (SIGSYS)"));
    }
}

#[test]
fn an_open_flood_is_held_to_the_open_budget() {
    let started = Instant::now();
    let o = run_attack("open-flood", |_, d| {
        committed_ids(d, "evil-open-flood").len() >= protocol::limits::OPEN_BURST as usize
    });
    let secs = started.elapsed().as_secs() as usize;
    let most = protocol::limits::OPEN_BURST as usize + secs + 2;
    assert!(
        o.evil_recordings <= most,
        "{} recordings in {secs} s; the budget allows {most}",
        o.evil_recordings
    );
    assert!(
        o.log
            .contains("opens refused: faster than the stream's open budget")
    );
}

#[test]
fn another_cameras_sample_entry_cannot_be_poisoned() {
    let o = run_attack("poison-entry", |_, d| {
        !committed_ids(d, "evil-poison-entry").is_empty()
    });
    let db = syncer::db::Database::open(&o.data_dir.db_path()).unwrap();
    let entries = db.sample_entries().unwrap();
    let rows = db.recordings(None).unwrap();
    let evil_stream = rows
        .iter()
        .map(|r| r.id.stream())
        .max()
        .expect("recordings of both cameras");
    for r in &rows {
        let e = entries
            .iter()
            .find(|e| e.id == r.video_sample_entry_id)
            .unwrap();
        assert_eq!(
            e.stream_id,
            r.id.stream(),
            "{}: another stream's entry",
            r.id
        );
        if r.id.stream() != evil_stream {
            assert_eq!((e.width, e.height), (320, 240), "{}: {e:?}", r.id);
        }
    }
    assert!(
        entries
            .iter()
            .any(|e| e.stream_id == evil_stream && (e.width, e.height) == (1, 1)),
        "the poisoned entry is the evil stream's own"
    );
}

#[test]
fn absurd_times_are_refused() {
    let o = run_attack("absurd-times", ended_with("the syncer dropped it"));
    assert!(o.evil.last_error.contains("is outside"), "{:?}", o.evil);
    assert_eq!(o.evil_recordings, 0);
}

//! A sample file that cannot be unlinked freezes nothing (issue: one unlinkable file froze
//! everything): with real processes, the file retention is about to delete is made immutable
//! (`chattr +i`, so its unlink fails with EPERM). Both cameras keep committing, `nvr status`
//! answers at once and shows the failing unlink, and once the flag is cleared the retry (with
//! backoff) collects the file; `check --hash` is clean. Needs root and a file system with the
//! immutable flag (ext4, xfs, btrfs); elsewhere it says SKIPPED loudly and passes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::*;
use protocol::messages::GarbageStatus;
use syncer::admin_client::AdminClient;
use syncer::layout::{DataDir, sample_file_name};

/// About 1 MB a second in 250 KB recordings; the quota holds a handful.
const SOURCE: &str = "synthetic:?fps=30&bitrate=2000000&gop=30&speed=4";

/// Clears the immutable flag on drop, even when the test fails, so the temp dir can go.
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: &Path) -> Result<Immutable, String> {
        chattr("+i", path)?;
        Ok(Immutable(path.to_owned()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = chattr("-i", &self.0);
    }
}

fn chattr(flag: &str, path: &Path) -> Result<(), String> {
    let out = Command::new("chattr")
        .arg(flag)
        .arg(path)
        .output()
        .map_err(|e| format!("chattr: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The newest committed recording id of each stream (1 and 2), and the garbage status, from
/// the running syncer; also returns how long the call took.
fn observe(d: &DataDir) -> ([i32; 2], GarbageStatus, Duration) {
    let t = Instant::now();
    let mut admin = AdminClient::connect(d).expect("admin");
    let status = admin.status().expect("status");
    let mut newest = [-1; 2];
    for s in &status.streams {
        newest[(s.id - 1) as usize] = s.newest_committed.map_or(-1, |id| id.recording());
    }
    (newest, status.garbage, t.elapsed())
}

#[test]
fn an_unlinkable_file_freezes_nothing_and_is_collected_once_it_can_be() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: chattr +i needs root");
        return;
    }
    let mut small = camera("synthetic:", 1, 1);
    small.retain_bytes = 1 << 20;
    let (_tmp, d) = data_dir(&[("a", small), ("b", camera("synthetic:", 1, 1))]);
    let probe = d.sample_dir_path().join("immutable-probe");
    std::fs::write(&probe, b"x").unwrap();
    match Immutable::set(&probe) {
        Ok(flag) => drop(flag),
        Err(e) => {
            eprintln!("SKIPPED: this file system has no immutable flag ({e})");
            return;
        }
    }
    std::fs::remove_file(&probe).unwrap();

    let mut syncer = start_syncer(&d);
    let mut a = start_ingest(&d, "a", SOURCE, &[]);
    let mut b = start_ingest(&d, "b", SOURCE, &[]);
    wait_until(
        "three committed recordings of a",
        Duration::from_secs(30),
        || observe(&d).0[0] >= 2,
    );
    // a's oldest recording: retention deletes it within a few rotations.
    let oldest = AdminClient::connect(&d)
        .and_then(|mut c| c.recordings(Some("a")))
        .unwrap()[0]
        .id;
    let path = d.sample_dir_path().join(sample_file_name(oldest));
    let flag = Immutable::set(&path).expect("chattr +i");
    wait_until(
        "the failing unlink in status",
        Duration::from_secs(30),
        || observe(&d).1.failing_unlinks >= 1,
    );

    // Meanwhile, both cameras commit and status answers at once.
    let (before, _, _) = observe(&d);
    std::thread::sleep(Duration::from_secs(4));
    let (after, garbage, took) = observe(&d);
    assert!(took < Duration::from_secs(2), "status took {took:?}");
    assert!(
        after[0] > before[0] && after[1] > before[1],
        "newest committed {before:?} -> {after:?}: a camera stopped"
    );
    let error = garbage.newest_error.expect("the failing unlink's error");
    assert!(error.contains(&sample_file_name(oldest)), "{error}");
    let out = Command::new(binary("nvr"))
        .arg("--data-dir")
        .arg(&d.root)
        .args(["status", "--json"])
        .output()
        .expect("nvr status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        json["garbage"]["failing_unlinks"].as_u64().unwrap() >= 1,
        "{json}"
    );

    drop(flag);
    wait_until("the file collected", Duration::from_secs(60), || {
        !path.exists() && observe(&d).1.failing_unlinks == 0
    });
    a.stop(Duration::from_secs(30));
    b.stop(Duration::from_secs(30));
    syncer.stop(Duration::from_secs(30));
    let violations = check(&d);
    assert!(violations.is_empty(), "{violations:#?}");
}

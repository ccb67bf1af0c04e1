//! `nvr run` and `nvr demo` as real processes: graceful stop, restarts, failure isolation, and
//! no child outliving a killed supervisor.

use e2e::{pids_mentioning, wait_until};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use supervisor::state::{ProcessState, SupervisorState};
use syncer::layout::DataDir;

/// A temp dir with a copy of the clip (so that every process of this test names the dir) and a
/// data dir with the given cameras; sources may use `{clip}`.
fn setup(cameras: &[(&str, &str)]) -> (tempfile::TempDir, DataDir, String) {
    let tmp = tempfile::tempdir().unwrap();
    let clip = tmp.path().join("clip.h264");
    std::fs::copy(e2e::clip_path(), &clip).unwrap();
    let cams: Vec<(&str, syncer::db::StreamConfig)> = cameras
        .iter()
        .map(|(n, s)| {
            let source = s.replace("{clip}", &clip.display().to_string());
            (*n, e2e::camera(&source, 1, 2))
        })
        .collect();
    let d = DataDir::new(tmp.path().join("data"));
    e2e::init_data_dir(&d, &cams);
    let needle = tmp.path().display().to_string();
    (tmp, d, needle)
}

fn committed(d: &DataDir) -> u64 {
    syncer::admin_client::AdminClient::connect(d)
        .and_then(|mut a| a.status())
        .map(|s| s.streams.iter().map(|s| s.committed_recordings).sum())
        .unwrap_or(0)
}

fn syncer_pid(needle: &str) -> Option<i32> {
    pids_mentioning(needle)
        .into_iter()
        .find(|(_, c)| c.contains("nvr-syncer"))
        .map(|(p, _)| p)
}

#[test]
fn run_then_sigterm_leaves_a_clean_data_dir_and_no_process() {
    let (_tmp, d, needle) = setup(&[("a", "file:{clip}?speed=2"), ("b", "file:{clip}?speed=2")]);
    let mut nvr = e2e::start_nvr_run(&d, &[]);
    wait_until("recordings", Duration::from_secs(30), || committed(&d) >= 4);
    // Children are named for their role and camera.
    let procs = pids_mentioning(&needle);
    assert!(
        procs
            .iter()
            .any(|(_, c)| c.contains("nvr-ingest --camera a")),
        "{procs:?}"
    );
    assert!(
        procs
            .iter()
            .any(|(_, c)| c.contains("nvr-syncer --data-dir")),
        "{procs:?}"
    );
    // While running (database, WAL, SHM, socket, state, sample files) and after: private.
    let bad = e2e::not_private(&d);
    assert!(bad.is_empty(), "{bad:?}");
    nvr.signal(Signal::SIGTERM);
    assert!(nvr.wait(Duration::from_secs(60)).success());
    let bad = e2e::not_private(&d);
    assert!(bad.is_empty(), "{bad:?}");
    assert!(
        pids_mentioning(&needle).is_empty(),
        "{:?}",
        pids_mentioning(&needle)
    );
    let violations = e2e::check(&d);
    assert!(violations.is_empty(), "{violations:#?}");
    let rows = e2e::recordings(&d);
    for stream in [1, 2] {
        let last = rows.iter().rfind(|r| r.id.stream() == stream).unwrap();
        assert_eq!(last.end_reason.as_deref(), Some("shutdown"), "{last:?}");
    }
    assert!(SupervisorState::read(&d).is_none(), "state file removed");
}

/// A second `nvr run` on a supervised data dir stops at once, naming the running one, and
/// leaves its state file alone (it used to start a syncer that failed on the dir lock for
/// ~16 s, then remove the running supervisor's state).
#[test]
fn a_second_nvr_run_stops_at_once_and_leaves_the_first_alone() {
    let (_tmp, d, _needle) = setup(&[("a", "file:{clip}?speed=2")]);
    let mut first = e2e::start_nvr_run(&d, &[]);
    wait_until("recordings", Duration::from_secs(30), || committed(&d) >= 1);
    wait_until("the state file", Duration::from_secs(10), || {
        SupervisorState::read(&d).is_some()
    });
    let started = std::time::Instant::now();
    let out = Command::new(e2e::binary("nvr"))
        .arg("--data-dir")
        .arg(&d.root)
        .arg("run")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("another nvr run (pid {})", first.pid())),
        "{stderr}"
    );
    let state = SupervisorState::read(&d).expect("the first supervisor's state is still there");
    assert_eq!(state.pid, first.pid().as_raw() as u32);
    let before = committed(&d);
    wait_until("the first records on", Duration::from_secs(30), || {
        committed(&d) > before
    });
    first.signal(Signal::SIGTERM);
    assert!(first.wait(Duration::from_secs(60)).success());
}

#[test]
fn a_killed_syncer_is_restarted_and_recording_resumes() {
    let (_tmp, d, needle) = setup(&[("a", "file:{clip}?speed=2")]);
    let mut nvr = e2e::start_nvr_run(&d, &["--min-free", "1MiB"]);
    wait_until("a recording", Duration::from_secs(30), || {
        committed(&d) >= 1
    });
    let old = syncer_pid(&needle).unwrap();
    let cmdline = pids_mentioning(&needle)
        .into_iter()
        .find(|(p, _)| *p == old)
        .unwrap()
        .1;
    assert!(cmdline.contains("--min-free-bytes 1048576"), "{cmdline}");
    kill(Pid::from_raw(old), Signal::SIGKILL).unwrap();
    wait_until("a new syncer", Duration::from_secs(30), || {
        syncer_pid(&needle).is_some_and(|p| p != old)
    });
    let before = committed(&d);
    wait_until("recording to resume", Duration::from_secs(30), || {
        committed(&d) > before
    });
    let state = SupervisorState::read(&d).unwrap();
    assert_eq!(state.syncer_restarts, 1);
    nvr.signal(Signal::SIGTERM);
    assert!(nvr.wait(Duration::from_secs(60)).success());
    let violations = e2e::check(&d);
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn no_child_outlives_a_killed_supervisor() {
    let (_tmp, d, needle) = setup(&[("a", "file:{clip}"), ("b", "file:{clip}")]);
    let nvr = e2e::start_nvr_run(&d, &[]);
    wait_until("three children", Duration::from_secs(30), || {
        pids_mentioning(&needle).len() >= 3
    });
    nvr.signal(Signal::SIGKILL);
    wait_until("no child left", Duration::from_secs(10), || {
        pids_mentioning(&needle).is_empty()
    });
    // The data dir's lock was released with the syncer: a new run starts.
    let mut again = e2e::start_nvr_run(&d, &[]);
    wait_until("a new syncer", Duration::from_secs(30), || {
        syncer_pid(&needle).is_some()
    });
    again.signal(Signal::SIGTERM);
    assert!(again.wait(Duration::from_secs(60)).success());
}

#[test]
fn a_camera_with_a_missing_source_fails_alone() {
    let missing = "file:/nonexistent/nvr-test-clip.h264";
    let (_tmp, d, _needle) = setup(&[("good", "file:{clip}?speed=2"), ("bad", missing)]);
    let mut nvr = e2e::start_nvr_run(&d, &["--max-restarts", "2", "--restart-backoff-ms", "100"]);
    wait_until("bad to be marked failed", Duration::from_secs(30), || {
        SupervisorState::read(&d).is_some_and(|s| {
            s.cameras
                .iter()
                .any(|c| c.name == "bad" && c.state == ProcessState::Failed)
        })
    });
    let state = SupervisorState::read(&d).unwrap();
    let bad = state.cameras.iter().find(|c| c.name == "bad").unwrap();
    assert_eq!(bad.restarts, 3);
    assert!(
        bad.last_error.as_deref().unwrap_or("").contains("source"),
        "{bad:?}"
    );
    let good = state.cameras.iter().find(|c| c.name == "good").unwrap();
    assert_eq!((good.state, good.restarts), (ProcessState::Running, 0));
    let before = committed(&d);
    wait_until("good to keep recording", Duration::from_secs(30), || {
        committed(&d) > before
    });
    nvr.signal(Signal::SIGTERM);
    assert!(nvr.wait(Duration::from_secs(60)).success());
}

/// A failed camera is tried again after `--failed-retry-sec`, and records once what failed it
/// is gone (here: its file appears); `nvr status` says when the next try is meanwhile.
#[test]
fn a_failed_camera_is_tried_again_and_recovers() {
    let (tmp, d, _needle) = setup(&[("late", "file:{clip}.late?speed=2")]);
    let flags = [
        "--max-restarts",
        "1",
        "--restart-backoff-ms",
        "100",
        "--failed-retry-sec",
        "3",
    ];
    let mut nvr = e2e::start_nvr_run(&d, &flags);
    wait_until("late to be marked failed", Duration::from_secs(30), || {
        SupervisorState::read(&d).is_some_and(|s| {
            s.cameras
                .iter()
                .any(|c| c.state == ProcessState::Failed && c.retry_at.is_some())
        })
    });
    let status = Command::new(e2e::binary("nvr"))
        .arg("--data-dir")
        .arg(&d.root)
        .args(["status", "--json"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(json["cameras"][0]["next_try"].is_string(), "{json}");
    std::fs::copy(e2e::clip_path(), tmp.path().join("clip.h264.late")).unwrap();
    wait_until("late to record", Duration::from_secs(60), || {
        committed(&d) >= 1
    });
    let state = SupervisorState::read(&d).unwrap();
    assert_eq!(state.cameras[0].state, ProcessState::Running, "{state:?}");
    nvr.signal(Signal::SIGTERM);
    assert!(nvr.wait(Duration::from_secs(60)).success());
}

#[test]
fn demo_records_checks_and_summarizes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_nvr"))
        .arg("--data-dir")
        .arg(&dir)
        .args(["demo", "--duration", "6s"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("check        clean"), "{stdout}");
    assert!(stdout.contains(&dir.display().to_string()), "{stdout}");
    assert!(!e2e::recordings(&DataDir::new(&dir)).is_empty());
    assert!(Path::new(&dir).join("sample").is_dir());
}

/// The uid of a running process, from `/proc/<pid>/status`.
/// The first value of `field` (e.g. `Uid:`) in `/proc/<pid>/status`, and the whole line.
fn status_field(pid: i32, field: &str) -> (Option<u32>, String) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = s
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_default()
        .to_owned();
    let first = line.split_whitespace().next().and_then(|v| v.parse().ok());
    (first, line)
}

fn uid_of(pid: i32) -> Option<u32> {
    status_field(pid, "Uid:").0
}

/// Started as root, `nvr run` gives every camera's ingest the uid and gid 61000 + its stream
/// id and no supplementary groups, by default; a `file:` source in a directory only root may
/// read still records (the supervisor opens it); a range holding an assigned id is refused.
#[test]
fn as_root_each_camera_runs_under_a_uid_of_its_own() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: per-camera uids need root");
        return;
    }
    // Names no other test's processes have (they are looked up by command line).
    let (a, b) = (
        format!("uid-a-{}", std::process::id()),
        format!("uid-b-{}", std::process::id()),
    );
    let (tmp, d, needle) = setup(&[(&a, "file:{clip}?speed=2"), (&b, "synthetic:?speed=2")]);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    if let Some(nobody) = nix::unistd::User::from_name("nobody").unwrap() {
        let n = nobody.uid.as_raw();
        let out = Command::new(env!("CARGO_BIN_EXE_nvr"))
            .arg("--data-dir")
            .arg(&d.root)
            .args(["run", "--ingest-uids", &format!("{}-{}", n - 2, n)])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains("is not free") && stderr.contains("belongs to"),
            "{stderr}"
        );
    }

    let mut nvr = e2e::start_nvr_run(&d, &[]);
    wait_until(
        "a recording of each camera",
        Duration::from_secs(60),
        || {
            let status =
                syncer::admin_client::AdminClient::connect(&d).and_then(|mut a| a.status());
            status.is_ok_and(|s| s.streams.iter().all(|s| s.committed_recordings >= 1))
        },
    );
    let cameras = syncer::admin_client::AdminClient::connect(&d)
        .and_then(|mut a| a.cameras())
        .unwrap();
    for camera in &cameras {
        let (pid, _) = pids_mentioning(&format!("nvr-ingest --camera {} ", camera.name))
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("{}'s ingest runs", camera.name));
        let want = 61000 + camera.id as u32;
        let (_, uids) = status_field(pid, "Uid:");
        let (_, gids) = status_field(pid, "Gid:");
        let (_, groups) = status_field(pid, "Groups:");
        assert!(
            uids.split_whitespace().all(|u| u == want.to_string()),
            "{uids}"
        );
        assert!(
            gids.split_whitespace().all(|g| g == want.to_string()),
            "{gids}"
        );
        assert_eq!(groups.trim(), "", "no supplementary groups");
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let fsize = limits
            .lines()
            .find(|l| l.starts_with("Max file size"))
            .unwrap();
        assert!(!fsize.contains("unlimited"), "{fsize}");
    }
    assert_eq!(uid_of(syncer_pid(&needle).unwrap()), Some(0));
    nvr.signal(Signal::SIGTERM);
    assert!(nvr.wait(Duration::from_secs(60)).success());
    let violations = e2e::check(&d);
    assert!(violations.is_empty(), "{violations:#?}");
}

/// `nvr init --user nobody` (as root) gives the data dir to nobody: everything in it is
/// nobody's, private; commands started as root act as nobody, so the database stays nobody's;
/// `nvr run` runs the syncer as nobody (ingests under their own uids) and it records.
#[test]
fn a_data_dir_given_to_a_user_has_its_syncer_run_as_that_user() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: giving a data dir to a user needs root");
        return;
    }
    let Some(nobody) = nix::unistd::User::from_name("nobody").unwrap() else {
        eprintln!("SKIPPED: no user nobody");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = DataDir::new(tmp.path().join("data"));
    let nvr = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_nvr"))
            .arg("--data-dir")
            .arg(&d.root)
            .args(args)
            .output()
            .unwrap()
    };
    let out = nvr(&["init", "--user", "nobody"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let camera = format!("owned-{}", std::process::id());
    let clip = tmp.path().join("clip.h264");
    std::fs::copy(e2e::clip_path(), &clip).unwrap();
    let source = format!("file:{}?speed=2", clip.display());
    let out = nvr(&[
        "camera",
        "add",
        &camera,
        "--source",
        &source,
        "--flush-if-sec",
        "1",
        "--rotate-sec",
        "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let owned_privately = |what: &str| {
        for e in std::fs::read_dir(&d.root).unwrap().flatten() {
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            assert_eq!(m.uid(), nobody.uid.as_raw(), "{what}: {name}");
            let mode = m.mode() & 0o777;
            assert!(mode & 0o077 == 0, "{what}: {name} has mode {mode:o}");
        }
        assert_eq!(
            std::fs::metadata(&d.root).unwrap().uid(),
            nobody.uid.as_raw()
        );
    };
    owned_privately("after init and camera add");
    // The owner may plant links where root (the supervisor) writes: they are not followed.
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, b"root's").unwrap();
    std::os::unix::fs::symlink(&victim, d.root.join("supervisor.json.tmp")).unwrap();
    std::os::unix::fs::lchown(
        d.root.join("supervisor.json.tmp"),
        Some(nobody.uid.as_raw()),
        None,
    )
    .unwrap();

    let mut run = e2e::start_nvr_run(&d, &[]);
    wait_until("ten recordings", Duration::from_secs(60), || {
        committed(&d) >= 10
    });
    let needle = d.root.display().to_string();
    let syncer = syncer_pid(&needle).unwrap();
    assert_eq!(uid_of(syncer), Some(nobody.uid.as_raw()));
    // The supervisor tells the syncer what the ingest holds, so the syncer lets go of the
    // files the ingest closed: it holds a few sample files, not one per recording.
    let sample_dir = d.sample_dir_path();
    let held = std::fs::read_dir(format!("/proc/{syncer}/fd"))
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.starts_with(&sample_dir)))
        .count();
    assert!(held <= 6, "the syncer holds {held} sample dir descriptors");
    let (pid, _) = pids_mentioning(&format!("nvr-ingest --camera {camera} "))
        .into_iter()
        .next()
        .expect("the ingest runs");
    assert!((61000..=61999).contains(&uid_of(pid).unwrap()));
    let out = nvr(&["status", "--json"]);
    // Acting as the owner, status reads the supervisor's state (the owner's file) too.
    let status = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        status.contains(&camera) && status.contains("running"),
        "{status}"
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    run.signal(Signal::SIGTERM);
    assert!(run.wait(Duration::from_secs(60)).success());
    owned_privately("after nvr run");
    assert_eq!(std::fs::read(&victim).unwrap(), b"root's");
    assert_eq!(std::fs::metadata(&victim).unwrap().uid(), 0);
    let out = nvr(&["check", "--hash"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    owned_privately("after check");
    // Export, which stays root to write where its caller may, reads as the owner: a sample
    // dir the owner replaced by a link to a directory of root's holding a file of the right
    // name and length is refused.
    let rows = e2e::recordings(&d);
    let (first, second) = (rows[0].id, rows[1].id);
    let out_path = tmp.path().join("out.mp4");
    let exported = |id: protocol::CompositeId| {
        Command::new(env!("CARGO_BIN_EXE_nvr"))
            .arg("--data-dir")
            .arg(&d.root)
            .args(["export", "--camera", &camera, "--id", &id.to_string(), "-o"])
            .arg(&out_path)
            .output()
            .unwrap()
    };
    let out = exported(first);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secrets = tmp.path().join("root-only");
    std::fs::create_dir(&secrets).unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o700)).unwrap();
    let name = syncer::layout::sample_file_name(second);
    std::fs::write(
        secrets.join(&name),
        vec![b's'; rows[1].sample_file_bytes as usize],
    )
    .unwrap();
    std::fs::rename(d.sample_dir_path(), d.root.join("sample.real")).unwrap();
    std::os::unix::fs::symlink(&secrets, d.sample_dir_path()).unwrap();
    let out = exported(second);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("ermission denied"),
        "{stderr}"
    );
    // A second init --user on a dir whose sample dir the owner replaced by a link to a
    // directory of root's gives away nothing in it.
    let planted = DataDir::new(tmp.path().join("planted"));
    std::fs::create_dir(&planted.root).unwrap();
    let roots = tmp.path().join("roots");
    std::fs::create_dir(&roots).unwrap();
    std::fs::write(roots.join("file"), b"root's").unwrap();
    std::os::unix::fs::symlink(&roots, planted.sample_dir_path()).unwrap();
    let _ = Command::new(env!("CARGO_BIN_EXE_nvr"))
        .arg("--data-dir")
        .arg(&planted.root)
        .args(["init", "--user", "nobody"])
        .output()
        .unwrap();
    assert_eq!(std::fs::metadata(roots.join("file")).unwrap().uid(), 0);
    assert_eq!(std::fs::metadata(&roots).unwrap().uid(), 0);
    // Not a user, and not root: clear errors, nothing changed.
    let other = DataDir::new(tmp.path().join("other"));
    let out = Command::new(env!("CARGO_BIN_EXE_nvr"))
        .arg("--data-dir")
        .arg(&other.root)
        .args(["init", "--user", "no-such-user-here"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no user named"));
    assert!(!other.root.exists());
}

/// Run as root, nvr works only in a data dir no other user can swap out from under it
/// (`identity::resolve_for_root`): below a directory another user owns or may write, every
/// command is refused naming that directory; sticky directories over root's entries, links
/// to a good data dir, and directories yet to be made below root's are fine.
#[test]
fn root_refuses_a_data_dir_another_user_could_swap() {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: the data dir path rule applies to root");
        return;
    }
    let Some(nobody) = nix::unistd::User::from_name("nobody").unwrap() else {
        eprintln!("SKIPPED: no user nobody");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let nvr = |dir: &Path, args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_nvr"))
            .arg("--data-dir")
            .arg(dir)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let mkdir = |name: &str, mode: u32| {
        let dir = tmp.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        dir
    };
    let refused = |dir: &Path, args: &[&str], culprit: &Path, why: &str| {
        let (ok, stderr) = nvr(dir, args);
        assert!(!ok, "{} {args:?} was accepted", dir.display());
        assert!(
            stderr.contains(&format!("{} {why}", culprit.display())),
            "{stderr}"
        );
    };
    let home = mkdir("home", 0o755);
    nix::unistd::chown(&home, Some(nobody.uid), Some(nobody.gid)).unwrap();
    let data = home.join("data");
    refused(&data, &["init"], &home, "is owned by uid");
    refused(
        &data,
        &["init", "--user", "nobody"],
        &home,
        "is owned by uid",
    );
    assert!(!data.exists());
    // A data dir made while the directory was root's, then the directory given away.
    let later = mkdir("later", 0o755);
    assert!(nvr(&later.join("data"), &["init"]).0);
    nix::unistd::chown(&later, Some(nobody.uid), Some(nobody.gid)).unwrap();
    for args in [&["status"][..], &["camera", "list"], &["check"], &["run"]] {
        refused(&later.join("data"), args, &later, "is owned by uid");
    }
    let open = mkdir("open", 0o777);
    refused(
        &open.join("data"),
        &["init"],
        &open,
        "is writable by users other than root",
    );
    // Sticky: fine over an entry of root's, not over one of another user's or a missing one.
    let sticky = mkdir("sticky", 0o1777);
    refused(
        &sticky.join("data"),
        &["init"],
        &sticky,
        "is writable by others",
    );
    std::fs::create_dir(sticky.join("data")).unwrap();
    let (ok, stderr) = nvr(&sticky.join("data"), &["init"]);
    assert!(ok, "{stderr}");
    let theirs = sticky.join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    nix::unistd::chown(&theirs, Some(nobody.uid), Some(nobody.gid)).unwrap();
    refused(&theirs, &["status"], &sticky, "is writable by others");
    // A link to a good data dir, even from a directory of another user's, names that dir.
    let link = home.join("link");
    std::os::unix::fs::symlink(sticky.join("data"), &link).unwrap();
    let (ok, stderr) = nvr(&link, &["status"]);
    assert!(ok, "{stderr}");
    // Directories yet to be made below root's.
    let (ok, stderr) = nvr(&tmp.path().join("new/deeper/data"), &["init"]);
    assert!(ok, "{stderr}");
    // The data dir itself: root's and writable by others.
    std::fs::set_permissions(sticky.join("data"), std::fs::Permissions::from_mode(0o777)).unwrap();
    refused(
        &sticky.join("data"),
        &["status"],
        &sticky.join("data"),
        "is root's and writable",
    );
}

/// A sample dir removed while recording stops the syncer with an error saying so; recovery
/// then refuses to start without it, and `nvr run` gives up naming that cause in one line
/// (it used to carry on: creates failed with ENOENT, cameras cycled to failed, and status said
/// "syncer running").
#[test]
fn a_removed_sample_dir_stops_nvr_run_with_the_cause() {
    let (tmp, d, needle) = setup(&[("a", "file:{clip}?speed=2")]);
    let log = tmp.path().join("nvr-run.log");
    let flags = ["--max-restarts", "1", "--restart-backoff-ms", "100"];
    let mut nvr = e2e::start_nvr_run_logged(&d, &flags, Some(&log));
    wait_until("a recording", Duration::from_secs(30), || {
        committed(&d) >= 1
    });
    std::fs::remove_dir_all(d.sample_dir_path()).unwrap();
    let status = nvr.wait(Duration::from_secs(60));
    assert!(!status.success(), "{status}");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("the sample dir was removed while recording"),
        "{log}"
    );
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("nvr run: ")
            && last.contains("the syncer keeps failing")
            && last.contains("is missing: its file system is not mounted, or it was removed"),
        "{last}"
    );
    assert!(
        pids_mentioning(&needle).is_empty(),
        "{:?}",
        pids_mentioning(&needle)
    );
}

/// A syncer that does not stop (here: SIGSTOPped) holds up `nvr run`'s stop only for
/// `--shutdown-timeout-sec`: then it is killed, and the data dir recovers cleanly.
#[test]
fn a_stuck_syncer_is_killed_after_the_shutdown_timeout() {
    let (tmp, d, needle) = setup(&[("a", "file:{clip}?speed=2"), ("b", "file:{clip}?speed=2")]);
    let log = tmp.path().join("nvr-run.log");
    let mut nvr = e2e::start_nvr_run_logged(&d, &["--shutdown-timeout-sec", "2"], Some(&log));
    wait_until("recordings", Duration::from_secs(30), || committed(&d) >= 2);
    let syncer = syncer_pid(&needle).unwrap();
    kill(Pid::from_raw(syncer), Signal::SIGSTOP).unwrap();
    nvr.signal(Signal::SIGTERM);
    let status = nvr.wait(Duration::from_secs(30));
    assert!(status.success(), "{status}");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("the syncer did not stop in time: SIGKILL"),
        "{log}"
    );
    assert!(
        pids_mentioning(&needle).is_empty(),
        "{:?}",
        pids_mentioning(&needle)
    );
    // Recovery makes the dir consistent; every committed recording survived the kill.
    let before = e2e::recordings(&d).len();
    e2e::start_syncer(&d).stop(Duration::from_secs(30));
    let violations = e2e::check(&d);
    assert!(violations.is_empty(), "{violations:#?}");
    assert!(e2e::recordings(&d).len() >= before);
}

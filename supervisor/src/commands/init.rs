//! `nvr init`: creates the database and the sample dir; idempotent on a healthy data dir.
//!
//! Refuses a directory that holds something else (so that `--data-dir ~` does not scatter
//! nvr's files among a user's), and reports a damaged or mismatched data dir with the
//! syncer's own error (a database that is not one, a sample dir of another database, sample
//! files without a database).

use std::path::Path;
use std::process::ExitCode;

use syncer::layout::{DB_FILE_NAME, DataDir, InitOutcome, SAMPLE_DIR_NAME};

use super::CmdResult;
use super::access::syncer_answers;

/// Names nvr itself puts in a data dir's root (the database with its WAL files, the sample
/// dir, the admin socket, the supervisor's state file).
fn is_nvr_name(name: &str) -> bool {
    name.starts_with(DB_FILE_NAME)
        || name == SAMPLE_DIR_NAME
        || name == syncer::server::SOCKET_FILE_NAME
        || name.starts_with(crate::state::STATE_FILE_NAME)
}

/// Refuses a directory that exists, is not empty, and holds neither a database nor a sample
/// dir: it is not ours to initialize.
fn refuse_foreign(root: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err("exists and is not a directory; give a new or empty directory".into());
        }
        Err(e) => return Err(format!("cannot read the directory: {e}").into()),
    };
    let mut names = Vec::new();
    for e in entries {
        names.push(e?.file_name().to_string_lossy().into_owned());
    }
    let ours = names
        .iter()
        .any(|n| n == DB_FILE_NAME || n == SAMPLE_DIR_NAME);
    if let Some(foreign) = names.iter().filter(|n| !is_nvr_name(n)).min()
        && !ours
    {
        return Err(format!(
            "is not empty and is not an nvr data dir (it holds {foreign:?} but no {DB_FILE_NAME} \
             or {SAMPLE_DIR_NAME}/); give a new or empty directory"
        )
        .into());
    }
    Ok(())
}

pub fn run(d: &DataDir, user: Option<&str>) -> CmdResult {
    if let Some(name) = user {
        give_to(d, name)?;
    } else {
        crate::identity::act_as_owner(d)?;
    }
    if syncer_answers(d) {
        println!(
            "{}: already initialized (a syncer is running on it)",
            d.root.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    refuse_foreign(&d.root)?;
    match d.init()? {
        InitOutcome::Created => println!("{}: created an nvr data dir", d.root.display()),
        InitOutcome::AlreadyInitialized => {
            println!("{}: already initialized", d.root.display())
        }
    }
    if let Some(name) = user {
        println!(
            "{}: owned by {name}; nvr run started as root runs the syncer as {name}",
            d.root.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `--user NAME`: gives the data dir (made if missing) to the user, then acts as it, so that
/// the init creates the user's files.
fn give_to(d: &DataDir, name: &str) -> Result<(), Box<dyn std::error::Error>> {
    if !nix::unistd::geteuid().is_root() {
        return Err("--user needs nvr init to be started as root".into());
    }
    let owner = crate::identity::Identity::of_user(name)?;
    if owner.uid.is_root() {
        return Err(format!("--user {name} is root: leave --user out").into());
    }
    refuse_foreign(&d.root)?;
    crate::identity::give_data_dir(d, owner)
        .map_err(|e| format!("cannot give {} to {name}: {e}", d.root.display()))?;
    owner
        .assume()
        .map_err(|e| format!("cannot act as {name}: {e}"))?;
    Ok(())
}

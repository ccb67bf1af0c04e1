//! Who a process runs as: the uid and gid of an ingest (`crate::ingest_uids`) or of the
//! data dir's owner (`nvr init --user`).
//!
//! A data dir owned by a user other than root is that user's: `nvr run` started as root runs
//! the syncer as the owner (the supervisor alone stays root, to start each ingest under its
//! own uid and to list what ingests hold for the syncer), and every other command started as
//! root acts as the owner, so that whatever it creates in the data dir stays the owner's.

use std::io;
use std::os::unix::fs::MetadataExt;

use nix::unistd::{Gid, Uid};
use syncer::layout::DataDir;

/// A uid and gid, with no supplementary groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub uid: Uid,
    pub gid: Gid,
}

impl Identity {
    /// Becomes this identity for good: supplementary groups dropped, then the gid, then the
    /// uid (real, effective and saved). Async-signal-safe, so a forked child may call it.
    pub fn assume(self) -> nix::Result<()> {
        nix::unistd::setgroups(&[])?;
        nix::unistd::setgid(self.gid)?;
        nix::unistd::setuid(self.uid)
    }

    /// The user named `name`, from the user database.
    pub fn of_user(name: &str) -> Result<Identity, String> {
        match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => Ok(Identity {
                uid: u.uid,
                gid: u.gid,
            }),
            Ok(None) => Err(format!("no user named {name:?}")),
            Err(e) => Err(format!("cannot look up user {name:?}: {e}")),
        }
    }
}

/// The owner of `d`'s root directory, when it is a user other than root; `None` for root, or
/// a data dir that does not exist yet.
pub fn data_dir_owner(d: &DataDir) -> io::Result<Option<Identity>> {
    let meta = match std::fs::metadata(&d.root) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok((meta.uid() != 0).then(|| Identity {
        uid: Uid::from_raw(meta.uid()),
        gid: Gid::from_raw(meta.gid()),
    }))
}

/// Started as root on a data dir another user owns: becomes that user (see the module docs).
/// Does nothing otherwise.
pub fn act_as_owner(d: &DataDir) -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let owner = data_dir_owner(d).map_err(|e| format!("{}: {e}", d.root.display()))?;
    match owner {
        Some(o) => o
            .assume()
            .map_err(|e| format!("cannot act as the data dir's owner (uid {}): {e}", o.uid)),
        None => Ok(()),
    }
}

/// Gives `d` to `owner`: its root directory, what the root holds, and what the sample dir
/// holds (nvr keeps nothing deeper). Creates the root directory if it is missing.
pub fn give_data_dir(d: &DataDir, owner: Identity) -> io::Result<()> {
    std::fs::create_dir_all(&d.root)?;
    let chown = |p: &std::path::Path| {
        std::os::unix::fs::lchown(p, Some(owner.uid.as_raw()), Some(owner.gid.as_raw()))
    };
    chown(&d.root)?;
    for e in std::fs::read_dir(&d.root)? {
        chown(&e?.path())?;
    }
    match std::fs::read_dir(d.sample_dir_path()) {
        Ok(entries) => {
            for e in entries {
                chown(&e?.path())?;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

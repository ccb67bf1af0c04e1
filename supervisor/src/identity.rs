//! Who a process runs as: the uid and gid of an ingest (`crate::ingest_uids`) or of the
//! data dir's owner (`nvr init --user`).
//!
//! A data dir owned by a user other than root is that user's: `nvr run` started as root runs
//! the syncer as the owner (the supervisor alone stays root, to start each ingest under its
//! own uid and to list what ingests hold for the syncer), and every other command started as
//! root acts as the owner, so that whatever it creates in the data dir stays the owner's.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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

/// This thread's file-system uid and gid switched to another identity's (`setfsuid`, which
/// also drops root's file capabilities), until dropped.
pub struct FsIdentity {
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
}

impl FsIdentity {
    pub fn assume(to: Identity) -> FsIdentity {
        // setfsgid first: once the fsuid is not root, the fsgid could not be changed back.
        let gid = nix::unistd::setfsgid(to.gid);
        let uid = nix::unistd::setfsuid(to.uid);
        FsIdentity { uid, gid }
    }
}

impl Drop for FsIdentity {
    fn drop(&mut self) {
        nix::unistd::setfsuid(self.uid);
        nix::unistd::setfsgid(self.gid);
    }
}

/// The owner of `d`'s root directory, when it is a user other than root; `None` for root, or
/// a data dir that does not exist yet.
pub fn data_dir_owner(d: &DataDir) -> io::Result<Option<Identity>> {
    let meta = match std::fs::symlink_metadata(&d.root) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok((meta.uid() != 0).then(|| Identity {
        uid: Uid::from_raw(meta.uid()),
        gid: Gid::from_raw(meta.gid()),
    }))
}

/// Started as root: `d` named by its canonical path, once it is sure that no user but root
/// can change which directory that path names. Root decides whom to act as from the data
/// dir's owner and the supervisor stays root in it; were a directory above the data dir
/// someone else's, they could swap the data dir for another between that decision and its
/// use (or for a link to where root would then write). Like OpenSSH's `StrictModes`, then:
/// every directory above the data dir is root's and writable by root alone, or sticky (like
/// `/tmp`) over an entry of root's; a data dir of root's is writable by root alone (a data
/// dir of another user's is that user's, and root acts as the user there). Not root: `d`.
pub fn resolve_for_root(d: &DataDir) -> Result<DataDir, String> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(d.clone());
    }
    let (existing, missing) = canonical_prefix(&d.root)?;
    let mut above = Vec::new();
    let mut at = existing.as_path();
    while let Some(parent) = at.parent() {
        above.push((parent, at));
        at = parent;
    }
    for (dir, entry) in above.into_iter().rev() {
        check_above(dir, entry)?;
    }
    match missing.components().next() {
        // The data dir does not exist yet: `existing` is above it, over what `init` creates.
        Some(first) => check_above(&existing, &existing.join(first))?,
        None => check_data_dir(&existing)?,
    }
    Ok(DataDir::new(existing.join(missing)))
}

/// The canonical path of `path`'s deepest existing directory, and the rest of `path` (names
/// only: no `..` past what exists).
fn canonical_prefix(path: &Path) -> Result<(PathBuf, PathBuf), String> {
    let absolute = std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut existing = absolute.as_path();
    let mut missing = Vec::new();
    loop {
        match std::fs::canonicalize(existing) {
            Ok(c) => {
                let rest: PathBuf = missing.iter().rev().collect();
                return Ok((c, rest));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", existing.display())),
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name);
                existing = parent;
            }
            _ => return Err(format!("{}: no such directory", path.display())),
        }
    }
}

/// `dir`, a directory above the data dir, can be changed by root alone where `entry` (the
/// next directory down, which may not exist yet) is concerned.
fn check_above(dir: &Path, entry: &Path) -> Result<(), String> {
    let meta = directory_meta(dir)?;
    let unsafe_because = if meta.uid() != 0 {
        Some(format!("is owned by uid {}", meta.uid()))
    } else if meta.mode() & 0o022 == 0 {
        None
    } else if meta.mode() & 0o1000 == 0 {
        Some("is writable by users other than root".to_owned())
    } else {
        // Sticky: only an entry's owner may rename or remove it.
        match std::fs::symlink_metadata(entry) {
            Ok(m) if m.uid() == 0 => None,
            Ok(m) => Some(format!(
                "is writable by others and {} in it is owned by uid {}",
                entry.display(),
                m.uid()
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Some(format!(
                "is writable by others and {} does not exist yet (anyone could make it)",
                entry.display()
            )),
            Err(e) => return Err(format!("{}: {e}", entry.display())),
        }
    };
    match unsafe_because {
        None => Ok(()),
        Some(why) => Err(format!(
            "{} {why}: run as root, nvr works only in a data dir that no other user can swap              out from under it (every directory above it root's and writable by root alone,              or sticky over an entry of root's); move the data dir, or run nvr as its owner",
            dir.display()
        )),
    }
}

/// The data dir itself: when root's, writable by root alone.
fn check_data_dir(dir: &Path) -> Result<(), String> {
    let meta = directory_meta(dir)?;
    if meta.uid() == 0 && meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{} is root's and writable by other users, who could replace what is in it:              make it 0700 (nvr init does)",
            dir.display()
        ));
    }
    Ok(())
}

/// `path`'s own metadata (a link is not followed), which must be a directory's.
fn directory_meta(path: &Path) -> Result<std::fs::Metadata, String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", path.display()));
    }
    Ok(meta)
}

/// Started as root on a data dir another user owns: that user, whose file-system identity a
/// command that must stay root (`export`, which writes where its caller may) takes to read
/// the data dir ([`FsIdentity`]); its supplementary groups dropped, so that only the owner's
/// ids count. `None` otherwise.
pub fn reader_for(d: &DataDir) -> Result<Option<Identity>, String> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let owner = data_dir_owner(d).map_err(|e| format!("{}: {e}", d.root.display()))?;
    if owner.is_some() {
        nix::unistd::setgroups(&[])
            .map_err(|e| format!("cannot drop supplementary groups: {e}"))?;
    }
    Ok(owner)
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
///
/// Root works in a directory a user may already control (a second `init --user`, or a race
/// with the first): nothing is followed through a symbolic link (the root and the sample dir
/// are opened `O_NOFOLLOW`, entries changed with `AT_SYMLINK_NOFOLLOW`), links are left as
/// they are, a file with other hard links is refused, and the root directory itself is given
/// last.
pub fn give_data_dir(d: &DataDir, owner: Identity) -> io::Result<()> {
    use nix::fcntl::{OFlag, open, openat};
    use nix::sys::stat::Mode;
    std::fs::create_dir_all(&d.root)?;
    let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let root = open(&d.root, dir_flags, Mode::empty())?;
    give_entries(&root, owner)?;
    match openat(
        &root,
        syncer::layout::SAMPLE_DIR_NAME,
        dir_flags,
        Mode::empty(),
    ) {
        Ok(sample) => give_entries(&sample, owner)?,
        Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    nix::unistd::fchown(&root, Some(owner.uid), Some(owner.gid))?;
    Ok(())
}

/// Gives every entry of the open directory `dir` (not following links) to `owner`.
fn give_entries(dir: &std::os::fd::OwnedFd, owner: Identity) -> io::Result<()> {
    use nix::fcntl::AtFlags;
    use nix::sys::stat::{SFlag, fstatat};
    let entries = nix::dir::Dir::from_fd(dir.try_clone()?)?;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        let st = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
        let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
        if kind == SFlag::S_IFLNK {
            continue; // A link is not nvr's: left as it is.
        }
        if kind == SFlag::S_IFREG && st.st_nlink > 1 {
            return Err(io::Error::other(format!(
                "{} has other hard links: not giving it away",
                name.to_string_lossy()
            )));
        }
        nix::unistd::fchownat(
            dir,
            name,
            Some(owner.uid),
            Some(owner.gid),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
    }
    Ok(())
}

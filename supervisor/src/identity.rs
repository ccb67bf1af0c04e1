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

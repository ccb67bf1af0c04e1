//! The ingest's sandbox: what a compromised `nvr-ingest` can still do once [`enter`] returned.
//!
//! The ingest parses everything a camera sends, so it is where an attacker who owns a camera
//! lands first (DESIGN.md, threat model; SECURITY.md). [`enter`] is called once, after the
//! ingest has opened everything it needs (the syncer connection on fd 3, a `file:` source's
//! file, the camera's host resolved to addresses) and before it reads a byte of untrusted
//! input. It applies, in order:
//!
//! 1. **Process attributes**: `PR_SET_NO_NEW_PRIVS` (no exec can gain privileges, and the
//!    precondition of seccomp without `CAP_SYS_ADMIN`), not dumpable (no core dump, no
//!    ptrace by other processes of the same uid), `SIGXFSZ` ignored so that the file-size
//!    limit fails a write instead of killing.
//! 2. **Resource limits** ([`Limits`]), soft and hard alike: open files, the data segment
//!    (every private writable mapping: heap, thread stacks, anonymous memory) and file size.
//! 3. **Landlock** (ABI 7 features, best effort): no file-system access at all, TCP connect
//!    only to the camera's port, no TCP bind, abstract Unix sockets and signals scoped to the
//!    process. What the kernel cannot enforce is reported in [`Report`], not an error: the
//!    other layers still hold.
//! 4. **seccomp-bpf**, installed last (installing it is itself a syscall the filter would
//!    refuse): an allowlist of what the ingest's steady state needs ([`syscall_rules`] lists
//!    each entry and why); anything else kills the process with `SIGSYS`, which the
//!    supervisor reports as "killed by the sandbox (SIGSYS)".
//!
//! # Threads
//!
//! Before Landlock ABI 8, `landlock_restrict_self` restricts only the calling thread (and the
//! threads it creates later), so [`enter`] refuses to run while the process has more than one
//! thread: every later thread inherits the whole sandbox. The seccomp filter is installed
//! with `TSYNC` all the same.

use std::collections::BTreeMap;
use std::fmt;

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, RestrictionStatus, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetError, RulesetStatus, Scope,
};
use nix::libc;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use protocol::limits::{MAX_RECORDING_BYTES, MAX_SAMPLE_BYTES};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// The Landlock ABI whose features the sandbox asks for. Pinned, not the crate's latest:
/// later ABIs restrict more (UDP, for one, which retina's RTP/UDP transport needs), and a
/// restriction the ingest was never run under must not appear with a kernel upgrade.
const LANDLOCK_ABI: ABI = ABI::V7;

/// Descriptors an ingest may hold: stdio, the syncer connection and its clone, the runtime's
/// epoll and eventfd, the camera's TCP connection and two UDP sockets, a growing and a closing
/// recording; 32 leaves room and still stops a descriptor hoard.
pub const MAX_OPEN_FILES: u64 = 32;

/// Data segment of an ingest holding no frame: heap, the syncer reader's thread stack (2 MiB),
/// the runtime, the allocator's arenas as far as used. Measured VmData of a recording ingest
/// (debug build, any source at 2 Mbit/s): 2.5 to 2.7 MiB (SECURITY.md, "Memory"); 64 MiB is
/// ample headroom for a log burst, a slow syncer's queued notices, a reconnect.
pub const BASE_DATA_BYTES: u64 = 64 << 20;

/// Frames' worth of memory on top of [`BASE_DATA_BYTES`]: a camera's frame exists at most a
/// few times at once (retina's read buffer and reassembly, its converted copy, the writer's
/// buffer), each at most [`MAX_SAMPLE_BYTES`]; 8 is twice what that needs. A `file:` source
/// holds its clip, twice while parsing it (see [`crate::source::MAX_FILE_BYTES`]).
pub const FRAME_DATA_BYTES: u64 = 8 * MAX_SAMPLE_BYTES as u64;

/// `RLIMIT_DATA` of a sandboxed ingest: 192 MiB. A hostile stream that makes the ingest
/// allocate more gets allocation failures (an abort), not the machine's memory.
pub const MAX_DATA_BYTES: u64 = BASE_DATA_BYTES + FRAME_DATA_BYTES;

/// The resource limits [`enter`] sets, soft and hard (each at most the hard limit the process
/// already had).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `RLIMIT_NOFILE`.
    pub open_files: u64,
    /// `RLIMIT_DATA`, bytes. Not `RLIMIT_AS`: glibc reserves 64 MiB of address space per
    /// thread arena (`PROT_NONE`, never touched), which `RLIMIT_AS` counts and `RLIMIT_DATA`
    /// does not, so the data limit can be sized from what the ingest really uses.
    pub data_bytes: u64,
    /// `RLIMIT_FSIZE`, bytes: no sample file can grow past one recording's limit.
    pub file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            open_files: MAX_OPEN_FILES,
            data_bytes: MAX_DATA_BYTES,
            file_bytes: MAX_RECORDING_BYTES,
        }
    }
}

/// What the sandbox allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The camera's TCP port, for an `rtsp://` source: the only port TCP may connect to, and
    /// with it the socket syscalls are allowed. `None` (`file:`, `synthetic:`): no new
    /// socket at all.
    pub camera_port: Option<u16>,
    pub limits: Limits,
}

impl Policy {
    /// The policy of a source that connects to `camera_port` (`None`: to nothing), with the
    /// default [`Limits`].
    pub fn new(camera_port: Option<u16>) -> Policy {
        Policy {
            camera_port,
            limits: Limits::default(),
        }
    }
}

/// What [`enter`] enforced, for the log.
#[derive(Debug)]
pub struct Report {
    /// The limits set: the policy's, or lower where the process's hard limit was lower.
    pub limits: Limits,
    pub camera_port: Option<u16>,
    /// The Landlock ABI the kernel offers (of those this build knows), `Unsupported` if none.
    pub landlock_abi: ABI,
    pub landlock: RulesetStatus,
    /// The syscalls on the seccomp allowlist.
    pub allowed_syscalls: Vec<&'static str>,
}

impl Report {
    /// The Landlock restrictions asked for that the kernel does not enforce, empty when all
    /// are (ABI 7 or later).
    pub fn landlock_missing(&self) -> Vec<&'static str> {
        let abi = self.landlock_abi;
        let mut missing = Vec::new();
        if abi == ABI::Unsupported {
            missing.push("all of Landlock (no file-system or network restrictions)");
            return missing;
        }
        if abi < ABI::V3 {
            missing.push("truncate rights (ABI 3)");
        }
        if abi < ABI::V4 {
            missing.push("TCP connect and bind restrictions (ABI 4)");
        }
        if abi < ABI::V5 {
            missing.push("device ioctl rights (ABI 5)");
        }
        if abi < ABI::V6 {
            missing.push("abstract Unix socket and signal scoping (ABI 6)");
        }
        missing
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.limits;
        write!(
            f,
            "no new privileges, not dumpable; limits: {} open files, {} MiB data, {} MiB per file; ",
            l.open_files,
            l.data_bytes >> 20,
            l.file_bytes >> 20
        )?;
        let tcp = match self.camera_port {
            Some(p) => format!("TCP connect only to port {p}"),
            None => "no TCP connect".to_owned(),
        };
        let how = match self.landlock {
            RulesetStatus::NotEnforced => None,
            RulesetStatus::FullyEnforced => Some("fully enforced"),
            RulesetStatus::PartiallyEnforced => Some("partially enforced, see below"),
        };
        match how {
            Some(how) => write!(
                f,
                "Landlock ABI {} ({how}): no file-system access, {tcp}, no TCP bind, abstract \
                 Unix sockets and signals scoped; ",
                self.landlock_abi
            )?,
            None => write!(f, "Landlock not enforced by this kernel; ")?,
        }
        write!(
            f,
            "seccomp: {} syscalls allowed, anything else kills",
            self.allowed_syscalls.len()
        )
    }
}

/// Why the sandbox could not be entered. The ingest must not go on without it.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot count this process's threads: {0}")]
    Threads(#[source] std::io::Error),

    /// Another thread would escape Landlock (see the module docs, "Threads").
    #[error("the sandbox must be entered while the process has one thread; it has {0}")]
    NotSingleThreaded(usize),

    #[error("cannot set {what}: {source}")]
    Attribute {
        what: &'static str,
        #[source]
        source: nix::Error,
    },

    #[error("cannot set {resource:?} to {value}: {source}")]
    Limit {
        resource: Resource,
        value: u64,
        #[source]
        source: nix::Error,
    },

    #[error("cannot apply the Landlock ruleset: {0}")]
    Landlock(#[from] RulesetError),

    #[error("this architecture ({0}) has no seccomp filter")]
    Architecture(&'static str),

    #[error("cannot build the seccomp filter: {0}")]
    SeccompBuild(#[from] seccompiler::BackendError),

    #[error("cannot install the seccomp filter: {0}")]
    SeccompInstall(#[from] seccompiler::Error),
}

/// Enters the sandbox `policy` describes (see the module docs); irreversible. Call it once,
/// single-threaded, after everything the process needs is open.
pub fn enter(policy: &Policy) -> Result<Report, SandboxError> {
    let threads = thread_count()?;
    if threads != 1 {
        return Err(SandboxError::NotSingleThreaded(threads));
    }
    set_attributes()?;
    let limits = set_limits(&policy.limits)?;
    let landlock = restrict_landlock(policy.camera_port)?;
    let allowed_syscalls = install_seccomp(policy.camera_port.is_some())?;
    Ok(Report {
        limits,
        camera_port: policy.camera_port,
        landlock_abi: ABI::from(landlock.landlock),
        landlock: landlock.ruleset,
        allowed_syscalls,
    })
}

/// The threads of this process, from `/proc/self/task`.
fn thread_count() -> Result<usize, SandboxError> {
    let tasks = std::fs::read_dir("/proc/self/task").map_err(SandboxError::Threads)?;
    Ok(tasks.count())
}

fn set_attributes() -> Result<(), SandboxError> {
    let attribute = |what| move |source| SandboxError::Attribute { what, source };
    nix::sys::prctl::set_no_new_privs().map_err(attribute("PR_SET_NO_NEW_PRIVS"))?;
    nix::sys::prctl::set_dumpable(false).map_err(attribute("PR_SET_DUMPABLE 0"))?;
    // SAFETY: SIG_IGN runs no code in the signal's context.
    unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGXFSZ,
            nix::sys::signal::SigHandler::SigIgn,
        )
    }
    .map_err(attribute("SIGXFSZ ignored"))?;
    Ok(())
}

/// Sets each limit, soft and hard, to its value or the current hard limit if that is lower
/// (an unprivileged process cannot raise a hard limit, and a lower one is stricter anyway);
/// returns the limits set.
fn set_limits(limits: &Limits) -> Result<Limits, SandboxError> {
    let set = |resource, wanted: u64| -> Result<u64, SandboxError> {
        let error = |source| SandboxError::Limit {
            resource,
            value: wanted,
            source,
        };
        let (_, hard) = getrlimit(resource).map_err(error)?;
        let value = wanted.min(hard);
        setrlimit(resource, value, value).map_err(error)?;
        Ok(value)
    };
    Ok(Limits {
        open_files: set(Resource::RLIMIT_NOFILE, limits.open_files)?,
        data_bytes: set(Resource::RLIMIT_DATA, limits.data_bytes)?,
        file_bytes: set(Resource::RLIMIT_FSIZE, limits.file_bytes)?,
    })
}

/// Landlock: every file-system right handled and none granted; TCP bind handled and never
/// granted; TCP connect granted to `camera_port` only; both scopes. Best effort: an older
/// kernel enforces what it can (reported by the returned status).
///
/// One layer of [`enter`], which is what the ingest calls; public so that tests can check that
/// this layer holds on its own (DESIGN.md: each layer must hold even if another fails).
pub fn restrict_landlock(camera_port: Option<u16>) -> Result<RestrictionStatus, RulesetError> {
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(LANDLOCK_ABI))?
        .handle_access(AccessNet::from_all(LANDLOCK_ABI))?
        .scope(Scope::from_all(LANDLOCK_ABI))?
        .create()?;
    if let Some(port) = camera_port {
        ruleset = ruleset.add_rule(NetPort::new(port, AccessNet::ConnectTcp))?;
    }
    ruleset.restrict_self()
}

/// Builds and installs the seccomp filters; returns the names on the allowlist.
///
/// Two filters, because seccompiler gives one action to all the matches of a filter: the
/// allowlist (anything else: kill the process), and one that makes `clone3` fail with
/// `ENOSYS`. The kernel runs both and takes the stricter answer, so `clone3` (allowed by the
/// first) gets `ENOSYS`, and glibc falls back to `clone`, whose flags a filter can inspect
/// (`clone3` passes them in memory, out of a filter's reach).
fn install_seccomp(network: bool) -> Result<Vec<&'static str>, SandboxError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| SandboxError::Architecture(std::env::consts::ARCH))?;
    let allowed = syscall_rules(network, nix::unistd::getpid().as_raw())?;
    let names = allowed.iter().map(|a| a.name).collect();
    let rules = allowed.into_iter().map(|a| (a.nr, a.rules)).collect();
    let allowlist: BpfProgram = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        arch,
    )?
    .try_into()?;
    let clone3: BpfProgram = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )?
    .try_into()?;
    // In this order: installing a filter takes prctl(PR_SET_NO_NEW_PRIVS), which the
    // allowlist refuses.
    seccompiler::apply_filter_all_threads(&clone3)?;
    seccompiler::apply_filter_all_threads(&allowlist)?;
    Ok(names)
}

/// A condition on argument `arg` (32 bits wide, as every argument filtered here is).
fn arg(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SandboxError> {
    Ok(SeccompCondition::new(
        arg,
        SeccompCmpArgLen::Dword,
        op,
        value,
    )?)
}

/// A rule: all of `conditions`.
fn all(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, SandboxError> {
    Ok(SeccompRule::new(conditions)?)
}

/// Rules that allow a syscall when argument `index` is one of `values`.
fn one_of(index: u8, values: &[u64]) -> Result<Vec<SeccompRule>, SandboxError> {
    values
        .iter()
        .map(|&v| all(vec![arg(index, SeccompCmpOp::Eq, v)?]))
        .collect()
}

/// The bits `clone` must have set (a thread: same memory, descriptors, file-system info and
/// signal handlers) and must have clear (no new namespace): anything but a thread is refused.
const CLONE_THREAD_MASK: u64 = (libc::CLONE_THREAD
    | libc::CLONE_VM
    | libc::CLONE_FILES
    | libc::CLONE_FS
    | libc::CLONE_SIGHAND
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP) as u64;
const CLONE_THREAD_FLAGS: u64 = (libc::CLONE_THREAD
    | libc::CLONE_VM
    | libc::CLONE_FILES
    | libc::CLONE_FS
    | libc::CLONE_SIGHAND) as u64;

/// An entry of the seccomp allowlist.
#[derive(Debug)]
pub struct Allowed {
    pub name: &'static str,
    pub nr: i64,
    /// Empty: always allowed; otherwise allowed when one of the rules holds.
    pub rules: Vec<SeccompRule>,
}

/// `name` always allowed.
fn allow(name: &'static str, nr: i64) -> Allowed {
    Allowed {
        name,
        nr,
        rules: Vec::new(),
    }
}

/// `name` allowed when one of `rules` holds.
fn allow_if(name: &'static str, nr: i64, rules: Vec<SeccompRule>) -> Allowed {
    Allowed { name, nr, rules }
}

/// The allowlist. `network`: the source is a camera (socket syscalls allowed); `pid`:
/// this process, the only one `tgkill` may signal. SECURITY.md has the same table.
pub fn syscall_rules(network: bool, pid: i32) -> Result<Vec<Allowed>, SandboxError> {
    let no_exec = || -> Result<Vec<SeccompRule>, SandboxError> {
        // prot (argument 2 of mmap and mprotect) without PROT_EXEC: no new code, ever.
        Ok(vec![all(vec![arg(
            2,
            SeccompCmpOp::MaskedEq(libc::PROT_EXEC as u64),
            0,
        )?])?])
    };
    let mut rules = vec![
        // I/O on descriptors already open: logs on stderr, the sample files (write only), the
        // syncer connection (sendto, recvmsg with the descriptors it passes), the `file:`
        // source's file (read), the camera's sockets (readv, recvmsg). writev, recvfrom and
        // sendmsg were not seen in traces; each does no more than its plain form.
        allow("read", libc::SYS_read),
        allow("readv", libc::SYS_readv),
        allow("write", libc::SYS_write),
        allow("writev", libc::SYS_writev),
        allow("recvmsg", libc::SYS_recvmsg),
        allow("recvfrom", libc::SYS_recvfrom),
        allow("sendmsg", libc::SYS_sendmsg),
        allow("sendto", libc::SYS_sendto),
        // Closing descriptors (received sample files, ended sessions), and shutting the
        // syncer connection down at exit.
        allow("close", libc::SYS_close),
        allow("shutdown", libc::SYS_shutdown),
        // fcntl: only reading descriptor and status flags (the standard library checks a
        // descriptor it closes; tokio reads a socket's) and cloning, with close-on-exec, the
        // syncer connection alone (the reader thread's handle). Not F_SETFL, which could
        // clear the O_APPEND of a sample file's descriptor; not cloning a sample file's
        // descriptor, whose number could then move between the syncer's looks at the
        // descriptor table (`syncer::exposure`).
        allow_if("fcntl", libc::SYS_fcntl, {
            let mut rules = one_of(1, &[libc::F_GETFD as u64, libc::F_GETFL as u64])?;
            rules.push(all(vec![
                arg(
                    0,
                    SeccompCmpOp::Eq,
                    protocol::wire::INGEST_CONNECTION_FD as u64,
                )?,
                arg(1, SeccompCmpOp::Eq, libc::F_DUPFD_CLOEXEC as u64)?,
            ])?);
            rules
        }),
        // Waiting: futexes (locks, channels, thread joins), sleeps (a source's pacing, by
        // either call), the kernel's restart of a sleep a stop interrupted (SIGSTOP, then
        // SIGCONT: without it pausing an ingest would kill it), yielding in spin loops.
        allow("futex", libc::SYS_futex),
        allow("clock_nanosleep", libc::SYS_clock_nanosleep),
        allow("nanosleep", libc::SYS_nanosleep),
        allow("restart_syscall", libc::SYS_restart_syscall),
        allow("sched_yield", libc::SYS_sched_yield),
        // Clocks, when the vDSO falls back to the syscall.
        allow("clock_gettime", libc::SYS_clock_gettime),
        allow("clock_getres", libc::SYS_clock_getres),
        allow("gettimeofday", libc::SYS_gettimeofday),
        // Memory: the heap, anonymous mappings, never executable.
        // mmap also private only: shared anonymous memory is not counted by RLIMIT_DATA.
        allow_if(
            "mmap",
            libc::SYS_mmap,
            vec![all(vec![
                arg(2, SeccompCmpOp::MaskedEq(libc::PROT_EXEC as u64), 0)?,
                arg(
                    3,
                    SeccompCmpOp::MaskedEq(MAP_TYPE_MASK),
                    libc::MAP_PRIVATE as u64,
                )?,
            ])?],
        ),
        allow_if("mprotect", libc::SYS_mprotect, no_exec()?),
        allow("munmap", libc::SYS_munmap),
        allow("mremap", libc::SYS_mremap),
        allow("brk", libc::SYS_brk),
        // madvise: only giving memory back (glibc's free and thread exit).
        allow_if(
            "madvise",
            libc::SYS_madvise,
            one_of(2, &[libc::MADV_DONTNEED as u64])?,
        ),
        // Threads (the syncer reader): `clone` of a thread only (see CLONE_THREAD_MASK);
        // `clone3` is answered ENOSYS by a second filter (see `install_seccomp`). A new thread
        // registers its robust futex list and rseq area, names itself, reads its CPU affinity
        // (glibc sizes its malloc arenas by it), sets up its signal stack and mask.
        allow_if(
            "clone",
            libc::SYS_clone,
            vec![all(vec![arg(
                0,
                SeccompCmpOp::MaskedEq(CLONE_THREAD_MASK),
                CLONE_THREAD_FLAGS,
            )?])?],
        ),
        allow("clone3", libc::SYS_clone3),
        allow("set_robust_list", libc::SYS_set_robust_list),
        allow("rseq", libc::SYS_rseq),
        allow_if(
            "prctl",
            libc::SYS_prctl,
            one_of(0, &[libc::PR_SET_NAME as u64])?,
        ),
        allow("sched_getaffinity", libc::SYS_sched_getaffinity),
        allow("sigaltstack", libc::SYS_sigaltstack),
        allow("rt_sigprocmask", libc::SYS_rt_sigprocmask),
        // Signals: returning from the SIGTERM/SIGINT handler; changing this process's own
        // handlers (glibc installs its thread-cancellation handler at the first thread
        // creation, abort resets SIGABRT's); raising a signal in this process only (abort,
        // raise: tgkill to our own thread group).
        allow("rt_sigreturn", libc::SYS_rt_sigreturn),
        allow("rt_sigaction", libc::SYS_rt_sigaction),
        allow_if(
            "tgkill",
            libc::SYS_tgkill,
            vec![all(vec![arg(0, SeccompCmpOp::Eq, pid as u64)?])?],
        ),
        allow("getpid", libc::SYS_getpid),
        allow("gettid", libc::SYS_gettid),
        // Random numbers: hash map seeds, retina's RTP ports.
        allow("getrandom", libc::SYS_getrandom),
        // Ending a thread, ending the process.
        allow("exit", libc::SYS_exit),
        allow("exit_group", libc::SYS_exit_group),
    ];
    if network {
        rules.extend(network_rules()?);
    }
    Ok(rules)
}

/// The camera's sockets (`rtsp://` only): TCP for RTSP (Landlock limits its port), UDP for
/// RTP/RTCP (bound to a local port, connected to the camera's), nothing else: no Unix socket
/// (the syncer connection is already open), no raw, packet or netlink socket; a
/// connect's outcome (`SO_ERROR`) and its addresses are read, no option is set. And the
/// camera's I/O runtime, which waits in epoll (it was built before the sandbox; sockets are
/// added and removed as sessions come and go).
fn network_rules() -> Result<Vec<Allowed>, SandboxError> {
    Ok(vec![
        allow("epoll_ctl", libc::SYS_epoll_ctl),
        allow("epoll_pwait", libc::SYS_epoll_pwait),
        #[cfg(target_arch = "x86_64")]
        allow("epoll_wait", libc::SYS_epoll_wait),
        allow_if("socket", libc::SYS_socket, inet_stream_or_datagram()?),
        allow("connect", libc::SYS_connect),
        allow("bind", libc::SYS_bind),
        allow("getsockname", libc::SYS_getsockname),
        allow("getpeername", libc::SYS_getpeername),
        allow("getsockopt", libc::SYS_getsockopt),
        // ioctl: only FIONBIO (tokio makes retina's UDP sockets non-blocking with it).
        allow_if("ioctl", libc::SYS_ioctl, one_of(1, &[libc::FIONBIO])?),
    ])
}

/// The sharing bits of `mmap`'s flags (`MAP_SHARED`, `MAP_PRIVATE`, `MAP_SHARED_VALIDATE`).
const MAP_TYPE_MASK: u64 = 0x3;

/// `socket` rules: family `AF_INET` or `AF_INET6`, type `SOCK_STREAM` with protocol 0 or TCP,
/// or `SOCK_DGRAM` with 0 or UDP, whatever the `SOCK_CLOEXEC`/`SOCK_NONBLOCK` flags: never a
/// raw socket (even for an ingest running as root), nor SCTP or MPTCP, which Landlock's TCP
/// rules do not cover.
fn inet_stream_or_datagram() -> Result<Vec<SeccompRule>, SandboxError> {
    /// The type bits of `socket`'s second argument (the kernel's `SOCK_TYPE_MASK`).
    const SOCK_TYPE_MASK: u64 = 0xf;
    let mut rules = Vec::new();
    for family in [libc::AF_INET, libc::AF_INET6] {
        for (kind, protocol) in [
            (libc::SOCK_STREAM, libc::IPPROTO_TCP),
            (libc::SOCK_DGRAM, libc::IPPROTO_UDP),
        ] {
            for protocol in [0, protocol] {
                rules.push(all(vec![
                    arg(0, SeccompCmpOp::Eq, family as u64)?,
                    arg(1, SeccompCmpOp::MaskedEq(SOCK_TYPE_MASK), kind as u64)?,
                    arg(2, SeccompCmpOp::Eq, protocol as u64)?,
                ])?);
            }
        }
    }
    Ok(rules)
}

#[cfg(test)]
mod tests;

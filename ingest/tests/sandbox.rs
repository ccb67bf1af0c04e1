//! `ingest::sandbox::enter` against what a compromised ingest would try: each attempt runs in
//! a fresh process (this binary, re-executed with [`ATTEMPT_ENV`] naming it), which enters the
//! sandbox and then makes one syscall; the parent checks how it ended: it worked, it failed
//! with the expected errno (Landlock), or the process was killed by `SIGSYS` (seccomp). A
//! second set of attempts runs under the Landlock layer alone, which must hold by itself what
//! seccomp would otherwise kill for first.
//!
//! `harness = false`: a child must be single-threaded to enter the sandbox (see the sandbox's
//! module docs), and forking a multi-threaded test harness is unsafe; re-executing is neither.

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use ingest::sandbox::{self, Policy};
use nix::libc;

/// Names the attempt a child makes; unset in the parent.
const ATTEMPT_ENV: &str = "NVR_SANDBOX_TEST_ATTEMPT";
/// The TCP port the child's policy allows.
const PORT_ENV: &str = "NVR_SANDBOX_TEST_PORT";
/// Another listening TCP port, which the policy does not allow.
const OTHER_PORT_ENV: &str = "NVR_SANDBOX_TEST_OTHER_PORT";
/// A file the child opens (append only) before entering the sandbox.
const FILE_ENV: &str = "NVR_SANDBOX_TEST_FILE";
/// Set: the child applies only the Landlock layer (`sandbox::restrict_landlock`).
const LANDLOCK_ONLY_ENV: &str = "NVR_SANDBOX_TEST_LANDLOCK_ONLY";
/// The name of an abstract Unix socket the parent listens on.
const ABSTRACT_ENV: &str = "NVR_SANDBOX_TEST_ABSTRACT";

/// Longest an attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);

/// How an attempt must end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// It worked: the child exits 0.
    Works,
    /// The syscall failed with this errno (the child exits with it as its status).
    Fails(i32),
    /// The process was killed by this signal.
    Killed(i32),
    /// A Rust panic ended the process (exit status 101) after printing its message.
    Panicked,
}

use Expect::*;

/// Does the sandbox allow TCP and UDP sockets (the policy of an `rtsp://` camera)?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Net {
    Camera,
    None,
}

/// Every attempt: name, the policy's network, what must happen.
const ATTEMPTS: &[(&str, Net, Expect)] = &[
    // Forbidden: seccomp kills.
    ("open_a_file", Net::Camera, Killed(libc::SIGSYS)),
    ("execve", Net::Camera, Killed(libc::SIGSYS)),
    ("fork", Net::Camera, Killed(libc::SIGSYS)),
    ("ptrace", Net::Camera, Killed(libc::SIGSYS)),
    ("fallocate", Net::Camera, Killed(libc::SIGSYS)),
    ("ftruncate", Net::Camera, Killed(libc::SIGSYS)),
    (
        "fcntl_setfl_clears_append",
        Net::Camera,
        Killed(libc::SIGSYS),
    ),
    ("dup_a_sample_file", Net::Camera, Killed(libc::SIGSYS)),
    ("io_uring_setup", Net::Camera, Killed(libc::SIGSYS)),
    ("bpf", Net::Camera, Killed(libc::SIGSYS)),
    ("userfaultfd", Net::Camera, Killed(libc::SIGSYS)),
    ("mount", Net::Camera, Killed(libc::SIGSYS)),
    ("kill_another_process", Net::Camera, Killed(libc::SIGSYS)),
    ("tgkill_another_process", Net::Camera, Killed(libc::SIGSYS)),
    ("mmap_exec", Net::Camera, Killed(libc::SIGSYS)),
    ("mmap_shared", Net::Camera, Killed(libc::SIGSYS)),
    ("socket_sctp", Net::Camera, Killed(libc::SIGSYS)),
    ("mprotect_exec", Net::Camera, Killed(libc::SIGSYS)),
    ("socket_unix", Net::Camera, Killed(libc::SIGSYS)),
    ("socket_raw", Net::Camera, Killed(libc::SIGSYS)),
    ("raise_a_limit", Net::Camera, Killed(libc::SIGSYS)),
    ("socket_inet", Net::None, Killed(libc::SIGSYS)),
    // Forbidden: Landlock refuses.
    ("tcp_connect_other_port", Net::Camera, Fails(libc::EACCES)),
    ("tcp_bind", Net::Camera, Fails(libc::EACCES)),
    // clone3 is answered ENOSYS, so that glibc falls back to clone.
    ("clone3", Net::Camera, Fails(libc::ENOSYS)),
    // Memory past the data limit: the allocation fails, and the process aborts (raising
    // SIGABRT in itself is allowed).
    (
        "allocate_past_the_data_limit",
        Net::Camera,
        Killed(libc::SIGABRT),
    ),
    // A panic still ends the process as a panic, its message printed, not as a SIGSYS.
    ("panic", Net::None, Panicked),
    // Refused before anything is restricted: a second thread would escape Landlock.
    ("enter_with_two_threads", Net::None, Works),
    // A hard limit lower than the sandbox's is kept, not an error.
    ("enter_under_a_lower_hard_limit", Net::None, Works),
    // Permitted.
    ("write_preopened_file", Net::Camera, Works),
    ("write_preopened_file", Net::None, Works),
    ("spawn_a_thread", Net::None, Works),
    ("tcp_connect_camera_port", Net::Camera, Works),
    ("udp_bind_and_send", Net::Camera, Works),
    ("mmap_without_exec", Net::None, Works),
    ("clock_gettime", Net::None, Works),
    ("sleep", Net::None, Works),
];

/// Attempts under the Landlock layer alone (an `rtsp://` camera's policy): what seccomp would
/// kill first must still be refused, so that this layer holds if the other fails.
const LANDLOCK_ATTEMPTS: &[(&str, Expect)] = &[
    ("open_a_file", Fails(libc::EACCES)),
    ("create_a_file", Fails(libc::EACCES)),
    ("execve", Fails(libc::EACCES)),
    ("tcp_connect_other_port", Fails(libc::EACCES)),
    ("tcp_bind", Fails(libc::EACCES)),
    ("abstract_unix_connect", Fails(libc::EPERM)),
    ("kill_another_process", Fails(libc::EPERM)),
    ("write_preopened_file", Works),
    ("tcp_connect_camera_port", Works),
    ("udp_bind_and_send", Works),
];

fn main() {
    if let Ok(attempt) = std::env::var(ATTEMPT_ENV) {
        child(&attempt);
    }
    let failures = parent();
    if failures > 0 {
        eprintln!("sandbox: {failures} attempt(s) ended unexpectedly");
        std::process::exit(1);
    }
    eprintln!(
        "sandbox: all {} attempts ended as expected",
        ATTEMPTS.len() + LANDLOCK_ATTEMPTS.len()
    );
}

/// What the children connect to: the camera's port, another listening port, an abstract
/// Unix socket.
struct Listeners {
    camera: TcpListener,
    other: TcpListener,
    abstract_name: String,
    _abstract: UnixListener,
}

/// Runs every attempt in a child; returns how many ended otherwise than expected.
fn parent() -> usize {
    let abstract_name = format!("nvr-sandbox-test-{}", std::process::id());
    let listeners = Listeners {
        camera: TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap(),
        other: TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap(),
        _abstract: UnixListener::bind_addr(
            &UnixAddr::from_abstract_name(abstract_name.as_bytes()).unwrap(),
        )
        .unwrap(),
        abstract_name,
    };
    let dir = tempfile::tempdir().unwrap();
    let whole = ATTEMPTS
        .iter()
        .map(|&(name, net, expect)| (name, net, false, expect));
    let landlock = LANDLOCK_ATTEMPTS
        .iter()
        .map(|&(name, expect)| (name, Net::Camera, true, expect));
    whole
        .chain(landlock)
        .filter(|&(name, net, landlock_only, expect)| {
            !attempt_ok(&listeners, dir.path(), name, net, landlock_only, expect)
        })
        .count()
}

/// Runs one attempt in a child and reports how it ended; true if as expected.
fn attempt_ok(
    listeners: &Listeners,
    dir: &std::path::Path,
    name: &str,
    net: Net,
    landlock_only: bool,
    expect: Expect,
) -> bool {
    let layers = if landlock_only {
        "Landlock only"
    } else {
        "whole sandbox"
    };
    let file = dir.join(format!("{name}-{net:?}-{landlock_only}"));
    File::create(&file).unwrap();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    // A backtrace needs the binary and /proc/self/maps, which the sandbox forbids: with
    // RUST_BACKTRACE set, an abort would become a SIGSYS while printing it.
    cmd.env_remove("RUST_BACKTRACE")
        .env(ATTEMPT_ENV, name)
        .env(FILE_ENV, &file)
        .env(ABSTRACT_ENV, &listeners.abstract_name)
        .env(
            OTHER_PORT_ENV,
            listeners.other.local_addr().unwrap().port().to_string(),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if net == Net::Camera {
        let port = listeners.camera.local_addr().unwrap().port();
        cmd.env(PORT_ENV, port.to_string());
    }
    if landlock_only {
        cmd.env(LANDLOCK_ONLY_ENV, "1");
    }
    let (status, stderr) = run(cmd);
    let got = outcome(status);
    let written = std::fs::read(&file).unwrap();
    let wrote_ok = expect != Works || name != "write_preopened_file" || written == b"frame";
    let said_ok = expect != Panicked || stderr.contains("a bug in the ingest");
    if got == Some(expect) && wrote_ok && said_ok {
        eprintln!("ok: {name} ({net:?}, {layers}): {expect:?}");
        true
    } else {
        eprintln!(
            "FAILED: {name} ({net:?}, {layers}): expected {expect:?}, got {status} (file holds \
             {written:?}); stderr:\n{stderr}"
        );
        false
    }
}

/// Runs `cmd` to its end (killing it after [`ATTEMPT_TIMEOUT`]); its status and stderr.
fn run(mut cmd: Command) -> (ExitStatus, String) {
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + ATTEMPT_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status, stderr)
}

/// How a child ended, as an [`Expect`]; `None` for an exit status no attempt uses.
fn outcome(status: ExitStatus) -> Option<Expect> {
    match (status.code(), status.signal()) {
        (Some(0), _) => Some(Works),
        (Some(101), _) => Some(Panicked),
        (Some(errno), _) if errno < 100 => Some(Fails(errno)),
        (_, Some(signal)) => Some(Killed(signal)),
        _ => None,
    }
}

/// The child: opens the file, enters the sandbox, makes the attempt, exits 0 if it worked or
/// with the errno it failed with (100 for a failure that is not a syscall's).
fn child(attempt: &str) -> ! {
    match attempt {
        "enter_with_two_threads" => enter_with_two_threads(),
        "enter_under_a_lower_hard_limit" => enter_under_a_lower_hard_limit(),
        _ => {}
    }
    let port = std::env::var(PORT_ENV).ok().map(|p| p.parse().unwrap());
    let other_port: u16 = std::env::var(OTHER_PORT_ENV).unwrap().parse().unwrap();
    // In an ingest fd 3 is the syncer connection (the one descriptor it may clone): held
    // here by a placeholder, so that the file lands where a sample file's descriptor would.
    let _connection = File::open("/dev/null").unwrap();
    let file = File::options()
        .append(true)
        .open(std::env::var(FILE_ENV).unwrap())
        .unwrap();
    if std::env::var_os(LANDLOCK_ONLY_ENV).is_some() {
        let status = sandbox::restrict_landlock(port).unwrap();
        eprintln!("Landlock only: {status:?}");
    } else {
        let report = sandbox::enter(&Policy::new(port)).unwrap();
        eprintln!("{report}");
    }
    let code = match try_attempt(attempt, &file, port, other_port) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{attempt}: {e}");
            e.raw_os_error().unwrap_or(100)
        }
    };
    std::process::exit(code)
}

/// Enters the sandbox with a second thread running: must be refused, and the process then
/// still unrestricted (exits 0 if both hold).
fn enter_with_two_threads() -> ! {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let other = std::thread::spawn(move || rx.recv());
    let err = sandbox::enter(&Policy::new(None)).unwrap_err();
    assert!(
        matches!(err, sandbox::SandboxError::NotSingleThreaded(2)),
        "{err}"
    );
    drop(tx);
    other.join().unwrap().unwrap_err();
    File::open("/proc/self/status").unwrap();
    std::process::exit(0)
}

/// Enters the sandbox with a hard `RLIMIT_NOFILE` of 16, under the sandbox's: it stays 16.
fn enter_under_a_lower_hard_limit() -> ! {
    use nix::sys::resource::{Resource, setrlimit};
    setrlimit(Resource::RLIMIT_NOFILE, 16, 16).unwrap();
    let report = sandbox::enter(&Policy::new(None)).unwrap();
    // (getrlimit is not on the allowlist: the report says what was set.)
    assert_eq!(report.limits.open_files, 16);
    assert_eq!(report.limits.data_bytes, sandbox::MAX_DATA_BYTES);
    std::process::exit(0)
}

/// `-1` from a libc call is the last OS error.
fn check(ret: libc::c_long) -> std::io::Result<()> {
    if ret == -1 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn try_attempt(
    attempt: &str,
    file: &File,
    port: Option<u16>,
    other_port: u16,
) -> std::io::Result<()> {
    let fd = file.as_raw_fd();
    let loopback = |port| SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    // SAFETY (all the raw calls below): each passes valid pointers to live locals or null
    // where the syscall accepts it, and none touches memory this program uses.
    unsafe {
        match attempt {
            "open_a_file" => File::open("/etc/hostname").map(drop),
            "create_a_file" => {
                let path =
                    std::path::Path::new(&std::env::var(FILE_ENV).unwrap()).with_extension("new");
                File::create(path).map(drop)
            }
            "abstract_unix_connect" => {
                let name = std::env::var(ABSTRACT_ENV).unwrap();
                let addr = UnixAddr::from_abstract_name(name.as_bytes())?;
                UnixStream::connect_addr(&addr).map(drop)
            }
            "execve" => {
                let path = CString::new("/bin/true").unwrap();
                let argv = [path.as_ptr(), std::ptr::null()];
                let envp = [std::ptr::null()];
                check(libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) as _)
            }
            "fork" => match libc::fork() {
                0 => libc::_exit(0),
                pid => check(pid as _),
            },
            "ptrace" => check(libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0)),
            "fallocate" => check(libc::fallocate(fd, libc::FALLOC_FL_KEEP_SIZE, 0, 1 << 30) as _),
            "ftruncate" => check(libc::ftruncate(fd, 0) as _),
            "fcntl_setfl_clears_append" => check(libc::fcntl(fd, libc::F_SETFL, 0) as _),
            "dup_a_sample_file" => check(libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) as _),
            "io_uring_setup" => {
                let mut params = [0u8; 120];
                check(libc::syscall(
                    libc::SYS_io_uring_setup,
                    8,
                    params.as_mut_ptr(),
                ))
            }
            "bpf" => check(libc::syscall(libc::SYS_bpf, 0, std::ptr::null::<u8>(), 0)),
            "userfaultfd" => check(libc::syscall(libc::SYS_userfaultfd, 0)),
            "mount" => {
                let none = CString::new("none").unwrap();
                let tmpfs = CString::new("tmpfs").unwrap();
                let target = CString::new("/tmp").unwrap();
                check(libc::mount(
                    none.as_ptr(),
                    target.as_ptr(),
                    tmpfs.as_ptr(),
                    0,
                    std::ptr::null(),
                ) as _)
            }
            "kill_another_process" => check(libc::kill(libc::getppid(), 0) as _),
            "tgkill_another_process" => {
                let parent = libc::getppid();
                check(libc::syscall(libc::SYS_tgkill, parent, parent, 0))
            }
            "mmap_exec" => mmap(libc::PROT_READ | libc::PROT_EXEC),
            "mmap_shared" => {
                // Shared anonymous memory escapes RLIMIT_DATA.
                let page = libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                if page == libc::MAP_FAILED {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            }
            "socket_sctp" => {
                check(libc::socket(libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_SCTP) as _)
            }
            "mprotect_exec" => {
                let page = libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                check(libc::mprotect(page, 4096, libc::PROT_READ | libc::PROT_EXEC) as _)
            }
            "socket_unix" => check(libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) as _),
            "socket_raw" => check(libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::IPPROTO_ICMP,
            ) as _),
            "socket_inet" => check(libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) as _),
            "raise_a_limit" => {
                let unlimited = libc::rlimit {
                    rlim_cur: libc::RLIM_INFINITY,
                    rlim_max: libc::RLIM_INFINITY,
                };
                check(libc::setrlimit(libc::RLIMIT_NOFILE, &unlimited) as _)
            }
            "tcp_connect_other_port" => TcpStream::connect(loopback(other_port)).map(drop),
            "tcp_bind" => {
                // Not TcpListener::bind, which sets SO_REUSEADDR first (a syscall the
                // sandbox kills on): the bind itself is what Landlock refuses.
                let s = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                check(s as _)?;
                let addr = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: 0,
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                check(libc::bind(
                    s,
                    (&addr as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                ) as _)
            }
            "clone3" => check(libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0)),
            "allocate_past_the_data_limit" => {
                let big = vec![1u8; 256 << 20];
                std::hint::black_box(&big);
                Ok(())
            }
            "write_preopened_file" => (&*file).write_all(b"frame"),
            "spawn_a_thread" => {
                let t = std::thread::spawn(|| 42);
                assert_eq!(t.join().unwrap(), 42);
                Ok(())
            }
            "tcp_connect_camera_port" => {
                TcpStream::connect(loopback(port.expect("a camera port"))).map(drop)
            }
            "udp_bind_and_send" => {
                let a = UdpSocket::bind(loopback(0))?;
                let b = UdpSocket::bind(loopback(0))?;
                a.connect(b.local_addr()?)?;
                a.send(b"rtp")?;
                let mut buf = [0; 8];
                assert_eq!(b.recv(&mut buf)?, 3);
                Ok(())
            }
            "mmap_without_exec" => mmap(libc::PROT_READ | libc::PROT_WRITE),
            "clock_gettime" => {
                let mut ts = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                check(libc::syscall(
                    libc::SYS_clock_gettime,
                    libc::CLOCK_MONOTONIC,
                    &mut ts,
                ))
            }
            "panic" => panic!("a bug in the ingest"),
            "sleep" => {
                std::thread::sleep(Duration::from_millis(10));
                Ok(())
            }
            other => panic!("no attempt {other:?}"),
        }
    }
}

/// Maps a page of anonymous memory with `prot`.
fn mmap(prot: libc::c_int) -> std::io::Result<()> {
    // SAFETY: a new anonymous mapping at an address the kernel picks touches nothing else.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if page == libc::MAP_FAILED {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

use super::*;

#[test]
fn file_and_synthetic_sources_get_no_socket_syscalls() {
    let rules = syscall_rules(false, 1).unwrap();
    for nr in [
        libc::SYS_socket,
        libc::SYS_connect,
        libc::SYS_bind,
        libc::SYS_ioctl,
        libc::SYS_epoll_ctl,
    ] {
        assert!(!rules.iter().any(|a| a.nr == nr), "syscall {nr} allowed");
    }
    let camera = syscall_rules(true, 1).unwrap();
    for nr in [libc::SYS_socket, libc::SYS_connect, libc::SYS_epoll_ctl] {
        assert!(
            camera.iter().any(|a| a.nr == nr),
            "syscall {nr} not allowed"
        );
    }
}

#[test]
fn what_changes_files_or_processes_is_never_allowed() {
    let rules = syscall_rules(true, 1).unwrap();
    for nr in [
        libc::SYS_openat,
        libc::SYS_open,
        libc::SYS_execve,
        libc::SYS_execveat,
        libc::SYS_fork,
        libc::SYS_vfork,
        libc::SYS_ptrace,
        libc::SYS_fallocate,
        libc::SYS_ftruncate,
        libc::SYS_io_uring_setup,
        libc::SYS_bpf,
        libc::SYS_userfaultfd,
        libc::SYS_mount,
        libc::SYS_kill,
        libc::SYS_setrlimit,
        libc::SYS_prlimit64,
        libc::SYS_seccomp,
    ] {
        assert!(!rules.iter().any(|a| a.nr == nr), "syscall {nr} allowed");
    }
}

#[test]
fn the_report_names_what_an_older_kernel_misses() {
    let report = |abi| Report {
        limits: Limits::default(),
        camera_port: Some(554),
        landlock_abi: abi,
        landlock: if abi == ABI::Unsupported {
            RulesetStatus::NotEnforced
        } else {
            RulesetStatus::PartiallyEnforced
        },
        allowed_syscalls: vec!["read"],
    };
    assert!(report(ABI::V7).landlock_missing().is_empty());
    assert_eq!(
        report(ABI::V5).landlock_missing(),
        ["abstract Unix socket and signal scoping (ABI 6)"]
    );
    assert_eq!(report(ABI::V3).landlock_missing().len(), 3);
    assert_eq!(report(ABI::Unsupported).landlock_missing().len(), 1);
    // The log line claims no Landlock restriction the kernel does not enforce.
    let text = report(ABI::Unsupported).to_string();
    assert!(text.contains("Landlock not enforced"), "{text}");
    assert!(!text.contains("no file-system access"), "{text}");
    let text = report(ABI::V5).to_string();
    assert!(
        text.contains("Landlock ABI 5 (partially enforced"),
        "{text}"
    );
}

#[test]
fn security_md_explains_every_allowed_syscall() {
    let doc = include_str!("../../../SECURITY.md");
    for a in syscall_rules(true, 1).unwrap() {
        assert!(
            doc.contains(&format!("| `{}`", a.name)),
            "SECURITY.md's syscall table has no row for {}",
            a.name
        );
    }
}

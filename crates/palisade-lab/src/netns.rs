//! Network namespaces by name (`/run/netns/NAME`, as `ip netns` makes them):
//! entering one on the current thread, running work in one on a dedicated
//! thread, writing sysctls inside one, finding them by prefix, and running a
//! program inside one.
//!
//! `setns` changes only the calling thread, so namespace work always runs on
//! a thread made for it (never the caller's, never an async runtime's worker),
//! and that thread ends with the work.

use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use nix::sched::{setns, CloneFlags};

use crate::error::{LabError, Result};

/// Where `ip netns` keeps its namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// The bind-mounted file of namespace `netns`.
pub fn netns_path(netns: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(netns)
}

/// Opens namespace `netns` (close-on-exec).
pub fn open(netns: &str) -> Result<File> {
    File::open(netns_path(netns)).map_err(|source| LabError::EnterNetns {
        netns: netns.to_string(),
        source,
    })
}

/// Moves the calling thread into the namespace `file` refers to. Only this
/// thread moves; call it on a thread made for the purpose.
pub fn enter(netns: &str, file: &File) -> Result<()> {
    setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|errno| LabError::EnterNetns {
        netns: netns.to_string(),
        source: io::Error::from(errno),
    })
}

/// Runs `work` on a new thread inside namespace `netns` and returns its result.
pub fn run_in<T: Send>(netns: &str, work: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let file = open(netns)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(netns, &file)?;
            work()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Writes sysctls (`net/ipv4/ip_forward` style paths under `/proc/sys`) inside
/// namespace `netns`. `/proc/sys/net` shows the namespace of the thread that
/// opens it, so this is done from a thread inside the namespace. Keys under
/// `net/ipv6` are skipped when the kernel has no IPv6.
pub fn write_sysctls(netns: &str, settings: &[(String, &str)]) -> Result<()> {
    run_in(netns, || {
        for (key, value) in settings {
            let path = Path::new("/proc/sys").join(key);
            if key.starts_with("net/ipv6/") && !Path::new("/proc/sys/net/ipv6").exists() {
                continue;
            }
            fs::write(&path, value).map_err(|source| LabError::Io {
                action: "write sysctl",
                path: PathBuf::from(format!("{} (in {netns})", path.display())),
                source,
            })?;
        }
        Ok(())
    })
}

/// Reads one sysctl inside namespace `netns` (for checks and tests).
pub fn read_sysctl(netns: &str, key: &str) -> Result<String> {
    run_in(netns, || {
        let path = Path::new("/proc/sys").join(key);
        fs::read_to_string(&path)
            .map(|s| s.trim().to_string())
            .map_err(|source| LabError::Io {
                action: "read sysctl",
                path,
                source,
            })
    })
}

/// Names of the namespaces under `/run/netns` that start with `prefix`, sorted.
pub fn list_with_prefix(prefix: &str) -> Result<Vec<String>> {
    let entries = match fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
        Err(source) => {
            return Err(LabError::Io {
                action: "list",
                path: NETNS_DIR.into(),
                source,
            })
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(prefix))
        .collect();
    names.sort();
    Ok(names)
}

/// Identity of namespace `netns` (device and inode of its nsfs file),
/// comparable with [`identity_of_link`] of `/proc/<pid>/ns/net`; `None` when
/// it does not exist or is not mounted (a bare file left by a crash).
pub fn identity(netns: &str) -> Option<(u64, u64)> {
    let path = netns_path(netns);
    let meta = fs::metadata(&path).ok()?;
    // An unmounted leftover is a plain empty file on /run, not an nsfs inode.
    let parent = fs::metadata(NETNS_DIR).ok()?;
    (meta.dev() != parent.dev()).then_some((meta.dev(), meta.ino()))
}

/// Identity of the namespace a `/proc/<pid>/ns/net` link points to.
pub fn identity_of_link(path: &Path) -> Option<(u64, u64)> {
    let meta = fs::metadata(path).ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Runs `argv` inside namespace `netns` with inherited stdio and waits for it.
///
/// Like `ip netns exec`, the child also gets a private mount namespace with a
/// fresh `/sys`, so that `/sys/class/net` lists the namespace's interfaces.
pub fn exec<S: AsRef<OsStr>>(netns: &str, argv: &[S]) -> Result<ExitStatus> {
    let Some((program, args)) = argv.split_first() else {
        return Err(LabError::Exec {
            program: String::new(),
            netns: netns.to_string(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "empty command line"),
        });
    };
    let file = open(netns)?;
    let fd = file.as_raw_fd();
    // Everything the child uses is allocated before fork: after fork, only
    // async-signal-safe calls are allowed.
    let root = CString::new("/").expect("no NUL");
    let sys = CString::new("/sys").expect("no NUL");
    let sysfs = CString::new("sysfs").expect("no NUL");
    let mut cmd = Command::new(program);
    cmd.args(args);
    // SAFETY: the hook runs in the forked child before exec and calls only
    // raw syscalls (setns, unshare, mount, umount2) on values prepared above;
    // `file` outlives the spawn, so `fd` is open in the child.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 || libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(io::Error::last_os_error());
            }
            // Keep our /sys remount from propagating back to the host.
            let slave = libc::MS_SLAVE | libc::MS_REC;
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                slave,
                std::ptr::null(),
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // Failing to unmount means there was no sysfs there: fine.
            libc::umount2(sys.as_ptr(), libc::MNT_DETACH);
            if libc::mount(
                sysfs.as_ptr(),
                sys.as_ptr(),
                sysfs.as_ptr(),
                0,
                std::ptr::null(),
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let status = cmd.status().map_err(|source| LabError::Exec {
        program: program.as_ref().to_string_lossy().into_owned(),
        netns: netns.to_string(),
        source,
    });
    drop(file);
    status
}

//! The bpf(2) commands aya 0.14 does not expose in the form the loader needs:
//! opening and pinning objects by path, creating and updating TCX links by
//! ifindex, reading a link's TCX target, and detaching a link; and the shared
//! mapping of a `BPF_F_MMAPABLE` array ([`MappedWords`]). This is the one place
//! with raw syscalls; every `unsafe` block says why it is sound.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;

// Commands and constants of include/uapi/linux/bpf.h (stable kernel ABI).
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_LINK_UPDATE: libc::c_long = 29;
const BPF_LINK_DETACH: libc::c_long = 34;

/// `BPF_TCX_INGRESS` attach type.
pub const BPF_TCX_INGRESS: u32 = 46;
/// `BPF_TCX_EGRESS` attach type.
pub const BPF_TCX_EGRESS: u32 = 47;
/// `BPF_LINK_TYPE_TCX`.
pub const BPF_LINK_TYPE_TCX: u32 = 11;

/// `union bpf_attr` for BPF_OBJ_PIN / BPF_OBJ_GET. Every attr struct here
/// spells out its padding: the kernel rejects non-zero bytes past the
/// command's last field, and Rust leaves implicit padding uninitialised.
#[repr(C)]
#[derive(Default)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    pad: u32,
}

/// `union bpf_attr` for BPF_LINK_CREATE (fields up to `flags`; the TCX
/// `relative_fd` / `expected_revision` stay 0: append, no revision check).
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// `union bpf_attr` for BPF_LINK_UPDATE.
#[repr(C)]
#[derive(Default)]
struct LinkUpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

/// `union bpf_attr` for BPF_LINK_DETACH.
#[repr(C)]
#[derive(Default)]
struct LinkDetachAttr {
    link_fd: u32,
}

/// `union bpf_attr` for BPF_OBJ_GET_INFO_BY_FD.
#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The head of `struct bpf_link_info` and its `tcx` member. The buffer is
/// larger than what is read so the kernel can fill its full struct.
#[repr(C)]
struct LinkInfoRaw {
    link_type: u32,
    id: u32,
    prog_id: u32,
    pad: u32,
    tcx_ifindex: u32,
    tcx_attach_type: u32,
    rest: [u64; 8],
}

/// What the kernel reports about a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    /// `BPF_LINK_TYPE_*`.
    pub link_type: u32,
    /// Link id.
    pub id: u32,
    /// Id of the program the link runs.
    pub prog_id: u32,
    /// TCX links: the interface, 0 once the interface is gone.
    pub tcx_ifindex: u32,
    /// TCX links: `BPF_TCX_INGRESS` or `BPF_TCX_EGRESS`.
    pub tcx_attach_type: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, properly aligned #[repr(C)] prefix of `union
    // bpf_attr` for `cmd`; the size passed is its size, so the kernel reads
    // (and for info commands writes) only within it and zero-fills the rest.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn owned_fd(fd: libc::c_long) -> OwnedFd {
    // SAFETY: bpf(2) returned a new file descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Opens the BPF object (map, program, link) pinned at `path`.
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let path = c_path(path)?;
    let mut attr = ObjAttr {
        pathname: path.as_ptr() as u64,
        ..ObjAttr::default()
    };
    bpf(BPF_OBJ_GET, &mut attr).map(owned_fd)
}

/// Pins the BPF object `fd` at `path` (on bpffs).
pub fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let path = c_path(path)?;
    let mut attr = ObjAttr {
        pathname: path.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        ..ObjAttr::default()
    };
    bpf(BPF_OBJ_PIN, &mut attr).map(|_| ())
}

/// Attaches program `prog` to interface `ifindex` (TCX `attach_type`, last in
/// the interface's chain) and returns the link.
pub fn link_create_tcx(
    prog: BorrowedFd<'_>,
    ifindex: u32,
    attach_type: u32,
) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type,
        flags: 0,
    };
    bpf(BPF_LINK_CREATE, &mut attr).map(owned_fd)
}

/// Replaces the program of `link` by `prog` atomically (BPF_LINK_UPDATE):
/// packets see either the old or the new program, never none.
pub fn link_update(link: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = LinkUpdateAttr {
        link_fd: link.as_raw_fd() as u32,
        new_prog_fd: prog.as_raw_fd() as u32,
        ..LinkUpdateAttr::default()
    };
    bpf(BPF_LINK_UPDATE, &mut attr).map(|_| ())
}

/// Detaches `link` from its hook now, even while pinned.
pub fn link_detach(link: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = LinkDetachAttr {
        link_fd: link.as_raw_fd() as u32,
    };
    bpf(BPF_LINK_DETACH, &mut attr).map(|_| ())
}

/// Type, program and TCX target of `link`.
pub fn link_info(link: BorrowedFd<'_>) -> io::Result<LinkInfo> {
    let mut raw = LinkInfoRaw {
        link_type: 0,
        id: 0,
        prog_id: 0,
        pad: 0,
        tcx_ifindex: 0,
        tcx_attach_type: 0,
        rest: [0; 8],
    };
    let mut attr = InfoAttr {
        bpf_fd: link.as_raw_fd() as u32,
        info_len: std::mem::size_of::<LinkInfoRaw>() as u32,
        info: &mut raw as *mut LinkInfoRaw as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(LinkInfo {
        link_type: raw.link_type,
        id: raw.id,
        prog_id: raw.prog_id,
        tcx_ifindex: raw.tcx_ifindex,
        tcx_attach_type: raw.tcx_attach_type,
    })
}

/// The value area of a `BPF_F_MMAPABLE` array map, mapped shared, as 32-bit
/// words: atomic operations on them are seen by the BPF programs and by every
/// other process, which bpf(2) map updates (plain copies) cannot offer.
pub struct MappedWords {
    ptr: NonNull<AtomicU32>,
    words: usize,
    len: usize,
}

// SAFETY: the mapping is only reached through `&[AtomicU32]`, which is Sync,
// and it stays valid until `Drop` unmaps it.
unsafe impl Send for MappedWords {}
// SAFETY: as above.
unsafe impl Sync for MappedWords {}

impl MappedWords {
    /// Maps the first `bytes` bytes of the array map `map`'s values (its
    /// max_entries times its 8-byte-aligned value size, or less).
    pub fn map(map: BorrowedFd<'_>, bytes: usize) -> io::Result<Self> {
        // SAFETY: sysconf has no memory effects.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let len = bytes.div_ceil(page).max(1) * page;
        // SAFETY: a new shared mapping of the map's value area (the kernel
        // refuses maps without BPF_F_MMAPABLE, and lengths past the values);
        // no existing memory is touched.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<AtomicU32>())
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
        Ok(Self {
            ptr,
            words: bytes / 4,
            len,
        })
    }

    /// The words, for atomic operations.
    pub fn words(&self) -> &[AtomicU32] {
        // SAFETY: the mapping is page-aligned, holds at least `words` u32s,
        // stays valid until drop, and is only accessed atomically from user
        // space (AtomicU32 has the layout of u32).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.words) }
    }
}

impl Drop for MappedWords {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`; no reference to
        // it outlives `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

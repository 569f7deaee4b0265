//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::fs::File;
use std::os::unix::io::FromRawFd;

/// A memfd of `len` bytes (as a VMM backs guest RAM).
pub fn memfd(name: &str, len: u64) -> File {
    let cname = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid C string; the returned descriptor is owned by the File.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a fresh descriptor we own.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(len).unwrap();
    f
}

/// Blocks (512 B units) the file holds.
pub fn blocks(f: &File) -> u64 {
    use std::os::unix::fs::MetadataExt;
    f.metadata().unwrap().blocks()
}

/// Runs `f` in a forked child and returns the signal that killed it, if any.
pub fn child_signal<F: FnOnce()>(f: F) -> Option<i32> {
    // SAFETY: the child only runs f and _exits; the test binaries' threads are not used there.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0);
        if pid == 0 {
            f();
            libc::_exit(0);
        }
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        if libc::WIFSIGNALED(status) {
            Some(libc::WTERMSIG(status))
        } else {
            None
        }
    }
}

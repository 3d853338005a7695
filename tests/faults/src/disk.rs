//! Broken disks for the state file. The tests run as root, where file modes do not stop a
//! write, so a read-only disk is a tmpfs remounted read-only and a full disk is a small tmpfs
//! filled up, or a file-size limit (RLIMIT_FSIZE with SIGXFSZ ignored, so writes fail with
//! EFBIG instead of killing the process).
//!
//! Every set-up step panics with its reason: a test whose fault cannot be made must fail, never
//! pass without the fault.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted on a fresh directory, unmounted (lazily, so a process still using it cannot
/// keep it) when dropped.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

fn mount(args: &[&str], what: &str) {
    let out = Command::new("mount")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run mount to {what}: {e}"));
    assert!(
        out.status.success(),
        "cannot {what} (mount {args:?}; these tests need root and mount rights): {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

impl Tmpfs {
    /// A tmpfs of `size_kib` KiB.
    pub fn new(size_kib: u64) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("wb-faults-tmpfs-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot make a mount point: {e}"));
        let target = dir.path().display().to_string();
        mount(
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size_kib}k,mode=0700"),
                "tmpfs",
                &target,
            ],
            &format!("mount a {size_kib} KiB tmpfs on {target}"),
        );
        Tmpfs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Remounts read-only (`ro = true`) or read-write.
    pub fn remount(&self, ro: bool) {
        let target = self.dir.path().display().to_string();
        let opt = if ro { "remount,ro" } else { "remount,rw" };
        mount(&["-o", opt, &target], &format!("{opt} {target}"));
        // Checked, not assumed: a write must fail exactly when the mount says read-only.
        let probe = self.dir.path().join(".probe");
        let written = std::fs::write(&probe, b"x");
        let _ = std::fs::remove_file(&probe);
        assert_eq!(
            written.is_err(),
            ro,
            "{target} after {opt}: a write {}",
            if ro { "still works" } else { "fails" }
        );
    }

    /// Fills the file system up: a filler file grows until the disk says it is full. Returns the
    /// filler's path (remove it to free the space).
    pub fn fill(&self) -> PathBuf {
        let filler = self.dir.path().join("filler");
        let mut f = std::fs::File::create(&filler)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", filler.display()));
        let block = vec![0u8; 4096];
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", filler.display()),
            }
        }
        let _ = f.sync_all();
        // Nothing more fits: a one-byte write fails with "no space".
        let probe = self.dir.path().join(".probe");
        let err = std::fs::write(&probe, vec![0u8; 4096]).err();
        let _ = std::fs::remove_file(&probe);
        assert!(
            err.as_ref().and_then(|e| e.raw_os_error()) == Some(libc::ENOSPC),
            "{} is not full after filling it: {err:?}",
            self.dir.path().display()
        );
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Makes `cmd`'s process unable to write files beyond `max_bytes`: writes past it fail with
/// EFBIG, as on a disk that is full at that size. SIGXFSZ is ignored (the disposition survives
/// exec) so the process sees the error instead of being killed.
pub fn limit_file_size(cmd: &mut Command, max_bytes: u64) {
    // SAFETY: only async-signal-safe calls (setrlimit, signal) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: max_bytes as libc::rlim_t,
                rlim_max: max_bytes as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::signal(libc::SIGXFSZ, libc::SIG_IGN) == libc::SIG_ERR {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

//! The file modes the host trusts: a secret readable by its owner (and the service's group)
//! only, rules writable by their owner only. Whoever can read a secret file can act as the
//! service; whoever can write the rules folder decides what the daemon writes to AD.
//!
//! The decisions are pure, on mode bits ([`secret_mode_problem`], [`writable_problem`]); the
//! functions around them read the modes.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why a secret file with `mode` is refused, if it is. Read by the group is allowed (the
/// packaged set-up is `root:writeback 0640`); read by others, or written by anyone but the
/// owner, is not.
pub fn secret_mode_problem(mode: u32) -> Option<String> {
    let mode = mode & 0o7777;
    if mode & 0o004 != 0 {
        Some(format!(
            "is readable by every user (mode {mode:04o}): make it readable by the service only (chmod 0600, or 0640 with the service's group)"
        ))
    } else if mode & 0o022 != 0 {
        Some(format!(
            "is writable by others than its owner (mode {mode:04o}): chmod go-w"
        ))
    } else {
        None
    }
}

/// Why a rules file or folder with `mode` is refused, if it is: writable by its group or by
/// every user.
pub fn writable_problem(mode: u32) -> Option<String> {
    let mode = mode & 0o7777;
    (mode & 0o022 != 0).then(|| {
        format!(
            "is writable by others than its owner (mode {mode:04o}): whoever can write the rules decides what Writeback writes to AD; chmod go-w"
        )
    })
}

/// Why a secret file is refused.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("cannot read {}: {cause}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        cause: std::io::Error,
    },
    /// Readable by every user, or writable by others than its owner ([`secret_mode_problem`]).
    #[error("{} {problem}", path.display())]
    Mode { path: PathBuf, problem: String },
}

/// Checks a secret file's mode (following links: a secret mounted as a link is judged by the
/// file it names).
pub fn check_secret_file(path: &Path) -> Result<(), SecretFileError> {
    let meta = std::fs::metadata(path).map_err(|cause| SecretFileError::Unreadable {
        path: path.to_path_buf(),
        cause,
    })?;
    match secret_mode_problem(meta.permissions().mode()) {
        Some(problem) => Err(SecretFileError::Mode {
            path: path.to_path_buf(),
            problem,
        }),
        None => Ok(()),
    }
}

/// Every folder and file below `roots` (the roots included) that others than the owner can
/// write, with why. Hidden entries (editor files, `.git`) are not read by the loader and not
/// checked; the walk stops at a depth no rule set reaches.
pub fn writable_rule_paths(roots: &[PathBuf]) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let mut stack: Vec<(PathBuf, usize)> = roots.iter().map(|r| (r.clone(), 0)).collect();
    while let Some((path, depth)) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if let Some(p) = writable_problem(meta.permissions().mode()) {
            found.push((path.clone(), p));
        }
        if !meta.is_dir() || depth >= 8 {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            stack.push((e.path(), depth + 1));
        }
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_modes() {
        assert_eq!(secret_mode_problem(0o100600), None);
        assert_eq!(secret_mode_problem(0o100640), None);
        assert_eq!(secret_mode_problem(0o100400), None);
        let p = secret_mode_problem(0o100644).unwrap();
        assert!(p.contains("every user") && p.contains("0644"), "{p}");
        assert!(secret_mode_problem(0o100604).is_some());
        assert!(secret_mode_problem(0o100660).unwrap().contains("writable"));
        assert!(secret_mode_problem(0o100602).is_some());
    }

    #[test]
    fn rules_modes() {
        assert_eq!(writable_problem(0o40755), None);
        assert_eq!(writable_problem(0o100644), None);
        assert!(writable_problem(0o40775).unwrap().contains("0775"));
        assert!(writable_problem(0o41777).is_some());
        assert!(writable_problem(0o100664).is_some());
    }

    #[test]
    fn the_walk_finds_writable_files_and_folders_and_skips_hidden_ones() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rules");
        std::fs::create_dir_all(root.join("tests")).unwrap();
        std::fs::write(root.join("10-a.rhai"), "").unwrap();
        std::fs::write(root.join("tests/a.toml"), "").unwrap();
        std::fs::write(root.join(".swp"), "").unwrap();
        let set = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        set(&root, 0o755);
        set(&root.join("tests"), 0o755);
        set(&root.join("10-a.rhai"), 0o644);
        set(&root.join("tests/a.toml"), 0o644);
        set(&root.join(".swp"), 0o666);
        assert!(writable_rule_paths(std::slice::from_ref(&root)).is_empty());
        set(&root.join("10-a.rhai"), 0o664);
        set(&root.join("tests"), 0o777);
        let found: Vec<PathBuf> = writable_rule_paths(std::slice::from_ref(&root))
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(found, vec![root.join("10-a.rhai"), root.join("tests")]);
    }
}

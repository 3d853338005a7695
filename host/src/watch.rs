//! The rules-folder watcher. File events are hints, not truth: any event (or the periodic safety
//! rescan) makes the daemon rescan the folders and compare content hashes, so atomic saves,
//! renames, new subfolders and missed events all end in the same place, and editor temp files
//! never cause a reload.

use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

use crate::config::WatchMode;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot watch {path}: {message}")]
    Watch { path: PathBuf, message: String },
}

/// Keeps the platform watcher alive; dropping it stops watching.
pub struct Watcher {
    _inner: Option<Box<dyn std::any::Any + Send>>,
}

/// Starts watching `roots` (recursively); `hint` receives nothing but "look again".
///
/// In `Poll` mode no platform watcher runs: the daemon rescans on its own timer (the content
/// hash comparison is the poll), which works on every filesystem.
pub fn watch(
    roots: &[PathBuf],
    mode: WatchMode,
    debounce: Duration,
    hint: UnboundedSender<()>,
) -> Result<Watcher, WatchError> {
    let handler = move |res: DebounceEventResult| {
        let relevant = match &res {
            Ok(events) => events
                .iter()
                .any(|e| e.paths.iter().any(|p| !is_editor_noise(p))),
            // An error (e.g. queue overflow) may hide events: rescan.
            Err(_) => true,
        };
        if relevant {
            let _ = hint.send(());
        }
    };
    let err = |path: &Path, e: notify::Error| WatchError::Watch {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    match mode {
        WatchMode::Off | WatchMode::Poll => Ok(Watcher { _inner: None }),
        WatchMode::Auto => {
            let mut d = new_debouncer(debounce, None, handler)
                .map_err(|e| err(roots.first().map_or(Path::new("."), |p| p.as_path()), e))?;
            for r in roots {
                d.watch(r, RecursiveMode::Recursive)
                    .map_err(|e| err(r, e))?;
            }
            Ok(Watcher {
                _inner: Some(Box::new(d)),
            })
        }
    }
}

/// Editors' temporary and backup files: vim's `4913` probe, swap files, `~` backups, `.tmp`
/// files of atomic saves, hidden files.
pub fn is_editor_noise(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return true;
    };
    name.starts_with('.')
        || name.starts_with('#')
        || name.ends_with('~')
        || name.ends_with(".swp")
        || name.ends_with(".swx")
        || name.ends_with(".tmp")
        || name == "4913"
}

/// The content fingerprint of the rule sources: every `*.rhai` file below `roots` (editor noise
/// excluded) with the SHA-256 of its content. Two equal fingerprints mean nothing to reload.
pub fn fingerprint(roots: &[PathBuf]) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    for r in roots {
        scan(r, &mut out);
    }
    out
}

fn scan(dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if is_editor_noise(&p) {
            continue;
        }
        match e.file_type() {
            Ok(t) if t.is_dir() => scan(&p, out),
            Ok(_) if p.extension().is_some_and(|x| x == "rhai") => {
                // A file that vanished or cannot be read still counts: its absence is a change.
                let hash = std::fs::read(&p)
                    .map(|b| format!("{:x}", Sha256::digest(&b)))
                    .unwrap_or_default();
                out.insert(p, hash);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_recognised() {
        for n in [
            "4913",
            ".rules.rhai.swp",
            "rules.rhai~",
            "x.rhai.tmp",
            ".hidden.rhai",
            "#x#",
        ] {
            assert!(is_editor_noise(Path::new(n)), "{n}");
        }
        assert!(!is_editor_noise(Path::new("/r/10-groups.rhai")));
    }

    #[test]
    fn fingerprint_sees_content_not_noise() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = d.path().to_path_buf();
        std::fs::write(root.join("a.rhai"), "fn scope(g) { true }").expect("write");
        std::fs::write(root.join("a.rhai~"), "backup").expect("write");
        std::fs::create_dir(root.join("lib")).expect("mkdir");
        std::fs::write(root.join("lib/m.rhai"), "fn f() { 1 }").expect("write");
        let f1 = fingerprint(std::slice::from_ref(&root));
        assert_eq!(f1.len(), 2, "{f1:?}");
        // Noise changes nothing.
        std::fs::write(root.join("4913"), "").expect("write");
        assert_eq!(fingerprint(std::slice::from_ref(&root)), f1);
        // An atomic save (write temp, rename over) changes the hash.
        std::fs::write(root.join("a.rhai.tmp"), "fn scope(g) { false }").expect("write");
        std::fs::rename(root.join("a.rhai.tmp"), root.join("a.rhai")).expect("rename");
        let f2 = fingerprint(std::slice::from_ref(&root));
        assert_ne!(f1, f2);
        assert_eq!(f2.len(), 2);
    }

    #[tokio::test]
    async fn watcher_hints_on_atomic_save_and_new_subfolder() {
        {
            let mode = WatchMode::Auto;
            let d = tempfile::tempdir().expect("tempdir");
            let root = d.path().to_path_buf();
            std::fs::write(root.join("a.rhai"), "1").expect("write");
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let _w = watch(
                std::slice::from_ref(&root),
                mode,
                Duration::from_millis(100),
                tx,
            )
            .expect("watch");
            tokio::time::sleep(Duration::from_millis(300)).await;
            std::fs::write(root.join("a.rhai.tmp"), "2").expect("write");
            std::fs::rename(root.join("a.rhai.tmp"), root.join("a.rhai")).expect("rename");
            let got = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
            assert!(
                matches!(got, Ok(Some(()))),
                "{mode:?}: no hint after an atomic save"
            );
            while rx.try_recv().is_ok() {}
            std::fs::create_dir(root.join("sub")).expect("mkdir");
            std::fs::write(root.join("sub/m.rhai"), "3").expect("write");
            let got = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
            assert!(
                matches!(got, Ok(Some(()))),
                "{mode:?}: no hint for a new subfolder"
            );
        }
    }
}

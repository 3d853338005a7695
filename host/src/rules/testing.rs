//! Unit tests for rules (`writeback test`): TOML files in `<rules>/tests/*.toml`, each a list of
//! cases "this cloud group gives this AD group" (or "is skipped", or "fails with this error").
//! The format is documented in docs/SCRIPTING.md, "Testing rules".
//!
//! The runner loads the rule set, evaluates each case's group at the case's `now`, and compares
//! the result with the expectation field by field. Everything is offline and deterministic; the
//! result is a [`TestReport`] and [`render`] turns it into text.
//!
//! The rule loader takes only `*.rhai` files directly in the rules folder and subfolders are
//! modules, so `tests/` never contributes rules.

mod compare;
mod render;
mod spec;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Decision, Diagnostic, Limits, LoadError, Now, RuleSet};

pub use render::render;
pub use spec::{Case, Expect, ExpectedGroup, ExpectedValue, TestFile};

/// The folder below the rules folder that holds the test files.
pub const TESTS_FOLDER: &str = "tests";

/// The group id a case gets when its `group` has none.
pub const DEFAULT_GROUP_ID: &str = "00000000-0000-4000-8000-123456789abc";

/// One field that differs from the expectation. `expected` and `actual` are rendered values:
/// quoted strings, `["a", "b"]`, `(cleared)`, `(not returned)`, `skip`, ...
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// `cn`, `parent`, `attributes.mail`, `result`, `error`, ...
    pub field: String,
    pub expected: String,
    pub actual: String,
}

/// The outcome of one case: passed when `mismatches` is empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaseReport {
    pub name: String,
    /// Line of the case's `[[case]]` header (1-based).
    pub line: usize,
    pub mismatches: Vec<Mismatch>,
}

impl CaseReport {
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// One test file: its cases, or why it could not be used (a TOML or format error, with its
/// position). A broken file counts as one failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileReport {
    pub path: PathBuf,
    pub outcome: Result<Vec<CaseReport>, Diagnostic>,
}

/// Every test file of a rules folder, in file-name order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct TestReport {
    /// The folder searched for test files.
    pub folder: PathBuf,
    pub files: Vec<FileReport>,
}

impl TestReport {
    pub fn passed(&self) -> usize {
        self.cases().filter(|c| c.passed()).count()
    }

    /// Failed cases plus broken test files.
    pub fn failed(&self) -> usize {
        let broken = self.files.iter().filter(|f| f.outcome.is_err()).count();
        broken + self.cases().filter(|c| !c.passed()).count()
    }

    pub fn ok(&self) -> bool {
        self.failed() == 0
    }

    fn cases(&self) -> impl Iterator<Item = &CaseReport> {
        self.files
            .iter()
            .filter_map(|f| f.outcome.as_ref().ok())
            .flatten()
    }
}

/// Runs every `<rules_dir>/tests/*.toml`. `settings` are the rule settings for files without a
/// `[settings]` table (the config's). `Err` when the rules do not load: nothing can be tested.
pub fn run(
    rules_dir: &Path,
    stdlib_dir: &Path,
    settings: &BTreeMap<String, serde_json::Value>,
) -> Result<TestReport, LoadError> {
    let folder = rules_dir.join(TESTS_FOLDER);
    // One instant for the whole run: cases without `now` agree with each other.
    let run_now = Now::current();
    let mut files = Vec::new();
    let paths = match test_files(&folder) {
        Ok(paths) => paths,
        Err(diagnostic) => {
            files.push(FileReport {
                path: folder.clone(),
                outcome: Err(diagnostic),
            });
            Vec::new()
        }
    };
    let parsed: Vec<(PathBuf, Result<TestFile, Diagnostic>)> = paths
        .into_iter()
        .map(|path| {
            let file = std::fs::read_to_string(&path)
                .map_err(|e| Diagnostic::file(&path, format!("cannot read the test file: {e}")))
                .and_then(|text| spec::parse(&path, &text));
            (path, file)
        })
        .collect();
    // The rules must load (exit 2 when not). With the given settings when a file uses them;
    // when every file brings its own, the folder's rules only have to compile.
    let uses_given = parsed
        .iter()
        .any(|(_, f)| f.as_ref().is_ok_and(|f| f.settings.is_none()));
    let default_set = if uses_given || parsed.is_empty() {
        RuleSet::load(rules_dir, stdlib_dir, settings.clone(), Limits::default())?
    } else {
        RuleSet::load_any_settings(rules_dir, stdlib_dir, settings.clone(), Limits::default())?
    };
    for (path, file) in parsed {
        let outcome = file.and_then(|file| match &file.settings {
            None => Ok(run_file(&default_set, &file, run_now)),
            Some(own) => RuleSet::load(rules_dir, stdlib_dir, own.clone(), Limits::default())
                .map(|set| run_file(&set, &file, run_now))
                .map_err(|e| {
                    Diagnostic::file(
                        &path,
                        format!("the rules do not load with this file's [settings]: {e}"),
                    )
                }),
        });
        files.push(FileReport { path, outcome });
    }
    Ok(TestReport { folder, files })
}

/// Evaluates every case of `file` with `set`; `run_now` is `now()` for cases that set none.
pub fn run_file(set: &RuleSet, file: &TestFile, run_now: Now) -> Vec<CaseReport> {
    file.cases
        .iter()
        .map(|case| {
            let now = case.now.or(file.now).unwrap_or(run_now);
            let result = set.evaluate_at(&case.group, now);
            let mut mismatches = compare::compare(&case.expect, &result);
            // What AD would refuse fails the case even when it is what the case expects.
            if let Ok(Decision::Desired(group)) = &result {
                mismatches.extend(compare::over_limits(group, &case.group));
            }
            CaseReport {
                name: case.name.clone(),
                line: case.line,
                mismatches,
            }
        })
        .collect()
}

/// `*.toml` files directly in `folder`, sorted; none when the folder does not exist. Hidden
/// files (editor locks) are skipped.
fn test_files(folder: &Path) -> Result<Vec<PathBuf>, Diagnostic> {
    let entries = match std::fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Diagnostic::file(
                folder,
                format!("cannot read the tests folder: {e}"),
            ))
        }
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.extension().is_some_and(|x| x == "toml")
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    found.sort();
    Ok(found)
}

//! The Rhai rule runtime: sandboxed engine, the API scripts see, compile and check.
//!
//! A rule set is every `*.rhai` file directly in the rules folder, taken in file-name order.
//! Each file defines `fn in_scope(group)` (does this rule handle the group?) and
//! `fn to_ad(group)` (what the group becomes in AD), or only triggers and a schedule. The first
//! file whose `in_scope` returns true handles the group. The first names were `scope` and `map`;
//! they still work, with a warning at load (`map` shadows Rhai's array method, see `lint`).
//! Subfolders hold modules for `import` only; `import "std/x"` resolves in the stdlib folder.
//! The contract scripts see is documented in `docs/SCRIPTING.md`.
//!
//! - [`RuleSet::load`] compiles every file with its imports embedded
//!   (`compile_into_self_contained`), so a broken import fails at load, never at sync time.
//!   Modules are read afresh on every load (no resolver cache survives a reload).
//! - [`RuleSet::evaluate`] is pure and callable from several threads at once: each call takes
//!   an engine from a small pool (one engine per concurrent caller, sharing the compiled ASTs),
//!   because a single shared engine does not scale across threads. Each engine runs on a thread
//!   of its own with a deep stack (`worker`): Rhai walks nested values recursively.
//! - Every failure names its file, line and column (`path:line:col: message`).

mod clock;
mod diagnostics;
mod group;
mod hooks;
mod input;
mod leave;
mod lint;
mod output;
mod primitives;
mod properties;
mod resolver;
mod sandbox;
mod schedule;
mod setting_names;
pub mod testing;
mod text;
mod tokens;
mod worker;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rhai::AST;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::graph::model::CloudObject;

pub use clock::{Now, TimeError};
pub use diagnostics::{Diagnostic, EvalError, EvalErrorKind, LoadError};
pub use hooks::{Hook, HookError, HookTable, TriggerEvent};
pub use input::{
    GRAPH_DISPLAY_NAME_MAX, MAX_CLOUD_ARRAY, MAX_CLOUD_PROPERTIES, MAX_CLOUD_STRING_BYTES,
};
pub use leave::{format_duration, parse_duration, DurationError, LeaveError};
pub use output::{OutputError, MAX_ATTRIBUTES, MAX_TOTAL_BYTES, MAX_VALUES, MAX_VALUE_BYTES};
pub use primitives::{
    safe_url, AdFound, EffectError, Effects, HttpRequest, HttpResponse, DEFAULT_HTTP_TIMEOUT,
};
pub use properties::{GraphProperties, GROUP_PROPERTIES_CONST, USER_PROPERTIES_CONST};
pub use schedule::{Schedule, ScheduleError};
pub use text::{quoted, QUOTE_CHARS};

use resolver::RuleResolver;
use sandbox::{Sandbox, Settings};

/// Sandbox limits for every call into a script (`scope`, `map`) and for loading modules.
///
/// Rhai counts data sizes over a whole value, nested parts included: a group with N members
/// holds an array of N maps with 2N entries and about 40N bytes of strings. The defaults are
/// sized so rules can read a 1,000,000-member group; they stop runaway scripts, not big tenants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Operations per call (an infinite loop stops here first).
    pub max_operations: u64,
    /// Nested function calls.
    pub max_call_levels: usize,
    /// Bytes of string data in one value.
    pub max_string_size: usize,
    /// Elements in one array (nested arrays counted).
    pub max_array_size: usize,
    /// Entries in one object map (nested maps counted).
    pub max_map_size: usize,
    /// Wall-clock time per call.
    pub call_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_operations: 2_000_000,
            max_call_levels: 32,
            max_string_size: 64 * 1024 * 1024,
            max_array_size: 2_000_000,
            max_map_size: 4_000_000,
            call_timeout: Duration::from_secs(1),
        }
    }
}

/// What a file is to the rule set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// A rule file directly in the rules folder.
    Rule,
    /// A module imported by a rule (or by another module).
    Module,
}

/// One file the rule set was built from, with the SHA-256 of the content that was compiled.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct RuleFile {
    pub path: PathBuf,
    /// Lowercase hex.
    pub sha256: String,
    pub kind: FileKind,
}

/// What the rules decided for one group.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// No rule's `scope` returned true, or the handling rule's `map` returned `()` (or
    /// `#{ leave: "delete" }`): an AD group written earlier is deleted.
    OutOfScope,
    /// `#{ leave: "keep" }`: an AD group written earlier stays as it is and is no longer written
    /// (Connect group writeback v2's default for a group disabled for writeback).
    Keep,
    /// `#{ leave: "delete", after: "7d" }`: an AD group written earlier is deleted once the
    /// group has been out of scope this long (not written meanwhile).
    DeleteAfter {
        secs: u64,
    },
    Desired(DesiredGroup),
}

/// The AD group a rule asks for. The host adds the anchor attributes, escapes `cn` and checks
/// `parent` against the managed OUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredGroup {
    /// The rule file's name, e.g. `10-microsoft-365.rhai`.
    pub rule: String,
    /// DN of the container.
    pub parent: String,
    /// The RDN value, unescaped.
    pub cn: String,
    /// `None` = clear the attribute. Integers are written in decimal, booleans as TRUE/FALSE.
    pub attributes: BTreeMap<String, Option<Vec<String>>>,
    /// Written only when the group is created (e.g. `sAMAccountName`, so a cloud rename does
    /// not rename the account); never compared afterwards.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub on_create: BTreeMap<String, Option<Vec<String>>>,
    pub members: MemberPolicy,
    /// DNs of groups Writeback does not own that this group is added to (`member_of`);
    /// sorted, unique.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub member_of: Vec<String>,
    /// Properties of the cloud group to set once the AD group is where it belongs
    /// (`to_cloud`: directory extensions; `{dn}` in a string stands for the group's DN).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub to_cloud: BTreeMap<String, serde_json::Value>,
    /// The DN attribute that holds the cloud group's owners, found in AD through the member
    /// join (`owners: "managedBy"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owners: Option<String>,
}

/// Which members the host writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MemberPolicy {
    /// Cloud members that resolve to AD objects (the default).
    #[serde(rename = "on-premises")]
    OnPremises,
    /// Leave the AD group's `member` attribute alone.
    #[serde(rename = "none")]
    None,
    /// Nested cloud groups flattened: every user reached through nested groups, resolved to
    /// AD, and no group members (for systems that do not follow nesting).
    #[serde(rename = "flatten")]
    Flatten,
}

/// One compiled rule file.
struct CompiledRule {
    /// File name, e.g. `10-microsoft-365.rhai`.
    name: String,
    /// The path as shown in messages (also the AST's source).
    path: PathBuf,
    ast: AST,
    entry: EntryPoints,
}

/// The names of a rule file's two entry points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryPoints {
    pub(crate) scope: &'static str,
    pub(crate) map: &'static str,
}

/// The entry points' names.
pub(crate) const ENTRY_POINTS: EntryPoints = EntryPoints {
    scope: "in_scope",
    map: "to_ad",
};

/// The first names, still accepted with a warning.
pub(crate) const OLD_ENTRY_POINTS: EntryPoints = EntryPoints {
    scope: "scope",
    map: "map",
};

/// A `secret("name")` call in a rule file, where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretUse {
    pub name: String,
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

/// A compiled rule set. `Send + Sync`; share it behind an `Arc`.
pub struct RuleSet {
    rules: Arc<Vec<CompiledRule>>,
    files: Vec<RuleFile>,
    settings: Arc<Settings>,
    limits: Limits,
    /// Idle engines, each on its own thread; an evaluation borrows one, or starts one when all
    /// are busy.
    pool: Mutex<Vec<worker::Worker>>,
    /// Triggers and schedules (`hooks`).
    hooks: Arc<HookTable>,
    /// The Graph properties the rules read beyond the host's own (`properties`).
    graph_properties: GraphProperties,
    /// `secret("<literal>")` calls, for the load check against the config.
    secret_uses: Vec<SecretUse>,
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field("files", &self.files)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl RuleSet {
    /// Compiles every rule file in `rules_dir` (with its imports) and checks each defines
    /// `in_scope(group)` and `to_ad(group)` (or only triggers and a schedule) and names only
    /// configured settings in `setting("…")`. All problems are reported at once.
    pub fn load(
        rules_dir: &Path,
        stdlib_dir: &Path,
        settings: BTreeMap<String, serde_json::Value>,
        limits: Limits,
    ) -> Result<RuleSet, LoadError> {
        Self::load_inner(rules_dir, stdlib_dir, settings, limits, true)
    }

    /// [`load`](Self::load) without the check of `setting("…")` names: for `writeback test`,
    /// whose test files bring their own settings, so the folder's rules only have to compile.
    pub fn load_any_settings(
        rules_dir: &Path,
        stdlib_dir: &Path,
        settings: BTreeMap<String, serde_json::Value>,
        limits: Limits,
    ) -> Result<RuleSet, LoadError> {
        Self::load_inner(rules_dir, stdlib_dir, settings, limits, false)
    }

    fn load_inner(
        rules_dir: &Path,
        stdlib_dir: &Path,
        settings: BTreeMap<String, serde_json::Value>,
        limits: Limits,
        check_settings: bool,
    ) -> Result<RuleSet, LoadError> {
        let mut diags = Vec::new();
        let settings = match sandbox::convert_settings(&settings) {
            Ok(s) => Arc::new(s),
            Err((name, message)) => {
                return Err(LoadError::new(vec![Diagnostic::file(
                    rules_dir,
                    format!("setting {name:?} cannot be passed to scripts: {message}"),
                )]))
            }
        };
        let resolver = Arc::new(RuleResolver::new(rules_dir, stdlib_dir));
        let loader = Sandbox::loader(&limits, settings.clone(), resolver.clone());

        let mut rules = Vec::new();
        let mut files = Vec::new();
        let mut hook_table = HookTable::new(settings.clone(), limits.clone());
        let mut graph_properties = GraphProperties::default();
        let mut secret_uses = Vec::new();
        for path in list_rule_files(rules_dir, &mut diags) {
            let name = file_name(&path);
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    diags.push(Diagnostic::file(&path, format!("cannot read: {e}")));
                    continue;
                }
            };
            files.push(RuleFile {
                path: path.clone(),
                sha256: sha256_hex(text.as_bytes()),
                kind: FileKind::Rule,
            });
            match loader.compile_rule(&text, limits.call_timeout) {
                Ok(mut ast) => {
                    ast.set_source(path.display().to_string());
                    let before = diags.len();
                    let found = hooks::discover(&ast, &path, &text, &mut diags);
                    let entry = check_entry_points(&ast, &path, !found.is_empty(), &mut diags);
                    let unknown = setting_names::unknown(&ast, |n| {
                        !check_settings || settings.contains_key(n)
                    });
                    diags.extend(unknown.iter().map(|u| Diagnostic {
                        file: path.clone(),
                        line: u.at.line(),
                        column: u.at.position(),
                        message: u.message(),
                    }));
                    graph_properties.merge(properties::discover(&ast, &path, &text, &mut diags));
                    secret_uses.extend(
                        setting_names::literal_calls(&ast, "secret")
                            .into_iter()
                            .map(|u| SecretUse {
                                name: u.name,
                                file: path.clone(),
                                line: u.at.line(),
                                column: u.at.position(),
                            }),
                    );
                    if entry == Some(OLD_ENTRY_POINTS) {
                        diags.extend(lint::shadowed_methods(&text).iter().map(|s| Diagnostic {
                            file: path.clone(),
                            line: Some(s.line),
                            column: Some(s.column),
                            message: s.message(),
                        }));
                    }
                    if diags.len() == before {
                        hook_table.add(&name, &path, &ast, found);
                        if let Some(entry) = entry {
                            rules.push(CompiledRule {
                                name,
                                path,
                                ast,
                                entry,
                            });
                        }
                    }
                }
                Err(err) => diags.push(diagnostics::load_diagnostic(&err, &path, &text, &resolver)),
            }
        }
        files.extend(
            resolver
                .files_read()
                .into_iter()
                .map(|(path, sha256)| RuleFile {
                    path,
                    sha256,
                    kind: FileKind::Module,
                }),
        );
        if !diags.is_empty() {
            return Err(LoadError::new(diags));
        }
        Ok(RuleSet {
            rules: Arc::new(rules),
            files,
            settings,
            limits,
            pool: Mutex::new(Vec::new()),
            hooks: Arc::new(hook_table),
            graph_properties,
            secret_uses,
        })
    }

    /// Every `secret("<literal>")` in the rule files, so the host can check the names against
    /// its configuration at load (a computed name, or one in a module, fails at the call).
    pub fn secret_uses(&self) -> &[SecretUse] {
        &self.secret_uses
    }

    /// A load error for every literal `secret("name")` whose name `configured` rejects.
    pub fn check_secrets(&self, configured: impl Fn(&str) -> bool) -> Result<(), LoadError> {
        let missing: Vec<Diagnostic> = self
            .secret_uses
            .iter()
            .filter(|u| !configured(&u.name))
            .map(|u| Diagnostic {
                file: u.file.clone(),
                line: u.line,
                column: u.column,
                message: format!(
                    "secret {:?} is not configured: add it to [rules.secrets] ({} = {{ env = \"...\" }}, {{ file = \"...\" }} or {{ credential = \"...\" }})",
                    u.name, u.name
                ),
            })
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(LoadError::new(missing))
        }
    }

    /// The Graph properties the rule files declare they read (sorted, unique).
    pub fn graph_properties(&self) -> &GraphProperties {
        &self.graph_properties
    }

    /// The triggers and schedules of this rule set (shared; outlives a reload).
    pub fn hooks(&self) -> Arc<HookTable> {
        self.hooks.clone()
    }

    /// Runs the rules on one group (`CloudObject::to_rule_json()`): the first rule whose
    /// `scope` is true maps it. Pure; safe to call from several threads at once. `now()` is the
    /// wall clock at the call; a batch uses [`evaluate_at`](Self::evaluate_at).
    #[allow(
        clippy::result_large_err,
        reason = "errors are rare and read by people; a flat struct beats a box here"
    )]
    pub fn evaluate(&self, group: &serde_json::Value) -> Result<Decision, EvalError> {
        self.evaluate_at(group, Now::current())
    }

    /// [`evaluate`](Self::evaluate) with `now()` fixed to `now`: a batch (one sync cycle, one
    /// test case) passes the same instant for every group, so its answers are deterministic.
    #[allow(
        clippy::result_large_err,
        reason = "errors are rare and read by people; a flat struct beats a box here"
    )]
    pub fn evaluate_at(&self, group: &serde_json::Value, now: Now) -> Result<Decision, EvalError> {
        self.evaluate_timed(group, now).0
    }

    /// Like [`RuleSet::evaluate_at`], and says whether the decision read `now()` (so it may
    /// change with time alone).
    pub fn evaluate_timed(
        &self,
        group: &serde_json::Value,
        now: Now,
    ) -> (Result<Decision, EvalError>, bool) {
        let mut out = self.evaluate_batch(std::slice::from_ref(group), now);
        out.pop()
            .unwrap_or_else(|| (Err(worker::stopped(group_id(group))), false))
    }

    /// [`RuleSet::evaluate_timed`] for many groups on one engine, in order: the caller's
    /// thread hands the whole batch over once (a cycle evaluates a chunk of groups per thread
    /// this way, instead of switching threads twice per group).
    pub fn evaluate_batch(
        &self,
        groups: &[serde_json::Value],
        now: Now,
    ) -> Vec<(Result<Decision, EvalError>, bool)> {
        self.evaluate_prepared(
            groups.iter().map(|g| {
                let checked = match input::problem(g) {
                    Some(message) => Err(message),
                    None => Ok(g),
                };
                (group_id(g), checked.map(group::to_script_value))
            }),
            now,
        )
    }

    /// [`RuleSet::evaluate_batch`] over cached groups: the same answers, without building
    /// each group's JSON form first (a big group's members go straight to the engine's
    /// compact form).
    pub fn evaluate_objects(
        &self,
        groups: &[&CloudObject],
        now: Now,
    ) -> Vec<(Result<Decision, EvalError>, bool)> {
        self.evaluate_prepared(
            groups.iter().map(|g| {
                let checked = match input::problem_of(g) {
                    Some(message) => Err(message),
                    None => Ok(group::object_script_value(g)),
                };
                (g.id.clone(), checked)
            }),
            now,
        )
    }

    /// [`RuleSet::evaluate_objects`] over groups read without their members (`members` of
    /// each is not looked at): each answer comes with whether the rules read the group's
    /// members, in which case it is not the group's answer and the caller evaluates the group
    /// again with them.
    pub fn evaluate_heads(
        &self,
        groups: &[&CloudObject],
        now: Now,
    ) -> Vec<(Result<Decision, EvalError>, bool, bool)> {
        let flags: Vec<Arc<AtomicBool>> = groups
            .iter()
            .map(|_| Arc::new(AtomicBool::new(false)))
            .collect();
        let answers = self.evaluate_prepared(
            groups.iter().zip(&flags).map(|(g, flag)| {
                let checked = match input::problem_of(g) {
                    Some(message) => Err(message),
                    None => Ok(group::head_script_value(g, flag.clone())),
                };
                (g.id.clone(), checked)
            }),
            now,
        );
        answers
            .into_iter()
            .zip(flags)
            .map(|((decision, timed), flag)| (decision, timed, flag.load(Ordering::Relaxed)))
            .collect()
    }

    /// Runs the groups that passed the input checks (`Ok`: their script value) on one engine;
    /// the others are refused with their reason.
    fn evaluate_prepared(
        &self,
        groups: impl ExactSizeIterator<Item = (String, Result<rhai::Dynamic, String>)>,
        now: Now,
    ) -> Vec<(Result<Decision, EvalError>, bool)> {
        // Malformed cloud data is refused before it is copied into the engine.
        let mut refused: Vec<Option<EvalError>> = Vec::with_capacity(groups.len());
        let mut jobs = Vec::with_capacity(groups.len());
        for (group_id, checked) in groups {
            match checked {
                Err(message) => refused.push(Some(EvalError::unlocated(
                    group_id,
                    message,
                    EvalErrorKind::Input,
                ))),
                Ok(value) => {
                    refused.push(None);
                    jobs.push(worker::Job {
                        value,
                        group_id,
                        now,
                    });
                }
            }
        }
        let ids: Vec<String> = jobs.iter().map(|j| j.group_id.clone()).collect();
        let mut outcomes = self.run_jobs(jobs, &ids).into_iter();
        let mut ids = ids.into_iter();
        refused
            .into_iter()
            .map(|r| match r {
                Some(e) => (Err(e), false),
                None => {
                    let id = ids.next().unwrap_or_default();
                    outcomes
                        .next()
                        .unwrap_or_else(|| (Err(worker::stopped(id)), false))
                }
            })
            .collect()
    }

    /// Runs `jobs` on an idle engine (or a new one), one outcome per job.
    fn run_jobs(&self, jobs: Vec<worker::Job>, ids: &[String]) -> Vec<worker::Outcome> {
        if jobs.is_empty() {
            return Vec::new();
        }
        let idle = self
            .pool
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        let worker = match idle {
            Some(w) => Some(w),
            None => worker::Worker::spawn(
                self.rules.clone(),
                self.limits.clone(),
                self.settings.clone(),
            ),
        };
        let Some(worker) = worker else {
            // No thread to be had: evaluate here, on the caller's stack.
            return worker::run_inline(&self.rules, &self.limits, self.settings.clone(), jobs);
        };
        match worker.run(jobs) {
            Some(out) => {
                // A limit may have grown the worker's stack deep: a fresh thread gives it back.
                if !out
                    .iter()
                    .any(|o| matches!(&o.0, Err(e) if e.kind == EvalErrorKind::Limit))
                {
                    self.pool
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .push(worker);
                }
                out
            }
            None => ids
                .iter()
                .map(|id| (Err(worker::stopped(id.clone())), false))
                .collect(),
        }
    }

    /// The files the set was built from: rule files in order, then imported modules by path.
    pub fn files(&self) -> &[RuleFile] {
        &self.files
    }

    /// Rule file names in evaluation order.
    pub fn rule_names(&self) -> Vec<&str> {
        self.rules.iter().map(|r| r.name.as_str()).collect()
    }
}

/// The id a group's errors name.
fn group_id(group: &serde_json::Value) -> String {
    group
        .get("id")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("<no id>")
        .to_string()
}

/// Validates a rule folder for `writeback check`: everything `load` does, nothing kept;
/// `check_settings` false leaves `setting("…")` names unchecked (no config to check against).
pub fn check(
    rules_dir: &Path,
    stdlib_dir: &Path,
    settings: BTreeMap<String, serde_json::Value>,
    check_settings: bool,
    secrets: Option<&BTreeSet<String>>,
) -> Result<Vec<RuleFile>, LoadError> {
    let set = RuleSet::load_inner(
        rules_dir,
        stdlib_dir,
        settings,
        Limits::default(),
        check_settings,
    )?;
    if let Some(names) = secrets {
        set.check_secrets(|n| names.contains(n))?;
    }
    Ok(set.files)
}

/// `*.rhai` files directly in `dir`, sorted by name. Hidden files (editor locks) are skipped.
fn list_rule_files(dir: &Path, diags: &mut Vec<Diagnostic>) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            diags.push(Diagnostic::file(
                dir,
                format!("cannot read the rules folder: {e}"),
            ));
            return Vec::new();
        }
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                diags.push(Diagnostic::file(
                    dir,
                    format!("cannot list the rules folder: {e}"),
                ));
                continue;
            }
        };
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            diags.push(Diagnostic::file(
                &path,
                "file name is not valid UTF-8".to_string(),
            ));
            continue;
        };
        // `is_file` follows symlinks: rule files deployed as links (ConfigMaps) count.
        if name.starts_with('.') || !name.ends_with(".rhai") || !path.is_file() {
            continue;
        }
        found.push((name, path));
    }
    found.sort();
    if found.is_empty() && diags.is_empty() {
        diags.push(Diagnostic::file(
            dir,
            "no rule files (*.rhai) in the rules folder; an empty rule set would take every group out of scope".to_string(),
        ));
    }
    found.into_iter().map(|(_, p)| p).collect()
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The entry points a rule file defines: `in_scope(group)` and `to_ad(group)`, or the old
/// `scope` and `map` (a warning), or none when the file holds only triggers and a schedule.
fn check_entry_points(
    ast: &AST,
    path: &Path,
    has_hooks: bool,
    diags: &mut Vec<Diagnostic>,
) -> Option<EntryPoints> {
    let arities = |name: &str| -> Vec<usize> {
        ast.iter_functions()
            .filter(|f| f.name == name)
            .map(|f| f.params.len())
            .collect()
    };
    let defines = |e: EntryPoints| !arities(e.scope).is_empty() || !arities(e.map).is_empty();
    let (new, old) = (defines(ENTRY_POINTS), defines(OLD_ENTRY_POINTS));
    let entry = match (new, old) {
        (true, true) => {
            diags.push(Diagnostic::file(
                path,
                "the rule defines both `in_scope`/`to_ad` and the old `scope`/`map`; keep only `in_scope(group)` and `to_ad(group)`"
                    .to_string(),
            ));
            return None;
        }
        (true, false) => ENTRY_POINTS,
        (false, true) => OLD_ENTRY_POINTS,
        (false, false) if has_hooks => return None,
        (false, false) => {
            diags.push(Diagnostic::file(
                path,
                "the file defines no `fn in_scope(group)` and `fn to_ad(group)`, and no trigger or schedule: a rule file needs the one or the other"
                    .to_string(),
            ));
            return None;
        }
    };
    for name in [entry.scope, entry.map] {
        let defs = arities(name);
        if defs.is_empty() {
            diags.push(Diagnostic::file(
                path,
                format!(
                    "the rule defines no `fn {name}(group)`; a rule needs both `{}(group)` and `{}(group)`",
                    entry.scope, entry.map
                ),
            ));
        } else if !defs.contains(&1) {
            diags.push(Diagnostic::file(
                path,
                format!("`fn {name}` must take exactly one parameter (the group)"),
            ));
        }
    }
    if entry == OLD_ENTRY_POINTS {
        tracing::warn!(
            "{}: `fn scope(group)` and `fn map(group)` are the old names of `fn in_scope(group)` and `fn to_ad(group)`; rename them (the old names still work)",
            path.display()
        );
    }
    Some(entry)
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

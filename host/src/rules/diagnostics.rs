//! Errors with `file:line:column`: load diagnostics (syntax, imports, missing entry points) and
//! evaluation errors (a rule failed on a group). Rhai nests errors raised inside functions and
//! modules (`ErrorInFunctionCall`, `ErrorInModule`); the walk here finds the innermost position
//! and the file it belongs to, so a failure inside a stdlib helper points at the helper.

use std::fmt;
use std::path::{Path, PathBuf};

use rhai::{EvalAltResult, Position};
use serde::Serialize;

use super::resolver::RuleResolver;
use super::sandbox::DEADLINE_TOKEN;
use super::Limits;

/// One problem in one file. Lines and columns are 1-based; `None` when the problem concerns the
/// file as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl Diagnostic {
    pub(crate) fn file(file: &Path, message: String) -> Diagnostic {
        Diagnostic {
            file: file.to_path_buf(),
            line: None,
            column: None,
            message,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_location(f, &self.file, self.line, self.column)?;
        write!(f, ": {}", self.message)
    }
}

fn write_location(
    f: &mut fmt::Formatter<'_>,
    file: &Path,
    line: Option<usize>,
    column: Option<usize>,
) -> fmt::Result {
    write!(f, "{}", file.display())?;
    if let Some(line) = line {
        write!(f, ":{line}")?;
        if let Some(col) = column {
            write!(f, ":{col}")?;
        }
    }
    Ok(())
}

/// The rule set could not be loaded. `Display` prints one `path:line:col: message` per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadError {
    pub diagnostics: Vec<Diagnostic>,
}

impl LoadError {
    pub(crate) fn new(diagnostics: Vec<Diagnostic>) -> LoadError {
        LoadError { diagnostics }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Why an evaluation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalErrorKind {
    /// The script raised an error (a `throw`, a missing property, a bad call, ...).
    Runtime,
    /// A sandbox limit stopped the script (operations, time, call depth, data size).
    Limit,
    /// The script returned something that breaks the rule contract.
    Output,
    /// The cloud group itself is malformed (a property over Graph's limits, a broken member
    /// entry): no rule ran.
    Input,
}

/// A rule failed on one group. `file`/`line`/`column` locate the failure, which may be inside
/// an imported module; `rule` and `function` say which entry point was running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub struct EvalError {
    /// The rule file's name, e.g. `10-microsoft-365.rhai`.
    pub rule: String,
    /// `scope` or `map`.
    pub function: String,
    pub group_id: String,
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
    pub kind: EvalErrorKind,
}

impl EvalError {
    /// An error of no rule and no place: the group's data, or the engine itself.
    pub(crate) fn unlocated(group_id: String, message: String, kind: EvalErrorKind) -> EvalError {
        EvalError {
            rule: String::new(),
            function: String::new(),
            group_id,
            file: PathBuf::new(),
            line: None,
            column: None,
            message,
            kind,
        }
    }
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind == EvalErrorKind::Input {
            return write!(f, "cloud group {}: {}", self.group_id, self.message);
        }
        write_location(f, &self.file, self.line, self.column)?;
        write!(
            f,
            ": {} (rule {}, {}(), group {})",
            self.message, self.rule, self.function, self.group_id
        )
    }
}

/// A located failure, before the rule/group context is added.
pub(crate) struct Located {
    pub(crate) file: PathBuf,
    pub(crate) line: Option<usize>,
    pub(crate) column: Option<usize>,
    pub(crate) message: String,
    pub(crate) kind: EvalErrorKind,
}

impl Located {
    pub(crate) fn output(file: &Path, message: String) -> Located {
        Located {
            file: file.to_path_buf(),
            line: None,
            column: None,
            message,
            kind: EvalErrorKind::Output,
        }
    }
}

/// The innermost error of a nested chain, with the file and position it belongs to.
struct Innermost<'a> {
    error: &'a EvalAltResult,
    file: PathBuf,
    position: Position,
    /// Import paths passed through, outermost first.
    modules: Vec<String>,
}

fn innermost<'a>(
    err: &'a EvalAltResult,
    start: &Path,
    module_file: &dyn Fn(&str) -> Option<PathBuf>,
) -> Innermost<'a> {
    let mut file = start.to_path_buf();
    // The deepest known call or import site, used when the innermost error has no position
    // (limit errors lose theirs as they propagate).
    let mut site: Option<(PathBuf, Position)> = None;
    let mut modules = Vec::new();
    let mut e = err;
    loop {
        match e {
            EvalAltResult::ErrorInFunctionCall(_, source, inner, pos) => {
                if !pos.is_none() {
                    site = Some((file.clone(), *pos));
                }
                if !source.is_empty() {
                    file = PathBuf::from(source);
                }
                e = inner;
            }
            EvalAltResult::ErrorInModule(name, inner, pos) => {
                if !pos.is_none() {
                    site = Some((file.clone(), *pos));
                }
                modules.push(name.clone());
                if let Some(f) = module_file(name) {
                    file = f;
                }
                e = inner;
            }
            _ => break,
        }
    }
    let (file, position) = if e.position().is_none() {
        site.unwrap_or((file, Position::NONE))
    } else {
        (file, e.position())
    };
    Innermost {
        error: e,
        file,
        position,
        modules,
    }
}

/// Rhai's message without its ` (line x, position y)` suffix.
fn bare_message(e: &EvalAltResult) -> String {
    let text = e.to_string();
    let suffix = format!(" ({})", e.position());
    match text.strip_suffix(&suffix) {
        Some(t) if !e.position().is_none() => t.to_string(),
        _ => text,
    }
}

fn describe(e: &EvalAltResult, limits: &Limits) -> (String, EvalErrorKind) {
    use EvalAltResult as E;
    let limit = EvalErrorKind::Limit;
    match e {
        E::ErrorParsing(t, _) => (format!("syntax error: {t}"), EvalErrorKind::Runtime),
        E::ErrorTooManyOperations(_) => (
            format!(
                "stopped after {} operations (the operation limit); is there an endless loop?",
                limits.max_operations
            ),
            limit,
        ),
        E::ErrorTerminated(token, _) if token.to_string() == DEADLINE_TOKEN => (
            format!(
                "stopped after {} ms (the time limit per call)",
                limits.call_timeout.as_millis()
            ),
            limit,
        ),
        E::ErrorStackOverflow(_) => (
            format!(
                "more than {} nested function calls (the call depth limit); is there endless recursion?",
                limits.max_call_levels
            ),
            limit,
        ),
        E::ErrorDataTooLarge(what, _) => (
            format!(
                "{what} over the sandbox limit (strings {} bytes, arrays {} elements, maps {} entries)",
                limits.max_string_size, limits.max_array_size, limits.max_map_size
            ),
            limit,
        ),
        E::ErrorTooManyModules(_) | E::ErrorTooManyVariables(_) => (bare_message(e), limit),
        // `throw "text"` and host-function errors: the text alone reads best.
        E::ErrorRuntime(value, _) if value.is_string() => {
            (value.to_string(), EvalErrorKind::Runtime)
        }
        _ => (bare_message(e), EvalErrorKind::Runtime),
    }
}

/// Locates an error raised while calling a rule's function.
pub(crate) fn locate(err: &EvalAltResult, rule_path: &Path, limits: &Limits) -> Located {
    // Modules are embedded at load; at run time only source names (file paths) appear.
    let inner = innermost(err, rule_path, &|_| None);
    let (message, kind) = describe(inner.error, limits);
    Located {
        file: inner.file,
        line: inner.position.line(),
        column: inner.position.position(),
        message,
        kind,
    }
}

/// Turns a compile/import failure of one rule file into a diagnostic.
pub(crate) fn load_diagnostic(
    err: &EvalAltResult,
    rule_path: &Path,
    rule_text: &str,
    resolver: &RuleResolver,
) -> Diagnostic {
    let module_file = |name: &str| resolver.file_for(name).ok();
    let inner = innermost(err, rule_path, &module_file);
    let mut message = match inner.error {
        EvalAltResult::ErrorModuleNotFound(path, _) => match resolver.file_for(path) {
            Ok(file) => format!("module {path:?} not found: no file {}", file.display()),
            Err(why) => why.to_string(),
        },
        e => describe(e, &Limits::default()).0,
    };
    if !inner.modules.is_empty() {
        let chain: Vec<String> = inner.modules.iter().map(|m| format!("{m:?}")).collect();
        message.push_str(&format!(" (while loading module {})", chain.join(" -> ")));
    }
    let (file, line, column) = if inner.position.is_none() {
        // compile_into_self_contained resolves top-level imports without a position: point at
        // the import statement's path literal in the rule itself.
        let import = match (inner.modules.first(), inner.error) {
            (Some(m), _) => Some(m.as_str()),
            (None, EvalAltResult::ErrorModuleNotFound(p, _)) => Some(p.as_str()),
            _ => None,
        };
        match import.and_then(|p| find_literal(rule_text, p)) {
            Some((line, col)) => (rule_path.to_path_buf(), Some(line), Some(col)),
            None => (inner.file, None, None),
        }
    } else {
        (inner.file, inner.position.line(), inner.position.position())
    };
    Diagnostic {
        file,
        line,
        column,
        message,
    }
}

/// 1-based line and column (in characters) of the string literal `"text"` in `source`.
fn find_literal(source: &str, text: &str) -> Option<(usize, usize)> {
    let offset = [format!("\"{text}\""), format!("`{text}`")]
        .iter()
        .filter_map(|lit| source.find(lit.as_str()))
        .min()?;
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = source[line_start..offset].chars().count() + 1;
    Some((line, column))
}

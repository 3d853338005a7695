//! Triggers and schedules in rule files: found when the rules load, called by the host after an
//! apply (triggers) or when due (`on_schedule`), with the primitives available.
//!
//! A rule file may define, besides `scope` and `map`:
//! - `fn on_created(group, dn)`, `fn on_updated(group, dn, changes)`, `fn on_deleted(group_id,
//!   dn)`, `fn on_members_added(group, dn, members)`, `fn on_members_removed(group, dn, members)`;
//! - `const SCHEDULE = "<interval or cron>"` with `fn on_schedule(info)`.
//!
//! Discovery reads function names and arities from the AST and positions from a small scan of
//! the top level of the text (Rhai's function metadata has no positions), so a wrong arity or a
//! bad `SCHEDULE` is a load diagnostic with `file:line:column`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rhai::{Dynamic, ImmutableString, Map, AST};
use serde::Serialize;

use super::diagnostics::{self, Diagnostic};
use super::primitives::{CallScope, Effects};
use super::sandbox::{Sandbox, Settings};
use super::schedule::Schedule;
use super::Limits;

/// A trigger: what happened to a group's AD object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    OnCreated,
    OnUpdated,
    OnMembersAdded,
    OnMembersRemoved,
    OnDeleted,
}

impl Hook {
    pub const ALL: [Hook; 5] = [
        Hook::OnCreated,
        Hook::OnUpdated,
        Hook::OnMembersAdded,
        Hook::OnMembersRemoved,
        Hook::OnDeleted,
    ];

    /// The script function's name.
    pub fn name(self) -> &'static str {
        match self {
            Hook::OnCreated => "on_created",
            Hook::OnUpdated => "on_updated",
            Hook::OnMembersAdded => "on_members_added",
            Hook::OnMembersRemoved => "on_members_removed",
            Hook::OnDeleted => "on_deleted",
        }
    }

    /// The parameters, as documented.
    pub fn params(self) -> &'static [&'static str] {
        match self {
            Hook::OnCreated => &["group", "dn"],
            Hook::OnUpdated => &["group", "dn", "changes"],
            Hook::OnMembersAdded | Hook::OnMembersRemoved => &["group", "dn", "members"],
            Hook::OnDeleted => &["group_id", "dn"],
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The schedule entry point.
pub const ON_SCHEDULE: &str = "on_schedule";
/// The constant that holds a rule's schedule.
pub const SCHEDULE_CONST: &str = "SCHEDULE";

/// One trigger call: the group, its DN after the change, and what changed.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerEvent {
    pub hook: Hook,
    pub cloud_id: String,
    /// The DN after the change (the deleted DN for `on_deleted`).
    pub dn: String,
    /// The cloud group as rules see it (`CloudObject::to_rule_json()`); `None` for deletes.
    pub group: Option<serde_json::Value>,
    /// `on_updated`: `{ attr: { old, new }, moved_from? }`.
    pub changes: serde_json::Value,
    /// `on_members_added` / `on_members_removed`: member DNs.
    pub members: Vec<String>,
}

/// A trigger or schedule that failed, located like a rule error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub struct HookError {
    pub rule: String,
    /// `on_created`, ..., `on_schedule`.
    pub function: String,
    /// The group's cloud id; empty for schedules.
    pub group_id: String,
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for HookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        write!(
            f,
            ": {} (rule {}, {}()",
            self.message, self.rule, self.function
        )?;
        if !self.group_id.is_empty() {
            write!(f, ", group {}", self.group_id)?;
        }
        write!(f, ")")
    }
}

/// What one rule file offers besides `scope` and `map`.
#[derive(Debug, Clone, Default)]
pub(crate) struct RuleHooks {
    pub(crate) hooks: BTreeSet<Hook>,
    pub(crate) schedule: Option<Schedule>,
}

impl RuleHooks {
    pub(crate) fn is_empty(&self) -> bool {
        self.hooks.is_empty() && self.schedule.is_none()
    }
}

/// Finds the triggers and the schedule of one compiled rule file; problems go to `diags`.
pub(crate) fn discover(
    ast: &AST,
    path: &Path,
    text: &str,
    diags: &mut Vec<Diagnostic>,
) -> RuleHooks {
    let top = scan_top_level(text);
    let at = |line: usize, column: usize, message: String| Diagnostic {
        file: path.to_path_buf(),
        line: Some(line),
        column: Some(column),
        message,
    };
    let arities = |name: &str| -> Vec<usize> {
        ast.iter_functions()
            .filter(|f| f.name == name)
            .map(|f| f.params.len())
            .collect()
    };
    // A definition with the wrong arity, located when the scan found it.
    let wrong_arity = |name: &str, params: &[&str], diags: &mut Vec<Diagnostic>| {
        let want = params.len();
        let message = |got: usize| {
            format!(
                "`fn {name}` must take {want} parameter{} ({}), not {got}",
                if want == 1 { "" } else { "s" },
                params.join(", ")
            )
        };
        let mut located = false;
        for f in top
            .fns
            .iter()
            .filter(|f| f.name == name && f.params != want)
        {
            diags.push(at(f.line, f.column, message(f.params)));
            located = true;
        }
        if !located {
            for got in arities(name).into_iter().filter(|n| *n != want) {
                diags.push(Diagnostic::file(path, message(got)));
            }
        }
    };

    let mut out = RuleHooks::default();
    for hook in Hook::ALL {
        let found = arities(hook.name());
        if found.iter().any(|n| *n != hook.params().len()) {
            wrong_arity(hook.name(), hook.params(), diags);
        }
        if found.contains(&hook.params().len()) {
            out.hooks.insert(hook);
        }
    }

    let on_schedule = arities(ON_SCHEDULE);
    if on_schedule.iter().any(|n| *n != 1) {
        wrong_arity(ON_SCHEDULE, &["info"], diags);
    }
    let schedule_fn = top.fns.iter().find(|f| f.name == ON_SCHEDULE);
    match top.consts.iter().find(|c| c.name == SCHEDULE_CONST) {
        Some(c) => match &c.literal {
            Some(lit) => match Schedule::parse(&lit.value) {
                Ok(s) => {
                    if on_schedule.is_empty() {
                        diags.push(at(
                            c.line,
                            c.column,
                            format!("`{SCHEDULE_CONST}` is set but the rule defines no `fn {ON_SCHEDULE}(info)` to run"),
                        ));
                    }
                    out.schedule = Some(s);
                }
                Err(why) => diags.push(at(
                    lit.line,
                    lit.column,
                    format!(
                        "invalid {SCHEDULE_CONST} {:?}: {why}; use an interval (\"30s\", \"5m\", \"1h\", \"1d\") or a 5-field cron expression in UTC (\"0 3 * * *\")",
                        lit.value
                    ),
                )),
            },
            None => diags.push(at(
                c.line,
                c.column,
                format!("`{SCHEDULE_CONST}` must be a string literal, e.g. `const {SCHEDULE_CONST} = \"1h\";`"),
            )),
        },
        // A wrong arity is reported above; one problem per definition is enough.
        None if on_schedule.contains(&1) => {
            let message = format!(
                "`fn {ON_SCHEDULE}` needs `const {SCHEDULE_CONST} = \"...\";` (an interval such as \"1h\" or a cron expression) to say when it runs"
            );
            diags.push(match schedule_fn {
                Some(f) => at(f.line, f.column, message),
                None => Diagnostic::file(path, message),
            });
        }
        None => {}
    }
    out
}

/// The triggers and schedules of a loaded rule set. Shared (`Arc`) and `'static`, so calls can
/// run on blocking threads while the rule set is swapped.
pub struct HookTable {
    rules: BTreeMap<String, HookedRule>,
    settings: Arc<Settings>,
    limits: Limits,
}

struct HookedRule {
    path: PathBuf,
    ast: AST,
    hooks: RuleHooks,
}

impl fmt::Debug for HookTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (name, r) in &self.rules {
            m.entry(
                name,
                &(
                    &r.hooks.hooks,
                    r.hooks.schedule.as_ref().map(Schedule::text),
                ),
            );
        }
        m.finish()
    }
}

impl HookTable {
    pub(crate) fn new(settings: Arc<Settings>, limits: Limits) -> HookTable {
        HookTable {
            rules: BTreeMap::new(),
            settings,
            limits,
        }
    }

    /// Adds a rule that has triggers or a schedule (the copy shares the AST's functions and
    /// embedded modules).
    pub(crate) fn add(&mut self, name: &str, path: &Path, ast: &AST, hooks: RuleHooks) {
        if hooks.is_empty() {
            return;
        }
        self.rules.insert(
            name.to_string(),
            HookedRule {
                path: path.to_path_buf(),
                ast: ast.clone(),
                hooks,
            },
        );
    }

    /// Does `rule` (a file name) define `hook`?
    pub fn has(&self, rule: &str, hook: Hook) -> bool {
        self.rules
            .get(rule)
            .is_some_and(|r| r.hooks.hooks.contains(&hook))
    }

    /// Every trigger by rule file, for listings.
    pub fn triggers(&self) -> BTreeMap<&str, &BTreeSet<Hook>> {
        self.rules
            .iter()
            .filter(|(_, r)| !r.hooks.hooks.is_empty())
            .map(|(n, r)| (n.as_str(), &r.hooks.hooks))
            .collect()
    }

    /// The rules with a schedule, by file name.
    pub fn schedules(&self) -> Vec<(&str, &Schedule)> {
        self.rules
            .iter()
            .filter_map(|(n, r)| r.hooks.schedule.as_ref().map(|s| (n.as_str(), s)))
            .collect()
    }

    /// Calls one trigger of `rule`. Blocks (the primitives wait for their I/O): call it on a
    /// blocking thread, never on an async worker.
    pub fn call_trigger(
        &self,
        rule: &str,
        event: &TriggerEvent,
        effects: Arc<dyn Effects>,
        timeout: Duration,
    ) -> Result<(), Box<HookError>> {
        let hook = event.hook;
        let to_value = |v: &serde_json::Value| rhai::serde::to_dynamic(v).unwrap_or(Dynamic::UNIT);
        let group = || match &event.group {
            Some(g) => super::group::to_script_value(g),
            None => {
                let mut m = Map::new();
                m.insert("id".into(), Dynamic::from(event.cloud_id.clone()));
                Dynamic::from_map(m)
            }
        };
        let dn = Dynamic::from(event.dn.clone());
        let members = || {
            Dynamic::from_array(
                event
                    .members
                    .iter()
                    .map(|m| Dynamic::from(m.clone()))
                    .collect(),
            )
        };
        let args = match hook {
            Hook::OnCreated => vec![group(), dn],
            Hook::OnUpdated => vec![group(), dn, to_value(&event.changes)],
            Hook::OnMembersAdded | Hook::OnMembersRemoved => vec![group(), dn, members()],
            Hook::OnDeleted => vec![Dynamic::from(event.cloud_id.clone()), dn],
        };
        self.call(rule, hook.name(), &event.cloud_id, args, effects, timeout)
    }

    /// Calls `on_schedule(#{ rule, now })` of `rule` (`now` in RFC 3339). Blocks, like
    /// [`call_trigger`](Self::call_trigger).
    pub fn call_schedule(
        &self,
        rule: &str,
        now: &str,
        effects: Arc<dyn Effects>,
        timeout: Duration,
    ) -> Result<(), Box<HookError>> {
        let mut info = Map::new();
        info.insert("rule".into(), Dynamic::from(rule.to_string()));
        info.insert("now".into(), Dynamic::from(now.to_string()));
        self.call(
            rule,
            ON_SCHEDULE,
            "",
            vec![Dynamic::from_map(info)],
            effects,
            timeout,
        )
    }

    fn call(
        &self,
        rule: &str,
        function: &str,
        group_id: &str,
        args: Vec<Dynamic>,
        effects: Arc<dyn Effects>,
        timeout: Duration,
    ) -> Result<(), Box<HookError>> {
        let fail = |file: PathBuf, message: String| {
            Box::new(HookError {
                rule: rule.to_string(),
                function: function.to_string(),
                group_id: group_id.to_string(),
                file,
                line: None,
                column: None,
                message,
            })
        };
        let Some(r) = self.rules.get(rule) else {
            return Err(fail(
                PathBuf::from(rule),
                format!("the rule set has no rule {rule} with `{function}`"),
            ));
        };
        // A fresh engine per call: triggers are few, and its clock starts now.
        let sandbox = Sandbox::evaluator(&self.limits, self.settings.clone());
        let scope = CallScope {
            rule: ImmutableString::from(rule),
            effects,
            deadline: Instant::now() + timeout,
        };
        sandbox
            .call_hook(&r.ast, function, args, timeout, scope)
            .map(|_| ())
            .map_err(|e| {
                let limits = Limits {
                    call_timeout: timeout,
                    ..self.limits.clone()
                };
                let loc = diagnostics::locate(&e, &r.path, &limits);
                Box::new(HookError {
                    rule: rule.to_string(),
                    function: function.to_string(),
                    group_id: group_id.to_string(),
                    file: loc.file,
                    line: loc.line,
                    column: loc.column,
                    message: loc.message,
                })
            })
    }
}

/// A function definition at the top level of a file: name, arity, position of the name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FnDef {
    name: String,
    params: usize,
    line: usize,
    column: usize,
}

/// `const NAME = <literal>` at the top level; `literal` is set for a plain string literal.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ConstDef {
    name: String,
    line: usize,
    column: usize,
    literal: Option<Literal>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Literal {
    value: String,
    line: usize,
    column: usize,
}

#[derive(Debug, Default)]
struct TopLevel {
    fns: Vec<FnDef>,
    consts: Vec<ConstDef>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Str(String),
    Punct(char),
}

/// Tokens with 1-based positions (columns in characters), comments dropped. Enough of Rhai's
/// lexer for the top level of a file that already compiled.
fn tokens(source: &str) -> Vec<(Tok, usize, usize)> {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line, mut col) = (0usize, 1usize, 1usize);
    let step = |i: &mut usize, line: &mut usize, col: &mut usize| {
        if chars.get(*i) == Some(&'\n') {
            *line += 1;
            *col = 1;
        } else {
            *col += 1;
        }
        *i += 1;
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let (at_line, at_col) = (line, col);
        if c.is_whitespace() {
            step(&mut i, &mut line, &mut col);
        } else if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                step(&mut i, &mut line, &mut col);
            }
        } else if c == '/' && next == Some('*') {
            // Rhai block comments nest.
            let mut depth = 0usize;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    step(&mut i, &mut line, &mut col);
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    step(&mut i, &mut line, &mut col);
                    if depth == 0 {
                        step(&mut i, &mut line, &mut col);
                        break;
                    }
                }
                step(&mut i, &mut line, &mut col);
            }
        } else if c == '"' || c == '`' || c == '\'' {
            step(&mut i, &mut line, &mut col);
            let mut value = String::new();
            let mut plain = true;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' {
                    plain = false;
                    step(&mut i, &mut line, &mut col);
                } else if c == '`' && chars[i] == '$' && chars.get(i + 1) == Some(&'{') {
                    plain = false;
                }
                if let Some(ch) = chars.get(i) {
                    value.push(*ch);
                }
                step(&mut i, &mut line, &mut col);
            }
            step(&mut i, &mut line, &mut col);
            // Only plain double-quoted or backtick strings count as literals; others are opaque.
            let tok = if plain && c != '\'' {
                Tok::Str(value)
            } else {
                Tok::Punct('\'')
            };
            out.push((tok, at_line, at_col));
        } else if c.is_alphanumeric() || c == '_' {
            let mut word = String::new();
            while chars
                .get(i)
                .is_some_and(|c| c.is_alphanumeric() || *c == '_')
            {
                word.push(chars[i]);
                step(&mut i, &mut line, &mut col);
            }
            out.push((Tok::Word(word), at_line, at_col));
        } else {
            out.push((Tok::Punct(c), at_line, at_col));
            step(&mut i, &mut line, &mut col);
        }
    }
    out
}

/// Function definitions and constants outside any braces.
fn scan_top_level(source: &str) -> TopLevel {
    let toks = tokens(source);
    let mut top = TopLevel::default();
    let mut depth = 0usize;
    let word = |k: usize| match toks.get(k) {
        Some((Tok::Word(w), _, _)) => Some(w.as_str()),
        _ => None,
    };
    let mut k = 0;
    while k < toks.len() {
        match &toks[k].0 {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => depth = depth.saturating_sub(1),
            Tok::Word(w) if depth == 0 && w == "fn" => {
                if let (Some(name), Some((Tok::Punct('('), _, _))) = (word(k + 1), toks.get(k + 2))
                {
                    let (_, line, column) = toks[k + 1];
                    let mut params = 0;
                    let mut j = k + 3;
                    let mut any = false;
                    while let Some((t, _, _)) = toks.get(j) {
                        match t {
                            Tok::Punct(')') => break,
                            Tok::Punct(',') => params += 1,
                            _ => any = true,
                        }
                        j += 1;
                    }
                    if any {
                        params += 1;
                    }
                    top.fns.push(FnDef {
                        name: name.to_string(),
                        params,
                        line,
                        column,
                    });
                    k = j;
                    continue;
                }
            }
            Tok::Word(w) if depth == 0 && w == "const" => {
                if let Some(name) = word(k + 1) {
                    let (_, line, column) = toks[k + 1];
                    let literal = match (toks.get(k + 2), toks.get(k + 3), toks.get(k + 4)) {
                        (
                            Some((Tok::Punct('='), _, _)),
                            Some((Tok::Str(value), l, c)),
                            Some((Tok::Punct(';'), _, _)) | None,
                        ) => Some(Literal {
                            value: value.clone(),
                            line: *l,
                            column: *c,
                        }),
                        _ => None,
                    };
                    top.consts.push(ConstDef {
                        name: name.to_string(),
                        line,
                        column,
                        literal,
                    });
                }
            }
            _ => {}
        }
        k += 1;
    }
    top
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_scan_finds_functions_and_constants_with_positions() {
        let src = "// fn on_created(x) {}\nconst SCHEDULE = \"5m\";\nconst N = 1 + 2;\n/* fn hidden() {} */\nfn on_created(group, dn) {\n    let s = \"fn fake(a) {\";\n    fn_inner();\n}\n  fn on_deleted(id) { }\nfn none() {}\n";
        let top = scan_top_level(src);
        let fns: Vec<(&str, usize, usize, usize)> = top
            .fns
            .iter()
            .map(|f| (f.name.as_str(), f.params, f.line, f.column))
            .collect();
        assert_eq!(
            fns,
            vec![
                ("on_created", 2, 5, 4),
                ("on_deleted", 1, 9, 6),
                ("none", 0, 10, 4)
            ]
        );
        assert_eq!(top.consts.len(), 2);
        assert_eq!(
            top.consts[0].literal,
            Some(Literal {
                value: "5m".into(),
                line: 2,
                column: 18
            })
        );
        assert_eq!((top.consts[0].line, top.consts[0].column), (2, 7));
        assert_eq!(top.consts[1].literal, None);
    }
}

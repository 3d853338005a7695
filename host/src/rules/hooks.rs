//! Triggers and schedules in rule files: found when the rules load, called by the host after an
//! apply (triggers) or when due (`on_schedule`), with the primitives available.
//!
//! A rule file may define, besides `scope` and `map`:
//! - `fn on_created(group, dn)`, `fn on_updated(group, dn, changes)`, `fn on_deleted(group_id,
//!   dn)`, `fn on_members_added(group, dn, members)`, `fn on_members_removed(group, dn, members)`;
//! - `fn on_held(event)`, `fn on_failed(event)`, `fn on_refused(event)`: what an operator must
//!   look at (a held set, a group in quarantine, a refusal), to open a ticket;
//! - `const SCHEDULE = "<interval or cron>"` with `fn on_schedule(info)`.
//!
//! Discovery reads the functions and the top-level `const SCHEDULE` from the compiled AST. Rhai
//! keeps no position for a function's name, so names are located with Rhai's own tokenizer: a
//! wrong arity or a bad `SCHEDULE` is a load diagnostic with `file:line:column`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rhai::{ASTFlags, Dynamic, Expr, ImmutableString, Map, Position, Stmt, Token, AST};
use serde::Serialize;

use super::diagnostics::{self, Diagnostic};
use super::primitives::{CallScope, Effects, Idempotency, Revealed};
use super::sandbox::{Sandbox, Settings};
use super::schedule::Schedule;
use super::tokens::tokens;
use super::Limits;

/// A trigger: what happened to a group's AD object (called in the rule that handles the
/// group), or something an operator must look at (`on_held`, `on_failed`, `on_refused`: called
/// in every rule file that defines it, once per event).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    OnCreated,
    OnUpdated,
    OnMembersAdded,
    OnMembersRemoved,
    OnDeleted,
    /// Deletes or member removals held back for approval (a new held set).
    OnHeld,
    /// A group entered quarantine, or fails with another error.
    OnFailed,
    /// The host refused to write a group (a foreign object, the schema, the managed OUs), newly.
    OnRefused,
}

impl Hook {
    pub const ALL: [Hook; 8] = [
        Hook::OnCreated,
        Hook::OnUpdated,
        Hook::OnMembersAdded,
        Hook::OnMembersRemoved,
        Hook::OnDeleted,
        Hook::OnHeld,
        Hook::OnFailed,
        Hook::OnRefused,
    ];

    /// An operational hook: about the cycle, not about a change a group's rule asked for.
    pub fn is_alert(self) -> bool {
        matches!(self, Hook::OnHeld | Hook::OnFailed | Hook::OnRefused)
    }

    /// The script function's name.
    pub fn name(self) -> &'static str {
        match self {
            Hook::OnCreated => "on_created",
            Hook::OnUpdated => "on_updated",
            Hook::OnMembersAdded => "on_members_added",
            Hook::OnMembersRemoved => "on_members_removed",
            Hook::OnDeleted => "on_deleted",
            Hook::OnHeld => "on_held",
            Hook::OnFailed => "on_failed",
            Hook::OnRefused => "on_refused",
        }
    }

    /// The parameters, as documented.
    pub fn params(self) -> &'static [&'static str] {
        match self {
            Hook::OnCreated => &["group", "dn"],
            Hook::OnUpdated => &["group", "dn", "changes"],
            Hook::OnMembersAdded | Hook::OnMembersRemoved => &["group", "dn", "members"],
            Hook::OnDeleted => &["group_id", "dn"],
            Hook::OnHeld | Hook::OnFailed | Hook::OnRefused => &["event"],
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

/// One trigger call: the group, its DN after the change, and what changed. Serialised into the
/// state's outbox until delivered.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct TriggerEvent {
    pub hook: Hook,
    pub cloud_id: String,
    /// The DN after the change (the deleted DN for `on_deleted`).
    pub dn: String,
    /// The cloud group as rules see it (`CloudObject::to_rule_json()`); `None` for deletes.
    pub group: Option<serde_json::Value>,
    /// `on_updated`: `{ attr: { old, new }, moved_from? }`; `on_held`, `on_failed`,
    /// `on_refused`: the event map they are given.
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
    let toks = tokens(text);
    let defs = functions(ast, &toks);
    let at = |pos: Option<Position>, message: String| Diagnostic {
        file: path.to_path_buf(),
        line: pos.and_then(Position::line),
        column: pos.and_then(Position::position),
        message,
    };
    let arities = |name: &str| -> Vec<usize> {
        defs.iter()
            .filter(|f| f.name == name)
            .map(|f| f.params)
            .collect()
    };
    let wrong_arity = |name: &str, params: &[&str], diags: &mut Vec<Diagnostic>| {
        let want = params.len();
        for f in defs.iter().filter(|f| f.name == name && f.params != want) {
            diags.push(at(
                f.at,
                format!(
                    "`fn {name}` must take {want} parameter{} ({}), not {}",
                    if want == 1 { "" } else { "s" },
                    params.join(", "),
                    f.params
                ),
            ));
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
    match schedule_const(ast, &toks) {
        Some(c) => match c.literal {
            Some(lit) => match Schedule::parse(&lit.value) {
                Ok(s) => {
                    if on_schedule.is_empty() {
                        diags.push(at(
                            Some(c.at),
                            format!("`{SCHEDULE_CONST}` is set but the rule defines no `fn {ON_SCHEDULE}(info)` to run"),
                        ));
                    }
                    out.schedule = Some(s);
                }
                Err(why) => diags.push(at(
                    Some(lit.at),
                    format!(
                        "invalid {SCHEDULE_CONST} {:?}: {why}; use an interval (\"30s\", \"5m\", \"1h\", \"1d\") or a 5-field cron expression in UTC (\"0 3 * * *\")",
                        lit.value
                    ),
                )),
            },
            None => diags.push(at(
                Some(c.at),
                format!("`{SCHEDULE_CONST}` must be a string literal, e.g. `const {SCHEDULE_CONST} = \"1h\";`"),
            )),
        },
        // A wrong arity is reported above; one problem per definition is enough.
        None if on_schedule.contains(&1) => {
            let def = defs.iter().find(|f| f.name == ON_SCHEDULE && f.params == 1);
            diags.push(at(
                def.and_then(|f| f.at),
                format!(
                    "`fn {ON_SCHEDULE}` needs `const {SCHEDULE_CONST} = \"...\";` (an interval such as \"1h\" or a cron expression) to say when it runs"
                ),
            ));
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

    /// The rule files that define `hook`, in file-name order.
    pub fn defining(&self, hook: Hook) -> Vec<&str> {
        self.rules
            .iter()
            .filter(|(_, r)| r.hooks.hooks.contains(&hook))
            .map(|(n, _)| n.as_str())
            .collect()
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
        self.deliver(rule, event, None, effects, timeout)
    }

    /// [`call_trigger`](Self::call_trigger) as one delivery of a recorded call: every HTTP
    /// request it makes carries `Idempotency-Key: <key>` (`<key>.2`, `.3` ... for the second
    /// and later requests of the call), the same on every attempt, so a receiver can drop a
    /// call it already had.
    pub fn deliver(
        &self,
        rule: &str,
        event: &TriggerEvent,
        key: Option<&str>,
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
            Hook::OnHeld | Hook::OnFailed | Hook::OnRefused => vec![to_value(&event.changes)],
        };
        self.call(
            rule,
            hook.name(),
            &event.cloud_id,
            args,
            key,
            effects,
            timeout,
        )
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
            None,
            effects,
            timeout,
        )
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "private; every caller passes each part of a call"
    )]
    fn call(
        &self,
        rule: &str,
        function: &str,
        group_id: &str,
        args: Vec<Dynamic>,
        key: Option<&str>,
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
        let revealed = Revealed::default();
        let scope = CallScope {
            rule: ImmutableString::from(rule),
            effects,
            deadline: Instant::now() + timeout,
            revealed: revealed.clone(),
            idempotency: key.map(Idempotency::new),
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
                    // A secret the script threw or put in a failing request stays hidden.
                    message: revealed.redact(&loc.message),
                })
            })
    }
}

/// A function the AST defines: name, arity, and where its name is written (when found).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FnDef {
    name: String,
    params: usize,
    at: Option<Position>,
}

/// The top-level `const SCHEDULE`: where its name is, and its value when written as one string
/// literal.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ScheduleConst {
    at: Position,
    literal: Option<Literal>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Literal {
    value: String,
    at: Position,
}

/// The AST's functions, sorted by position. Rhai keeps no position for a definition, only for
/// its body's `{`: the name is the identifier before the `(` of the `fn` whose body opens there.
fn functions(ast: &AST, toks: &[(Token, Position)]) -> Vec<FnDef> {
    let mut names: HashMap<Position, (&str, Position)> = HashMap::new();
    for (k, (tok, _)) in toks.iter().enumerate() {
        if *tok != Token::Fn {
            continue;
        }
        let rest = toks.get(k + 1..).unwrap_or_default();
        // `()` is one token.
        let Some(paren) = rest
            .iter()
            .position(|(t, _)| matches!(t, Token::LeftParen | Token::Unit))
        else {
            continue;
        };
        let Some((Token::Identifier(name), name_at)) =
            paren.checked_sub(1).and_then(|i| rest.get(i))
        else {
            continue;
        };
        if let Some((_, body)) = rest
            .get(paren..)
            .unwrap_or_default()
            .iter()
            .find(|(t, _)| *t == Token::LeftBrace)
        {
            names.insert(*body, (name.as_str(), *name_at));
        }
    }
    let mut defs: Vec<FnDef> = ast
        .iter_fn_def()
        .map(|f| FnDef {
            name: f.name.to_string(),
            params: f.params.len(),
            at: names
                .get(&f.body.start_position())
                .filter(|(name, _)| *name == f.name.as_str())
                .map(|(_, at)| *at),
        })
        .collect();
    // Unlocated definitions last; the AST's own order is a hash order.
    defs.sort_by_key(|f| (f.at.is_none(), f.at, f.params));
    defs
}

/// The first top-level `const SCHEDULE`. Its value counts as a literal only when it is written as
/// one: the optimizer folds `PART + "m"` into a string too, at the position of an identifier or
/// operator.
fn schedule_const(ast: &AST, toks: &[(Token, Position)]) -> Option<ScheduleConst> {
    ast.statements().iter().find_map(|stmt| match stmt {
        Stmt::Var(x, flags, _) if flags.contains(ASTFlags::CONSTANT) => {
            let (ident, expr, _) = &**x;
            (ident.name == SCHEDULE_CONST).then(|| ScheduleConst {
                at: ident.pos,
                literal: written_literal(expr, toks),
            })
        }
        _ => None,
    })
}

fn written_literal(expr: &Expr, toks: &[(Token, Position)]) -> Option<Literal> {
    let Expr::StringConstant(value, at) = expr else {
        return None;
    };
    let k = toks.iter().position(|(_, p)| p == at)?;
    match (&toks.get(k)?.0, toks.get(k + 1).map(|(t, _)| t)) {
        (Token::StringConstant(s), Some(Token::SemiColon) | None)
            if s.as_str() == value.as_str() =>
        {
            Some(Literal {
                value: value.to_string(),
                at: *at,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rhai::Engine;

    fn compile(src: &str) -> AST {
        Engine::new().compile(src).expect("compiles")
    }

    /// `line:column`, as diagnostics show it.
    type LineCol = Option<(usize, usize)>;

    fn line_col(pos: Option<Position>) -> LineCol {
        let pos = pos?;
        Some((pos.line()?, pos.position()?))
    }

    #[test]
    fn functions_are_located_by_their_names() {
        let src = "// fn on_created(x) {}\nconst SCHEDULE = \"5m\";\n/* fn hidden() {} */\nfn on_created(group, dn) {\n    let s = \"fn fake(a) {\";\n    let t = `${ #{ a: 1 }.a } fn fake2(b) { ${ `${1}` }`;\n    fn_inner();\n}\n  fn on_deleted(id) { }\nprivate fn none() {}\nfn after(a, /* b, */ c) { #\"fn raw() {\"# }\nfn spaced( ) {}\n";
        let ast = compile(src);
        let defs: Vec<(String, usize, LineCol)> = functions(&ast, &tokens(src))
            .into_iter()
            .map(|f| (f.name, f.params, line_col(f.at)))
            .collect();
        assert_eq!(
            defs,
            vec![
                ("on_created".into(), 2, Some((4, 4))),
                ("on_deleted".into(), 1, Some((9, 6))),
                ("none".into(), 0, Some((10, 12))),
                ("after".into(), 2, Some((11, 4))),
                ("spaced".into(), 0, Some((12, 4))),
            ]
        );
    }

    #[test]
    fn schedule_is_a_literal_only_as_written() {
        let src = "const N = 1 + 2;\nconst SCHEDULE = \"5m\";\n";
        let c = schedule_const(&compile(src), &tokens(src)).expect("found");
        assert_eq!(line_col(Some(c.at)), Some((2, 7)));
        let lit = c.literal.expect("a literal");
        assert_eq!(
            (lit.value.as_str(), line_col(Some(lit.at))),
            ("5m", Some((2, 18)))
        );

        for src in [
            "const PART = \"5\";\nconst SCHEDULE = PART + \"m\";\n",
            "const SCHEDULE = \"5\" + \"m\";\n",
            "const PART = \"5m\";\nconst SCHEDULE = PART;\n",
            "const SCHEDULE = (\"5m\");\n",
            "const SCHEDULE = `${\"5m\"}`;\n",
            "const SCHEDULE = 5;\n",
        ] {
            let c = schedule_const(&compile(src), &tokens(src)).expect(src);
            assert_eq!(c.literal, None, "{src}");
        }

        for src in [
            "let SCHEDULE = \"5m\";\n",
            "{ const SCHEDULE = \"5m\"; }\n",
            "fn f() { const SCHEDULE = \"5m\"; }\n",
        ] {
            assert_eq!(schedule_const(&compile(src), &tokens(src)), None, "{src}");
        }
    }
}

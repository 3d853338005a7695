//! The engine every script runs in: limits, a wall-clock deadline per call, the allowed packages,
//! the host functions, and `print`/`debug` routed to tracing (never stdout).
//!
//! Packages: Rhai's standard set minus time (`timestamp()` would make rules impure) and blobs;
//! `now()` is the batch instant the host sets (`clock`), not the wall clock.
//! Rhai has no file, process or network access; `sleep` and `exit` are replaced by errors and
//! `eval` is disabled, so a script can neither stall a worker nor escape its call.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rhai::module_resolvers::DummyModuleResolver;
use rhai::packages::{
    BasicArrayPackage, BasicMapPackage, BasicMathPackage, BitFieldPackage, CorePackage,
    LogicPackage, MoreStringPackage, Package,
};
use rhai::{
    Dynamic, Engine, EvalAltResult, ImmutableString, OptimizationLevel, Position, Scope, AST, INT,
};

use super::resolver::{RuleResolver, SharedResolver};
use super::Limits;

/// Host settings as scripts see them (`setting("name")`).
pub(crate) type Settings = BTreeMap<String, Dynamic>;

/// The value `on_progress` returns when a call overruns its deadline; recognised in errors.
pub(crate) const DEADLINE_TOKEN: &str = "writeback: call deadline exceeded";

/// Expression nesting limits (global, in functions); Rhai's defaults are similar.
const MAX_EXPR_DEPTH: usize = 64;
const MAX_FN_EXPR_DEPTH: usize = 32;
/// Imports per script and nested module depth are small in practice.
const MAX_MODULES: usize = 64;
/// How often (in operations) the deadline is compared with the clock.
const CLOCK_CHECK_EVERY: u64 = 256;

pub(crate) fn convert_settings(
    settings: &BTreeMap<String, serde_json::Value>,
) -> Result<Settings, (String, String)> {
    settings
        .iter()
        .map(|(k, v)| {
            rhai::serde::to_dynamic(v)
                .map(|d| (k.clone(), d))
                .map_err(|e| (k.clone(), e.to_string()))
        })
        .collect()
}

/// A wall-clock deadline shared between the caller and the engine's progress callback.
struct Deadline {
    base: Instant,
    /// Nanoseconds after `base`; `u64::MAX` = no deadline.
    at: AtomicU64,
}

impl Deadline {
    fn arm(&self, timeout: Duration) {
        let at = self.base.elapsed().saturating_add(timeout).as_nanos();
        self.at
            .store(u64::try_from(at).unwrap_or(u64::MAX - 1), Ordering::Relaxed);
    }

    fn disarm(&self) {
        self.at.store(u64::MAX, Ordering::Relaxed);
    }

    fn passed(&self) -> bool {
        let at = self.at.load(Ordering::Relaxed);
        at != u64::MAX && u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX) > at
    }
}

/// One engine with its deadline.
pub(crate) struct Sandbox {
    engine: Engine,
    deadline: Arc<Deadline>,
    /// What `now()` returns; set per evaluation batch.
    now: Arc<super::clock::NowCell>,
}

impl Sandbox {
    /// The engine used to compile rules: resolves imports through `resolver`.
    pub(crate) fn loader(
        limits: &Limits,
        settings: Arc<Settings>,
        resolver: Arc<RuleResolver>,
    ) -> Sandbox {
        let mut s = Sandbox::build(limits, settings);
        s.engine.set_module_resolver(SharedResolver(resolver));
        s
    }

    /// An engine for evaluation: imports were embedded at load, so nothing resolves at run time.
    pub(crate) fn evaluator(limits: &Limits, settings: Arc<Settings>) -> Sandbox {
        let mut s = Sandbox::build(limits, settings);
        s.engine.set_module_resolver(DummyModuleResolver::new());
        s
    }

    fn build(limits: &Limits, settings: Arc<Settings>) -> Sandbox {
        let mut engine = Engine::new_raw();
        for module in [
            CorePackage::new().as_shared_module(),
            BitFieldPackage::new().as_shared_module(),
            LogicPackage::new().as_shared_module(),
            BasicMathPackage::new().as_shared_module(),
            BasicArrayPackage::new().as_shared_module(),
            BasicMapPackage::new().as_shared_module(),
            MoreStringPackage::new().as_shared_module(),
        ] {
            engine.register_global_module(module);
        }

        engine.set_max_operations(limits.max_operations);
        engine.set_max_call_levels(limits.max_call_levels);
        engine.set_max_string_size(limits.max_string_size);
        engine.set_max_array_size(limits.max_array_size);
        engine.set_max_map_size(limits.max_map_size);
        engine.set_max_expr_depths(MAX_EXPR_DEPTH, MAX_FN_EXPR_DEPTH);
        engine.set_max_modules(MAX_MODULES);
        engine.set_strict_variables(true);
        // A misspelt property (`group.displayname`) is an error, not a silent `()`.
        engine.set_fail_on_invalid_map_property(true);
        engine.set_optimization_level(OptimizationLevel::Simple);
        engine.disable_symbol("eval");

        let deadline = Arc::new(Deadline {
            base: Instant::now(),
            at: AtomicU64::new(u64::MAX),
        });
        let d = deadline.clone();
        engine.on_progress(move |ops| {
            if ops % CLOCK_CHECK_EVERY == 0 && d.passed() {
                Some(Dynamic::from(DEADLINE_TOKEN))
            } else {
                None
            }
        });
        engine.on_print(|text| tracing::info!(target: "writeback::rules", "{text}"));
        engine.on_debug(|text, source, pos| {
            tracing::debug!(
                target: "writeback::rules",
                source = source.unwrap_or(""),
                line = pos.line(),
                column = pos.position(),
                "{text}"
            )
        });

        super::group::register(&mut engine);
        register_host_functions(&mut engine, settings);
        super::primitives::register(&mut engine);
        let now = super::clock::NowCell::new(super::clock::Now::current());
        super::clock::register(&mut engine, now.clone());
        Sandbox {
            engine,
            deadline,
            now,
        }
    }

    /// True when a call since the last [`Sandbox::set_now`] read `now()`.
    pub(crate) fn now_was_read(&self) -> bool {
        self.now.was_read()
    }

    /// Sets the instant `now()` returns in the following calls.
    pub(crate) fn set_now(&self, now: super::clock::Now) {
        self.now.set(now);
    }

    /// Compiles a rule, resolving and embedding its imports now.
    pub(crate) fn compile_rule(
        &self,
        text: &str,
        timeout: Duration,
    ) -> Result<AST, Box<EvalAltResult>> {
        // Module top-level code runs during the compile: it gets a deadline too.
        self.deadline.arm(timeout);
        let result = self.engine.compile_into_self_contained(&Scope::new(), text);
        self.deadline.disarm();
        result
    }

    /// Calls `name(arg)` in `ast` within `timeout`. Top-level statements (imports, constants)
    /// run first, so imported modules and `global::` constants are in place.
    pub(crate) fn call(
        &self,
        ast: &AST,
        name: &str,
        arg: Dynamic,
        timeout: Duration,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        self.deadline.arm(timeout);
        let result = self
            .engine
            .call_fn::<Dynamic>(&mut Scope::new(), ast, name, (arg,));
        self.deadline.disarm();
        result
    }

    /// Calls a trigger or `on_schedule` with `args`; `scope` is the call's tag, which lets the
    /// primitives (`http::post`, ...) work for this call only.
    pub(crate) fn call_hook(
        &self,
        ast: &AST,
        name: &str,
        args: Vec<Dynamic>,
        timeout: Duration,
        scope: super::primitives::CallScope,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        self.deadline.arm(timeout);
        let result = self.engine.call_fn_with_options::<Dynamic>(
            rhai::CallFnOptions::new().with_tag(scope),
            &mut Scope::new(),
            ast,
            name,
            args,
        );
        self.deadline.disarm();
        result
    }
}

/// Native functions scripts may call: settings, DN escaping, character filters, and blockers
/// for `sleep`/`exit`.
fn register_host_functions(engine: &mut Engine, settings: Arc<Settings>) {
    let s = settings.clone();
    engine.register_fn(
        "setting",
        move |name: &str| -> Result<Dynamic, Box<EvalAltResult>> {
            s.get(name).cloned().ok_or_else(|| {
                format!(
                    "setting {name:?} is not defined in the host configuration ([rules.settings])"
                )
                .into()
            })
        },
    );
    engine.register_fn("setting_or", move |name: &str, default: Dynamic| {
        settings.get(name).cloned().unwrap_or(default)
    });
    engine.register_fn("escape_rdn", |value: &str| -> ImmutableString {
        crate::ad::dn::escape_rdn_value(value).into()
    });
    // Text primitives for the stdlib. Natively they cost a fraction of a microsecond; a call into
    // a script module costs several, and a per-character loop in Rhai tens per name.
    engine.register_fn("to_text", |value: Dynamic| -> ImmutableString {
        to_text(value)
    });
    engine.register_fn("first_chars", |value: Dynamic, n: INT| -> ImmutableString {
        let n = usize::try_from(n).unwrap_or(0);
        to_text(value).chars().take(n).collect::<String>().into()
    });
    engine.register_fn("last_chars", |value: Dynamic, n: INT| -> ImmutableString {
        let text = to_text(value);
        let n = usize::try_from(n).unwrap_or(0);
        let skip = text.chars().count().saturating_sub(n);
        text.chars().skip(skip).collect::<String>().into()
    });
    // The same cuts counted in UTF-16 code units, as AD counts its limits (`text`). A result
    // that is the whole text is the caller's string itself: no copy for names that fit.
    engine.register_fn("utf16_len", |value: Dynamic| -> INT {
        INT::try_from(super::text::utf16_len(&to_text(value))).unwrap_or(INT::MAX)
    });
    engine.register_fn("first_units", |value: Dynamic, n: INT| -> ImmutableString {
        let text = to_text(value);
        cut(&text, super::text::first_units(&text, units_arg(n)))
    });
    engine.register_fn("last_units", |value: Dynamic, n: INT| -> ImmutableString {
        let text = to_text(value);
        cut(&text, super::text::last_units(&text, units_arg(n)))
    });
    engine.register_fn(
        "mid_units",
        |value: Dynamic, start: INT, n: INT| -> ImmutableString {
            let text = to_text(value);
            cut(
                &text,
                super::text::mid_units(&text, units_arg(start), units_arg(n)),
            )
        },
    );
    engine.register_fn(
        "strip_chars",
        |value: &str, chars: &str| -> ImmutableString {
            value
                .chars()
                .filter(|c| !chars.contains(*c))
                .collect::<String>()
                .into()
        },
    );
    engine.register_fn("strip_control", |value: &str| -> ImmutableString {
        value
            .chars()
            .filter(|c| !c.is_control())
            .collect::<String>()
            .into()
    });
    engine.register_fn(
        "trim_chars",
        |value: &str, chars: &str| -> ImmutableString {
            value.trim_matches(|c| chars.contains(c)).into()
        },
    );

    // `sleep` would hold a worker beyond any deadline; `exit` would end a call without a result.
    let blocked = |what: &str| -> Box<EvalAltResult> {
        EvalAltResult::ErrorRuntime(
            format!("`{what}` is not available in rules").into(),
            Position::NONE,
        )
        .into()
    };
    engine.register_fn("sleep", move |_: INT| -> Result<(), Box<EvalAltResult>> {
        Err(blocked("sleep"))
    });
    engine.register_fn(
        "sleep",
        move |_: rhai::FLOAT| -> Result<(), Box<EvalAltResult>> { Err(blocked("sleep")) },
    );
    engine.register_fn("exit", move || -> Result<(), Box<EvalAltResult>> {
        Err(blocked("exit"))
    });
    engine.register_fn(
        "exit",
        move |_: Dynamic| -> Result<(), Box<EvalAltResult>> { Err(blocked("exit")) },
    );
}

/// A count argument: negative counts as 0.
fn units_arg(n: INT) -> usize {
    usize::try_from(n).unwrap_or(0)
}

/// `part` (a slice of `text`) as a script string, sharing `text` when it is all of it.
fn cut(text: &ImmutableString, part: &str) -> ImmutableString {
    if part.len() == text.len() {
        text.clone()
    } else {
        part.into()
    }
}

/// A value as text: strings as they are, `()` as "", anything else printed.
fn to_text(value: Dynamic) -> ImmutableString {
    if value.is_unit() {
        ImmutableString::new()
    } else if value.is_string() {
        value.into_immutable_string().unwrap_or_default()
    } else {
        value.to_string().into()
    }
}

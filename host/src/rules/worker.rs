//! Engines on threads of their own, with a stack sized for what the sandbox allows.
//!
//! Rhai clones, measures and drops nested values recursively. A rule that nests a value in
//! itself in a loop (`m = [m]`) reaches a depth of tens of thousands before the operation or
//! time limit stops it, which overflows a 2 MiB thread stack and aborts the whole process. Each
//! engine therefore runs on a thread with [`STACK_BYTES`] (reserved, touched only as deep as a
//! call goes); a call a limit stopped retires its thread, so a stack grown deep is given back.

use std::sync::mpsc;
use std::sync::Arc;

use rhai::Dynamic;

use super::diagnostics::{self, Located};
use super::sandbox::{Sandbox, Settings};
use super::{output, CompiledRule, Decision, EvalError, EvalErrorKind, Limits, Now};

/// Stack of an engine thread: deeper than any nesting a call can build within the limits.
pub(crate) const STACK_BYTES: usize = 256 * 1024 * 1024;

/// One evaluation: the group as scripts see it, its id, the batch instant.
pub(crate) struct Job {
    pub(crate) value: Dynamic,
    pub(crate) group_id: String,
    pub(crate) now: Now,
}

/// The decision and whether it read `now()`.
pub(crate) type Outcome = (Result<Decision, EvalError>, bool);

/// An engine thread and the two channels to it. Jobs go in batches: one hand-over to the
/// thread and back for many groups, not two thread switches for each.
pub(crate) struct Worker {
    jobs: mpsc::Sender<Vec<Job>>,
    outcomes: mpsc::Receiver<Vec<Outcome>>,
}

impl Worker {
    /// Starts a thread with its own engine; `None` when no thread can be had.
    pub(crate) fn spawn(
        rules: Arc<Vec<CompiledRule>>,
        limits: Limits,
        settings: Arc<Settings>,
    ) -> Option<Worker> {
        let (jobs, job_rx) = mpsc::channel::<Vec<Job>>();
        let (outcome_tx, outcomes) = mpsc::channel::<Vec<Outcome>>();
        let started = std::thread::Builder::new()
            .name("writeback-rules".into())
            .stack_size(STACK_BYTES)
            .spawn(move || {
                let sandbox = Sandbox::evaluator(&limits, settings);
                // Ends when the worker is dropped (the sender goes) or its caller is gone.
                for batch in job_rx {
                    let out = batch
                        .into_iter()
                        .map(|job| evaluate(&sandbox, &rules, &limits, job))
                        .collect();
                    if outcome_tx.send(out).is_err() {
                        break;
                    }
                }
            });
        match started {
            Ok(_) => Some(Worker { jobs, outcomes }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a rule engine thread; evaluating inline");
                None
            }
        }
    }

    /// Runs `jobs` on the worker's thread, in order; `None` when the thread stopped (a host
    /// bug).
    pub(crate) fn run(&self, jobs: Vec<Job>) -> Option<Vec<Outcome>> {
        self.jobs.send(jobs).ok()?;
        self.outcomes.recv().ok()
    }
}

/// Evaluates on the caller's thread (no engine thread could be started).
pub(crate) fn run_inline(
    rules: &[CompiledRule],
    limits: &Limits,
    settings: Arc<Settings>,
    jobs: Vec<Job>,
) -> Vec<Outcome> {
    let sandbox = Sandbox::evaluator(limits, settings);
    jobs.into_iter()
        .map(|job| evaluate(&sandbox, rules, limits, job))
        .collect()
}

/// The error for a group whose engine thread stopped.
pub(crate) fn stopped(group_id: String) -> EvalError {
    EvalError::unlocated(
        group_id,
        "the rule engine thread stopped (a host bug); the group is left as it is".into(),
        EvalErrorKind::Runtime,
    )
}

fn evaluate(sandbox: &Sandbox, rules: &[CompiledRule], limits: &Limits, job: Job) -> Outcome {
    sandbox.set_now(job.now);
    let decision = decide(sandbox, rules, limits, job.group_id, job.value);
    (decision, sandbox.now_was_read())
}

/// The first rule whose `scope` is true maps the group.
#[allow(
    clippy::result_large_err,
    reason = "errors are rare and read by people; a flat struct beats a box here"
)]
fn decide(
    sandbox: &Sandbox,
    rules: &[CompiledRule],
    limits: &Limits,
    group_id: String,
    value: Dynamic,
) -> Result<Decision, EvalError> {
    for rule in rules {
        let fail = |function: &str, loc: Located| EvalError {
            rule: rule.name.clone(),
            function: function.to_string(),
            group_id: group_id.clone(),
            file: loc.file,
            line: loc.line,
            column: loc.column,
            message: loc.message,
            kind: loc.kind,
        };
        let (scope, map) = (rule.entry.scope, rule.entry.map);
        let in_scope = sandbox
            .call(&rule.ast, scope, value.clone(), limits.call_timeout)
            .map_err(|e| fail(scope, diagnostics::locate(&e, &rule.path, limits)))?;
        let in_scope = in_scope.as_bool().map_err(|typ| {
            fail(
                scope,
                Located::output(
                    &rule.path,
                    format!("{scope}() must return true or false, not {typ}"),
                ),
            )
        })?;
        if !in_scope {
            continue;
        }
        let out = sandbox
            .call(&rule.ast, map, value, limits.call_timeout)
            .map_err(|e| fail(map, diagnostics::locate(&e, &rule.path, limits)))?;
        return output::decision(&rule.name, map, out)
            .map_err(|e| fail(map, Located::output(&rule.path, e.to_string())));
    }
    Ok(Decision::OutOfScope)
}

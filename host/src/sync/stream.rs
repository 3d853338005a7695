//! A plan written out as it is made. A cycle hands each batch's changes and unresolved members
//! to a [`ChangeSink`] and keeps only counts, so `plan` and `sync` on a tenant of any size hold
//! one batch, not the whole plan. Two sinks: the text of `plan`/`sync`, and their `--json`
//! document (the same shape as a whole report; changes listed batch by batch in id order, the
//! deletes last).

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Seek, Write};

use super::apply::Outcome;
use super::report;
use super::types::{Change, PlannedTrigger, Unresolved};
use super::SyncReport;

/// Receives a cycle's plan batch by batch.
pub trait ChangeSink: Send + Sync {
    /// Changes in id order, what happened to them (empty in a dry run), the triggers they
    /// fire once applied.
    fn changes(&mut self, changes: &[Change], outcomes: &[Outcome], triggers: &[PlannedTrigger]);
    /// Members of the batch's groups that have no AD object.
    fn unresolved(&mut self, members: &[Unresolved]);
}

/// Unresolved members kept as examples per reason; the rest are counted.
const EXAMPLES: usize = 20;

/// The text of `plan` and `sync`: each change printed as its batch is planned (and applied),
/// then [`TextStream::finish`] prints the refusals, the unresolved members per reason and the
/// totals.
pub struct TextStream<W: Write + Send> {
    out: W,
    /// Unresolved members by reason: how many, and the first few.
    unresolved: BTreeMap<String, (usize, Vec<Unresolved>)>,
    error: Option<io::Error>,
}

impl<W: Write + Send> TextStream<W> {
    pub fn new(out: W) -> Self {
        TextStream {
            out,
            unresolved: BTreeMap::new(),
            error: None,
        }
    }

    fn write(&mut self, text: &str) {
        // The lines are ours; any control or bidi character left in a field is escaped.
        let text = crate::printable::text(text);
        if self.error.is_none() {
            if let Err(e) = self
                .out
                .write_all(text.as_bytes())
                .and_then(|_| self.out.flush())
            {
                self.error = Some(e);
            }
        }
    }

    /// The end of the text: what the batches did not print. A write error seen on the way
    /// (a closed pipe) is returned here.
    pub fn finish(mut self, r: &SyncReport, applied: bool) -> io::Result<()> {
        let examples: Vec<(String, usize, Vec<Unresolved>)> = std::mem::take(&mut self.unresolved)
            .into_iter()
            .map(|(reason, (n, ex))| (reason, n, ex))
            .collect();
        let tail = report::render_tail(r, applied, Some(&examples));
        self.write(&tail);
        match self.error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl<W: Write + Send + Sync> ChangeSink for TextStream<W> {
    fn changes(&mut self, changes: &[Change], outcomes: &[Outcome], triggers: &[PlannedTrigger]) {
        let text = report::render_changes(changes, outcomes, triggers, &[]);
        self.write(&text);
    }

    fn unresolved(&mut self, members: &[Unresolved]) {
        for u in members {
            let (n, ex) = self
                .unresolved
                .entry(report::reason_kind(&u.reason))
                .or_default();
            *n += 1;
            if ex.len() < EXAMPLES {
                ex.push(u.clone());
            }
        }
    }
}

/// The `--json` document, written as the cycle goes: `plan.changes` streams; the unresolved
/// members are spooled to an unnamed temporary file (they can outnumber the changes by far) and
/// copied in at the end; [`JsonStream::finish`] writes the rest of the report.
pub struct JsonStream<W: Write + Send> {
    out: W,
    changes: usize,
    spool: Option<io::BufWriter<std::fs::File>>,
    spooled: usize,
    error: Option<io::Error>,
}

impl<W: Write + Send> JsonStream<W> {
    pub fn new(mut out: W) -> io::Result<Self> {
        out.write_all(b"{\n  \"plan\": {\n    \"changes\": [")?;
        Ok(JsonStream {
            out,
            changes: 0,
            spool: None,
            spooled: 0,
            error: None,
        })
    }

    fn keep(&mut self, r: io::Result<()>) {
        if let (Err(e), None) = (r, &self.error) {
            self.error = Some(e);
        }
    }

    /// Writes the unresolved members and the rest of `r` (its own `plan.changes` and
    /// `plan.unresolved_members` are left out: they went through the sink).
    pub fn finish(mut self, r: &SyncReport) -> io::Result<()> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let mut rest = serde_json::to_value(r).map_err(io::Error::other)?;
        let plan = rest
            .as_object_mut()
            .and_then(|o| o.remove("plan"))
            .unwrap_or_default();
        let out = &mut self.out;
        out.write_all(if self.changes > 0 {
            b"\n    ],\n"
        } else {
            b"],\n"
        })?;
        out.write_all(b"    \"unresolved_members\": [")?;
        if let Some(spool) = self.spool.take() {
            let mut file = spool.into_inner().map_err(|e| e.into_error())?;
            file.rewind()?;
            for (i, line) in BufReader::new(file).lines().enumerate() {
                out.write_all(if i == 0 { b"\n      " } else { b",\n      " })?;
                out.write_all(line?.as_bytes())?;
            }
        }
        out.write_all(if self.spooled > 0 { b"\n    ]" } else { b"]" })?;
        if let serde_json::Value::Object(plan) = plan {
            for (k, v) in plan
                .iter()
                .filter(|(k, _)| *k != "changes" && *k != "unresolved_members")
            {
                write!(out, ",\n    {}: {}", serde_json::Value::from(k.as_str()), v)?;
            }
        }
        out.write_all(b"\n  }")?;
        if let serde_json::Value::Object(rest) = rest {
            for (k, v) in &rest {
                write!(out, ",\n  {}: {}", serde_json::Value::from(k.as_str()), v)?;
            }
        }
        out.write_all(b"\n}\n")?;
        out.flush()
    }
}

impl<W: Write + Send + Sync> ChangeSink for JsonStream<W> {
    fn changes(&mut self, changes: &[Change], _: &[Outcome], _: &[PlannedTrigger]) {
        for c in changes {
            let sep: &[u8] = if self.changes == 0 {
                b"\n      "
            } else {
                b",\n      "
            };
            self.changes += 1;
            let r = self
                .out
                .write_all(sep)
                .and_then(|_| serde_json::to_writer(&mut self.out, c).map_err(io::Error::other));
            self.keep(r);
        }
    }

    fn unresolved(&mut self, members: &[Unresolved]) {
        if members.is_empty() || self.error.is_some() {
            return;
        }
        if self.spool.is_none() {
            match tempfile::tempfile() {
                Ok(f) => self.spool = Some(io::BufWriter::new(f)),
                Err(e) => return self.keep(Err(e)),
            }
        }
        let Some(spool) = self.spool.as_mut() else {
            return;
        };
        let mut r = Ok(());
        for u in members {
            r = serde_json::to_writer(&mut *spool, u)
                .map_err(io::Error::other)
                .and_then(|_| spool.write_all(b"\n"));
            if r.is_err() {
                break;
            }
            self.spooled += 1;
        }
        self.keep(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::types::Op;

    fn change(id: &str) -> Change {
        Change {
            cloud_id: id.into(),
            rule: Some("r.rhai".into()),
            op: Op::Create {
                cloud: Default::default(),
                links: Default::default(),
                dn: format!("CN={id},OU=G"),
                attributes: BTreeMap::new(),
                members: vec![],
            },
        }
    }

    fn unresolved(group: &str, member: &str) -> Unresolved {
        Unresolved {
            group_id: group.into(),
            member_id: member.into(),
            member_type: "user".into(),
            reason: "cloud-only user".into(),
        }
    }

    #[test]
    fn the_json_stream_is_one_report_document_with_every_change_and_member() -> anyhow::Result<()> {
        let mut buf = Vec::new();
        let mut s = JsonStream::new(&mut buf)?;
        s.changes(&[change("a"), change("b")], &[], &[]);
        s.unresolved(&[unresolved("a", "u1")]);
        s.changes(&[change("c")], &[], &[]);
        s.unresolved(&[unresolved("c", "u2"), unresolved("c", "u3")]);
        let report = SyncReport {
            sweep: super::super::select::SweepKind::All(super::super::select::AllReason::FirstSync),
            evaluated: 3,
            ..Default::default()
        };
        s.finish(&report)?;
        let v: serde_json::Value = serde_json::from_slice(&buf)?;
        let ids: Vec<&str> = v["plan"]["changes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["cloud_id"].as_str())
            .collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(v["plan"]["changes"][0]["action"], "create");
        let members: Vec<&str> = v["plan"]["unresolved_members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| u["member_id"].as_str())
            .collect();
        assert_eq!(members, ["u1", "u2", "u3"]);
        assert_eq!(v["plan"]["refused"], serde_json::json!([]));
        assert_eq!(v["sweep"], "first sync");
        assert_eq!(v["evaluated"], 3);
        Ok(())
    }

    #[test]
    fn an_empty_json_stream_is_still_a_whole_report() -> anyhow::Result<()> {
        let mut buf = Vec::new();
        JsonStream::new(&mut buf)?.finish(&SyncReport::default())?;
        let v: serde_json::Value = serde_json::from_slice(&buf)?;
        assert_eq!(v["plan"]["changes"], serde_json::json!([]));
        assert_eq!(v["plan"]["unresolved_members"], serde_json::json!([]));
        assert!(v.get("outcomes").is_some(), "{v}");
        Ok(())
    }

    #[test]
    fn the_text_stream_prints_changes_as_they_come_and_counts_members_per_reason(
    ) -> anyhow::Result<()> {
        let mut buf = Vec::new();
        let mut s = TextStream::new(&mut buf);
        s.changes(&[change("a")], &[], &[]);
        let many: Vec<Unresolved> = (0..50).map(|i| unresolved("a", &format!("u{i}"))).collect();
        s.unresolved(&many);
        let report = SyncReport {
            counts: crate::sync::types::PlanCounts {
                create: 1,
                unresolved_members: 50,
                ..Default::default()
            },
            ..Default::default()
        };
        s.finish(&report, false)?;
        let text = String::from_utf8(buf)?;
        assert!(text.starts_with("+ create CN=a,OU=G  [r.rhai]"), "{text}");
        assert!(text.contains("50"), "{text}");
        assert!(text.contains("1 to create"), "{text}");
        assert!(!text.contains("u45"), "only examples are listed: {text}");
        Ok(())
    }
}

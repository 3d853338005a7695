//! The text `writeback test` prints: one line per case, the differences under a failed case,
//! and `N passed, M failed` alone on the last line.
//!
//! ```text
//! ok      scripts/tests/security.toml:4: security group
//! FAILED  scripts/tests/security.toml:19: long display name
//!             cn: expected "A_123" got "A_1234"
//! FAILED  scripts/tests/broken.toml:7:1: unknown field `expectt`, expected one of ...
//!
//! 1 passed, 2 failed
//! ```

use std::fmt::Write;

use super::TestReport;

pub fn render(report: &TestReport) -> String {
    let mut out = String::new();
    if report.files.is_empty() {
        let _ = writeln!(out, "no test files (*.toml) in {}", report.folder.display());
    }
    for file in &report.files {
        match &file.outcome {
            Err(diagnostic) => {
                let _ = writeln!(out, "FAILED  {diagnostic}");
            }
            Ok(cases) => {
                for case in cases {
                    let status = if case.passed() { "ok    " } else { "FAILED" };
                    let _ = writeln!(
                        out,
                        "{status}  {}:{}: {}",
                        file.path.display(),
                        case.line,
                        case.name
                    );
                    for m in &case.mismatches {
                        let _ = writeln!(
                            out,
                            "            {}: expected {} got {}",
                            m.field, m.expected, m.actual
                        );
                    }
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "\n{} passed, {} failed",
        report.passed(),
        report.failed()
    );
    out
}

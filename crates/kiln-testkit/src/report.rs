//! Per-case results of a parity run, printable as one line per case and a
//! closing "N passed, M failed" line.

use std::fmt;

/// The outcome of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub op: String,
    pub case: String,
    /// `Err` holds the full failure summary.
    pub outcome: Result<(), String>,
}

/// Results of one or more drivers, with the seed that reproduces them.
#[derive(Debug, Clone)]
pub struct Report {
    pub seed: u64,
    pub results: Vec<CaseResult>,
    /// Cases not run (e.g. large cases in quick mode).
    pub skipped: usize,
}

impl Report {
    pub fn new(seed: u64) -> Self {
        Report {
            seed,
            results: Vec::new(),
            skipped: 0,
        }
    }

    pub fn push(&mut self, op: &str, case: &str, outcome: Result<(), String>) {
        self.results.push(CaseResult {
            op: op.to_string(),
            case: case.to_string(),
            outcome,
        });
    }

    /// Append another report's results (e.g. one per op family).
    pub fn merge(&mut self, other: Report) {
        self.results.extend(other.results);
        self.skipped += other.skipped;
    }

    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.outcome.is_ok()).count()
    }

    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }

    pub fn is_ok(&self) -> bool {
        self.failed() == 0
    }

    /// The failing cases only.
    pub fn failures(&self) -> impl Iterator<Item = &CaseResult> {
        self.results.iter().filter(|r| r.outcome.is_err())
    }

    /// One line: `N passed, M failed` (`, K skipped` when some were).
    pub fn summary(&self) -> String {
        let mut s = format!("{} passed, {} failed", self.passed(), self.failed());
        if self.skipped > 0 {
            s += &format!(", {} skipped", self.skipped);
        }
        s
    }

    /// `Ok` when every case passed, else `Err` with the whole report (for tests:
    /// `report.into_result().unwrap()` prints every failure and the seed).
    pub fn into_result(self) -> Result<(), String> {
        if self.is_ok() {
            Ok(())
        } else {
            Err(self.to_string())
        }
    }
}

impl fmt::Display for Report {
    /// `op case: ok` / `op case: FAIL: why` lines, then the seed and summary.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.results {
            match &r.outcome {
                Ok(()) => writeln!(f, "{} {}: ok", r.op, r.case)?,
                Err(e) => writeln!(f, "{} {}: FAIL: {e}", r.op, r.case)?,
            }
        }
        if !self.is_ok() {
            writeln!(
                f,
                "seed {} (rerun with {}={})",
                self.seed,
                crate::rng::SEED_ENV,
                self.seed
            )?;
        }
        write!(f, "{}", self.summary())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn counts_and_prints() {
        let mut r = Report::new(9);
        r.push("add", "n=1", Ok(()));
        let mut s = Report::new(9);
        s.push("add", "n=7", Err("bad".into()));
        r.merge(s);
        assert_eq!((r.passed(), r.failed()), (1, 1));
        let text = r.to_string();
        assert!(text.contains("add n=1: ok\nadd n=7: FAIL: bad\n"), "{text}");
        assert!(
            text.contains("KILN_TEST_SEED=9") && text.ends_with("1 passed, 1 failed"),
            "{text}"
        );
        assert!(r.into_result().is_err());
    }
}

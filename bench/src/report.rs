//! One benchmark's result: a line for people, a JSON object for tools.

use serde::Serialize;
use serde_json::Value;

/// What a benchmark measured, next to its baseline.
#[derive(Debug, Serialize)]
pub struct Outcome {
    /// The benchmark's name (`webhook`, `engine`, …).
    pub name: &'static str,
    /// The figure, as people read it (`ack p99 9.1 ms, p50 3.0 ms`).
    pub figure: String,
    /// The baseline measured in the same run (`healthz p99 4.2 ms`).
    pub baseline: String,
    /// The figure over the baseline (`2.2x`); several when there are several figures.
    pub ratio: String,
    /// The target.
    pub target: String,
    /// Whether every part of the target is met.
    pub met: bool,
    /// The numbers behind the line.
    pub values: Value,
}

impl Outcome {
    pub fn print(&self, json: bool) {
        if json {
            println!("{}", serde_json::to_string(self).unwrap_or_default());
        } else {
            let verdict = if self.met { "met" } else { "NOT met" };
            println!(
                "{:<14} {} | {} | {} | target {} ({verdict})",
                self.name, self.figure, self.baseline, self.ratio, self.target
            );
        }
    }
}

/// `figure / baseline`, as `2.20x`.
pub fn ratio(figure: f64, baseline: f64) -> f64 {
    if baseline == 0.0 {
        f64::INFINITY
    } else {
        figure / baseline
    }
}

/// The median of `values` (sorted in place); 0 when empty.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

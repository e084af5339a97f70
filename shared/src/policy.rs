//! Deploy windows and freezes (stub; being written).

use jiff::Timestamp;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Window {}

#[derive(Debug, Clone, Deserialize)]
pub struct Freeze {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Open,
    Held { reason: String, until: Option<Timestamp> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

pub fn validate(_timezone: Option<&str>, _windows: &[Window], _freezes: &[Freeze]) -> Result<(), Problem> {
    Ok(())
}

pub fn verdict(_timezone: Option<&str>, _windows: &[Window], _freezes: &[Freeze], _now: Timestamp) -> Verdict {
    Verdict::Open
}

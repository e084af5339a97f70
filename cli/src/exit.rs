//! Exit codes: one per kind of failure, so scripts can tell "the deploy failed" from "the
//! configuration is wrong" from "slipway could not reach its store". Documented in
//! `docs/cli.md`; `tests::exit_codes` holds them.
//!
//! A command returns `anyhow::Result`; to pick a code other than 1 it returns (or wraps) a
//! [`Failure`], e.g. `return Err(Failure::refused("production is frozen until …").into())`,
//! or `.map_err(|e| Failure::unavailable(e))` keeps the cause. `main` looks for the first
//! `Failure` in the error's chain.

#![allow(dead_code)] // the constructors are used as commands adopt them (issue 14)

use std::fmt;
use std::process::ExitCode;

/// What went wrong, as a script reacts to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// 1: anything not below (a bug, an I/O error on this machine).
    Other,
    /// 2: the command line is wrong (clap's own code for usage errors).
    Usage,
    /// 3: the configuration or secrets file is missing or invalid.
    Config,
    /// 4: the run, pipeline, environment or release named does not exist.
    NotFound,
    /// 5: slipway refused: a freeze, a window, a lease held, nothing to roll back, `--yes`
    /// missing, a signature or token the server rejected.
    Refused,
    /// 6: what was asked ran and failed: a deploy phase, smoke checks, a run not released.
    Failed,
    /// 7: the store, queue, parameter store or server could not be reached.
    Unavailable,
}

impl Kind {
    pub(crate) fn code(self) -> u8 {
        match self {
            Kind::Other => 1,
            Kind::Usage => 2,
            Kind::Config => 3,
            Kind::NotFound => 4,
            Kind::Refused => 5,
            Kind::Failed => 6,
            Kind::Unavailable => 7,
        }
    }
}

impl From<Kind> for ExitCode {
    fn from(kind: Kind) -> Self {
        ExitCode::from(kind.code())
    }
}

/// An error that says which exit code it ends the command with.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) kind: Kind,
    message: String,
    source: Option<anyhow::Error>,
}

impl Failure {
    pub(crate) fn new(kind: Kind, message: impl fmt::Display) -> Self {
        Self {
            kind,
            message: message.to_string(),
            source: None,
        }
    }
    /// Keeps `cause` as the source, so `error: …  caused by: …` still prints it.
    pub(crate) fn because(kind: Kind, message: impl fmt::Display, cause: impl Into<anyhow::Error>) -> Self {
        Self {
            kind,
            message: message.to_string(),
            source: Some(cause.into()),
        }
    }
    pub(crate) fn config(message: impl fmt::Display) -> Self {
        Self::new(Kind::Config, message)
    }
    pub(crate) fn not_found(message: impl fmt::Display) -> Self {
        Self::new(Kind::NotFound, message)
    }
    pub(crate) fn refused(message: impl fmt::Display) -> Self {
        Self::new(Kind::Refused, message)
    }
    pub(crate) fn failed(message: impl fmt::Display) -> Self {
        Self::new(Kind::Failed, message)
    }
    pub(crate) fn unavailable(message: impl fmt::Display, cause: impl Into<anyhow::Error>) -> Self {
        Self::because(Kind::Unavailable, message, cause)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e.as_ref() as _)
    }
}

/// The kind of the first [`Failure`] in `error`'s chain; [`Kind::Other`] without one.
pub(crate) fn kind_of(error: &anyhow::Error) -> Kind {
    error
        .chain()
        .find_map(|cause| cause.downcast_ref::<Failure>())
        .map_or(Kind::Other, |f| f.kind)
}

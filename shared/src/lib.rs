//! slipway: a continuous-delivery pipeline as small event-driven functions.
//!
//! The [`domain`] is a pure state machine; [`ports`] name what it needs from the world in
//! slipway's own words; `adapters` implement those ports (embedded SQLite, in memory, and —
//! later — AWS); [`http`] is the one router every front end serves; [`handlers`] process
//! queue messages.

pub mod adapters;
pub mod app;
pub mod approvals;
pub mod cloud;
pub mod config;
pub mod domain;
pub mod embedded;
pub mod handlers;
pub mod http;
pub mod lambda;
pub mod manual_deploy;
pub mod metrics;
pub mod open_runs;
pub mod policy;
pub mod ports;
pub mod providers;
pub mod samples;
pub mod server;
pub mod signature;
pub mod smoke;
pub mod sweep;
pub mod telemetry;
pub mod trackers;
pub mod views;
pub mod worker;

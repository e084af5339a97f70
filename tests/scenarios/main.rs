//! slipway's scenario tests, one module per file, in one test binary (see tests/Cargo.toml).
//! `scripts/test approvals::` runs the tests of `approvals.rs` only.

mod approvals;
mod at_least_once;
mod aws_green_path;
mod aws_health;
mod aws_requests;
mod aws_s3;
mod aws_sqs;
mod aws_ssm;
mod aws_targets;
mod control_room;
mod embedded;
mod git_order;
mod green_path;
mod hardening;
mod hosts;
mod lambda;
mod links;
mod manual_deploy;
mod metrics;
mod read_model;
mod releases;
mod rollback_link;
mod rotation;
mod safe_deploys;
mod schema;
mod stops;
mod trackers;
mod upgrade;
mod webhooks;
mod workers;

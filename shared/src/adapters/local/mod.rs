//! The embedded backend: everything in one SQLite file in the data directory, secrets in a
//! local TOML file. No cloud, no Docker.

pub mod secrets_file;
pub mod sqlite;

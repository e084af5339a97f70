//! `slipway deploy`: an environment's phases run from this machine, recorded as the
//! caller's manual release; freezes, `--yes`, `--phases` and failures, with their exit codes.

use std::path::PathBuf;

use serde_json::Value;
use tempfile::TempDir;

use crate::common::{Out, command, finish, toml_str, write_file};

const SHA: &str = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";
const TOKEN: &str = "deploy-token-51c0e2";

/// Every phase says what it does (with the secret, which must come out masked) and notes
/// itself in `$OUT/phases`; the migrate phase fails while `$OUT/fail` exists.
const SCRIPT: &str = r#"#!/bin/sh
set -eu
echo "$SLIPWAY_PHASE $SLIPWAY_SHA to $SLIPWAY_ENV as $SLIPWAY_RUN with $DEPLOY_TOKEN"
echo "$SLIPWAY_PHASE" >> "$OUT/phases"
if [ "$SLIPWAY_PHASE" = migrate ] && [ -e "$OUT/fail" ]; then
  echo "applying 0042_orders.sql"
  echo "ERROR: relation orders already exists"
  exit 1
fi
"#;

struct Site {
    dir: TempDir,
}

impl Site {
    fn new(production_extra: &str) -> Site {
        let dir = TempDir::new().unwrap();
        let site = Site { dir };
        write_file(&site.path("deploy.sh"), SCRIPT, 0o755);
        let target = format!(
            r#"{{ type = "command", command = [{s}], backup = [{s}], migrate = [{s}], timeout = "20s", env = {{ OUT = {out} }}, secrets = {{ DEPLOY_TOKEN = "/slipway/hello/deploy-token" }} }}"#,
            s = toml_str(site.path("deploy.sh").to_string_lossy()),
            out = toml_str(site.dir.path().to_string_lossy()),
        );
        let config = format!(
            "{}\n[[pipelines.environments]]\nname = \"production\"\ndeploy = {target}\n{production_extra}\n",
            crate::common::hello_config(&target)
        );
        write_file(&site.path("slipway.toml"), &config, 0o644);
        let secrets = format!(
            "{}\"/slipway/hello/deploy-token\" = \"{TOKEN}\"\n",
            crate::common::HELLO_SECRETS
        );
        write_file(&site.path("slipway.secrets.toml"), &secrets, 0o600);
        site
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The phases the script ran, in order.
    fn phases(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("phases"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// `slipway deploy --sha SHA --by alice <args>` on this site.
    async fn deploy(&self, args: &[&str]) -> Out {
        let mut cmd = command();
        cmd.current_dir(self.dir.path())
            .args(["deploy", "--sha", SHA, "--by", "alice", "--data-dir", "data"])
            .args(args);
        finish(cmd).await
    }

    /// The environment's record, as slipway stored it.
    async fn record(&self, env: &str) -> Value {
        let paths = slipway::embedded::Paths {
            config: self.path("slipway.toml"),
            secrets: self.path("slipway.secrets.toml"),
            data_dir: self.path("data"),
        };
        let app = slipway::embedded::open(&paths, None, "http://127.0.0.1:8080".parse().unwrap())
            .await
            .unwrap();
        let (record, _) = app
            .environment(
                &slipway::domain::PipelineName::parse("hello").unwrap(),
                &slipway::domain::EnvName::parse(env).unwrap(),
            )
            .await
            .unwrap();
        serde_json::to_value(record).unwrap()
    }
}

fn code(out: &Out) -> i32 {
    out.status.code().unwrap()
}

#[tokio::test]
async fn deploy_runs_the_phases_here_and_records_a_manual_release_by_the_caller() {
    let site = Site::new("");
    let out = site.deploy(&["--env", "staging", "--json"]).await.success();
    assert_eq!(site.phases(), ["backup", "migrate", "release"]);
    let doc: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(doc["result"], "succeeded", "{doc:#}");
    assert_eq!(
        (&doc["env"], &doc["sha"], &doc["by"]),
        (&"staging".into(), &SHA.into(), &"alice".into())
    );
    assert_eq!(doc["released"], true);
    let output = doc["output"].as_str().unwrap();
    assert!(
        output.contains(&format!("release {SHA} to staging as hello-{SHA} with ***")),
        "{output}"
    );
    assert!(
        !out.stdout.contains(TOKEN) && !out.stderr.contains(TOKEN),
        "the secret leaked: {out}"
    );

    let record = site.record("staging").await;
    let manual = &record["manual"][0];
    assert_eq!(
        (&manual["by"], &manual["sha"]),
        (&"alice".into(), &SHA.into()),
        "{record:#}"
    );
    assert!(
        record.get("operator").is_none(),
        "the operator lease was given up: {record:#}"
    );

    // Without --json, a line per phase and the manual release at the end.
    let out = site
        .deploy(&["--env", "staging", "--phases", "release"])
        .await
        .success();
    out.stdout_has(&[
        "staging: release done",
        &format!("manual release of {} by alice", &SHA[..12]),
    ]);
}

#[tokio::test]
async fn production_needs_yes_and_a_freeze_refuses_saying_until_when() {
    let frozen = r#"freezes = [{ from = "2000-01-01", to = "2999-12-31", reason = "year-end audit" }]"#;
    let site = Site::new(frozen);
    let out = site.deploy(&["--env", "production"]).await.failure();
    assert_eq!(code(&out), 5, "{out}");
    out.stderr_has(&["needs --yes", "nothing was deployed"]);

    let out = site.deploy(&["--env", "production", "--yes"]).await.failure();
    assert_eq!(code(&out), 5, "{out}");
    out.stderr_has(&["year-end audit", "until"]);
    assert!(site.phases().is_empty(), "nothing ran: {:?}", site.phases());
}

#[tokio::test]
async fn phases_restricts_what_runs_and_a_failed_phase_exits_6_with_its_last_lines() {
    let site = Site::new("");
    site.deploy(&["--env", "staging", "--phases", "migrate,backup"])
        .await
        .success();
    assert_eq!(site.phases(), ["backup", "migrate"]);

    let out = site
        .deploy(&["--env", "staging", "--phases", "backup,deploy"])
        .await
        .failure();
    assert_eq!(code(&out), 2, "{out}");
    out.stderr_has(&["unknown phase \"deploy\""]);

    write_file(&site.path("fail"), "", 0o644);
    let out = site.deploy(&["--env", "staging"]).await.failure();
    assert_eq!(code(&out), 6, "{out}");
    out.stderr_has(&["migrate failed", "ERROR: relation orders already exists"]);
    assert_eq!(site.phases()[2..], ["backup", "migrate"], "release never ran");
    let record = site.record("staging").await;
    let last = record["manual"].as_array().unwrap().last().unwrap().clone();
    assert!(
        last["failed"].as_str().unwrap().contains("migrate failed"),
        "{record:#}"
    );
}

//! `slipway init`: the newcomer's path, run exactly as `init` prints it — serve, the push, the
//! CI line — on a clean directory, up to an approval link that opens.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;
use tempfile::TempDir;

use crate::common::{STEP_TIMEOUT, command, eventually, finish, slipway};

/// A port free on loopback right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The numbered commands `init` printed (`  1. slipway …`), split as a shell would.
fn printed_commands(stdout: &str) -> Vec<Vec<String>> {
    let commands: Vec<Vec<String>> = stdout
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let (number, rest) = l.split_once(". ")?;
            number.parse::<u8>().ok()?;
            Some(shlex::split(rest).unwrap_or_else(|| panic!("not a shell command line: {rest}")))
        })
        .collect();
    assert_eq!(commands.len(), 3, "three commands:\n{stdout}");
    for c in &commands {
        assert_eq!(c[0], "slipway", "{c:?}");
    }
    commands
}

/// Kills the sample apps the release scripts started (their pids are in envs/*/app.pid).
struct SampleApps(PathBuf);

impl Drop for SampleApps {
    fn drop(&mut self) {
        for env in ["staging", "production"] {
            if let Ok(pid) = std::fs::read_to_string(self.0.join("envs").join(env).join("app.pid")) {
                let _ = std::process::Command::new("kill").arg(pid.trim()).status();
            }
        }
    }
}

fn notices(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("notifications.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_then_the_printed_commands_reach_an_approval_link() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("project");
    let listen = format!("127.0.0.1:{}", free_port());
    let out = slipway(["init".as_ref(), dir.as_os_str(), "--listen".as_ref(), listen.as_ref()])
        .await
        .success();
    let _apps = SampleApps(dir.clone());
    let commands = printed_commands(&out.stdout);

    // 1: slipway serve, as printed (it listens where --listen said).
    let log = tmp.path().join("serve.log");
    let mut serve = command();
    serve
        .args(&commands[0][1..])
        .current_dir(tmp.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut serve = serve.spawn().unwrap();
    let base = format!("http://{listen}");
    let client = reqwest::Client::new();
    eventually("slipway serve to answer /healthz", STEP_TIMEOUT, || {
        if let Ok(Some(status)) = serve.try_wait() {
            panic!(
                "serve exited with {status}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        let (client, base) = (&client, &base);
        async move {
            let answer = client.get(format!("{base}/healthz")).send().await.ok()?;
            answer.status().is_success().then_some(())
        }
    })
    .await;

    // 2: the push, 3: CI reports green — each exactly as printed.
    for (i, expected) in [(1, "201"), (2, "200")] {
        let mut cmd = command();
        cmd.args(&commands[i][1..]).current_dir(tmp.path());
        let out = finish(cmd).await.success();
        out.stdout_has(&[expected]);
    }

    // Staging is deployed and smoke-checked against the sample app; production waits for the
    // approver, whose link is in the notifications file.
    let link = eventually(
        "an approval link in notifications.jsonl",
        std::time::Duration::from_secs(40),
        || async {
            notices(&dir)
                .into_iter()
                .find(|n| n["kind"] == "approval_requested")
                .and_then(|n| n["approve_url"].as_str().map(str::to_owned))
        },
    )
    .await;
    assert!(link.starts_with(&base), "{link} points at {base}");
    let page = client.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200, "{link}");
    assert!(page.text().await.unwrap().contains("production"));

    // The staging app runs the pushed commit on the migrated database.
    let push: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("events/push.json")).unwrap()).unwrap();
    let sha = push["after"].as_str().unwrap();
    let config = std::fs::read_to_string(dir.join("slipway.toml")).unwrap();
    let staging = config
        .lines()
        .find_map(|l| l.strip_prefix("url = \"").and_then(|u| u.strip_suffix('"')))
        .unwrap();
    let health: Value = client.get(staging).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        (health["version"].as_str(), health["database"].as_str()),
        (Some(sha), Some("ok"))
    );

    let _ = serve.start_kill();
    let _ = serve.wait().await;
}

#[tokio::test]
async fn init_writes_fresh_private_secrets_and_refuses_to_overwrite() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    slipway(["init".as_ref(), dir.as_os_str()]).await.success();

    let secrets_path = dir.join("slipway.secrets.toml");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secrets_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the secrets file is private: {mode:o}");
    }
    let secrets: toml::Table = std::fs::read_to_string(&secrets_path).unwrap().parse().unwrap();
    let values: Vec<&str> = secrets.values().map(|v| v.as_str().unwrap()).collect();
    assert!(values.len() >= 5, "{secrets:?}");
    for v in &values {
        assert!(
            v.len() == 64 && v.chars().all(|c| c.is_ascii_hexdigit()),
            "32 random bytes: {v}"
        );
    }
    let mut distinct = values.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), values.len(), "every secret is its own");

    // Every parameter the configuration names is in the secrets file, and it validates.
    let config = slipway::config::Config::load(&dir.join("slipway.toml")).unwrap();
    let pipeline = &config.pipelines[0];
    assert_eq!(
        (pipeline.name.as_str(), pipeline.repo.as_str(), pipeline.branch.as_str()),
        ("shop", "acme/shop", "main")
    );
    for name in pipeline.secret_params() {
        assert!(secrets.contains_key(name.as_str()), "{name} missing");
    }
    assert!(secrets.contains_key(config.github.unwrap().webhook_secret.as_str()));
    let plan = pipeline.plan();
    let gates: Vec<(&str, bool)> = plan
        .environments
        .iter()
        .map(|e| (e.name.as_str(), e.approval))
        .collect();
    assert_eq!(gates, [("staging", false), ("production", true)]);

    // A second init refuses, names what is there, and changes nothing.
    let before = std::fs::read_to_string(&secrets_path).unwrap();
    let out = slipway(["init".as_ref(), dir.as_os_str()]).await.failure();
    assert_eq!(out.status.code(), Some(5), "{out}");
    out.stderr_has(&["already holds", "slipway.toml", "slipway.secrets.toml", "--force"]);
    assert_eq!(std::fs::read_to_string(&secrets_path).unwrap(), before);

    // --force replaces them, with new secrets, still private.
    slipway(["init".as_ref(), dir.as_os_str(), "--force".as_ref()])
        .await
        .success();
    assert_ne!(std::fs::read_to_string(&secrets_path).unwrap(), before);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secrets_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}

#[tokio::test]
async fn init_for_gitlab_in_deployment_mode_writes_a_matching_gitlab_push() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let out = slipway([
        "init".as_ref(),
        dir.as_os_str(),
        "--host".as_ref(),
        "gitlab".as_ref(),
        "--mode".as_ref(),
        "deployment".as_ref(),
        "--repo".as_ref(),
        "group/Web_Shop".as_ref(),
        "--branch".as_ref(),
        "trunk".as_ref(),
    ])
    .await
    .success();
    let commands = printed_commands(&out.stdout);

    // --json says the same as one document.
    let again = slipway([
        "init".as_ref(),
        dir.as_os_str(),
        "--host".as_ref(),
        "gitlab".as_ref(),
        "--mode".as_ref(),
        "deployment".as_ref(),
        "--repo".as_ref(),
        "group/Web_Shop".as_ref(),
        "--branch".as_ref(),
        "trunk".as_ref(),
        "--force".as_ref(),
        "--json".as_ref(),
    ])
    .await
    .success();
    let answer: Value = serde_json::from_str(&again.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{again}"));
    assert_eq!(answer["pipeline"], "web-shop", "{answer:#}");
    let next: Vec<Vec<String>> = answer["next"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| shlex::split(c.as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(next.len(), 3);
    assert_eq!(next[1][..4], commands[1][..4], "{next:?}");
    let push_line = commands[1].join(" ");
    assert!(
        push_line.contains("--host gitlab")
            && push_line.contains("--event Push Hook")
            && push_line.contains("/hooks/gitlab"),
        "{push_line}"
    );

    let config = slipway::config::Config::load(&dir.join("slipway.toml")).unwrap();
    assert!(config.github.is_none() && config.gitlab.is_some());
    let pipeline = &config.pipelines[0];
    assert_eq!(pipeline.name.as_str(), "web-shop");
    assert!(
        pipeline.plan().environments.iter().all(|e| !e.approval),
        "no approval gate"
    );

    let body = std::fs::read(dir.join("events/push.json")).unwrap();
    let slipway::providers::HostEvent::Push(push) =
        slipway::providers::gitlab::parse(Some("Push Hook"), &body).unwrap()
    else {
        panic!("not a push")
    };
    assert_eq!(push.repo.as_str(), "group/Web_Shop");
    assert_eq!(
        push.git_ref,
        slipway::providers::GitRef::Branch("trunk".parse().unwrap())
    );
    let ci: Value = serde_json::from_slice(&std::fs::read(dir.join("events/ci.json")).unwrap()).unwrap();
    assert_eq!(ci["sha"].as_str(), push.after.as_ref().map(|s| s.as_str()));
}

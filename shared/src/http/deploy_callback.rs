//! `POST /hooks/deploy`: a `webhook` deploy target reports that a phase it accepted has ended.
//!
//! The receiver of slipway's deploy request answered `{"status":"accepted"}` without a
//! `status_url`; when the phase ends it POSTs here (slipway's public URL + `/hooks/deploy`,
//! the request's `callback_path`):
//!
//! ```json
//! {"run":"shop-a1b2…","env":"production","phase":"release","rolling_back":null,"attempt":null,
//!  "status":"succeeded","reference":"v42","output":"…","reason":null}
//! ```
//!
//! `run`, `env`, `phase` and `rolling_back` are the request's: `rolling_back` is `null` (or
//! left out) for a deploy and names the run rolling back for a rollback (`"stage":"rollback"`),
//! which may redeploy an earlier run's release — the same `run`, `env` and `phase` as that
//! run's own deploy; `attempt` is the request's too (left out, the first rollback). `status` is `succeeded`, `skipped` or `failed`; `reference`, `output` and
//! `reason` are optional (`reference`: one line of at most 1024 bytes). The body is signed like the
//! request, `X-Slipway-Signature: sha256=<hex HMAC-SHA256 of the raw body>`, with the
//! environment's webhook `secret`.
//!
//! The signature is checked over the raw bytes, in constant time, against the secret of every
//! environment that deploys through a webhook, before the body is parsed; the body must then
//! name a run whose environment uses one of the secrets that matched (and, for a rollback, a
//! `rolling_back` run that exists). The callback is stored under
//! `deploy-callbacks/<run>/<env>/<phase>.json` (a deploy) or
//! `deploy-callbacks/<run>/<env>/<phase>.rollback.<rolling_back>[.<attempt>].json` (a rollback;
//! the attempt only from the second on), where the
//! waiting target finds it ([`crate::adapters::webhook_target`]). Only the first callback for a
//! phase counts.
//!
//! | answer | when |
//! |---|---|
//! | 202 `{"status":"stored",…}` | stored; the deploy goes on within one `poll_interval` |
//! | 200 `{"status":"duplicate",…}` | the same callback was already stored (a redelivery) |
//! | 400 | the body is not the callback JSON, or `status` is not succeeded/skipped/failed |
//! | 401 | missing or wrong signature; nothing is stored |
//! | 404 | no environment deploys through a webhook at all (answered before the signature is looked at, as for the other hooks that are not configured); no such run (or `rolling_back` run), or its environment does not deploy through a webhook |
//! | 409 | a different callback for this phase was already stored; the first one stands |
//! | 413 | the body is over 1 MiB |
//! | 503 | the state store or the secret store is unavailable; retry |

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::ApiError;
use super::hooks::header;
use crate::adapters::webhook_target::{DeployCallback, SIGNATURE_HEADER};
use crate::app::{App, EngineError};
use crate::config::{DeployTargetConfig, PreviousSecret};
use crate::domain::{ParamName, RunId};
use crate::ports::{StoreError, StoreKey};
use crate::signature;

/// Receives one signed deploy callback. See the [module docs](self).
pub async fn receive(State(app): State<Arc<App>>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    match store_callback(&app, &headers, body).await {
        Ok(answer) => answer,
        Err(e) => e.into_response(),
    }
}

async fn store_callback(
    app: &App,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = super::webhook_body(body)?;
    // Every webhook target's secret (and the one it is rotating out), each read once: the
    // body is not trusted to say which.
    let params: BTreeSet<Keys> = app
        .config
        .pipelines
        .iter()
        .flat_map(|p| &p.environments)
        .filter_map(|e| keys(&e.deploy))
        .collect();
    if params.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no environment deploys through a webhook target (deploy = { type = \"webhook\", … })",
        ));
    }
    // Checked once a webhook target exists: without one, this hook is not configured (404).
    let Some(sig) = header(headers, SIGNATURE_HEADER) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing X-Slipway-Signature header: sign the body with the environment's webhook deploy secret (sha256=<hex HMAC>)",
        ));
    };
    let mut signed_with: Vec<Keys> = Vec::new();
    let now = app.clock.now();
    for param in params {
        let secrets = match app.rotation(param.0, param.1).await {
            Ok(s) => s,
            Err(EngineError::MissingSecret(name)) => {
                tracing::error!(%name, "webhook deploy secret missing; callbacks signed with it are refused");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if secrets
            .check("webhook deploy secret", now, |secret| {
                signature::verify(secret.as_bytes(), Some(sig), &body)
            })
            .is_ok()
        {
            signed_with.push(param);
        }
    }
    if signed_with.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "X-Slipway-Signature does not match the body under any webhook deploy secret; nothing was stored",
        ));
    }

    let callback: DeployCallback = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "expected {{\"run\", \"env\", \"phase\": \"backup|migrate|release|restore\", \"rolling_back\"?, \"status\": \"succeeded|skipped|failed\", \"reference\"?, \"output\"?, \"reason\"?}}: {}",
                crate::domain::clip_quoted(&e.to_string())
            ),
        )
    })?;
    if callback
        .reference
        .as_ref()
        .is_some_and(|r| r.len() > 1024 || r.chars().any(char::is_control))
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "reference must be one line of at most 1024 bytes",
        ));
    }

    let Some((run, _)) = app.load(&callback.run).await? else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no run {}", callback.run)));
    };
    if let Some(rolling_back) = &callback.rolling_back
        && app.load(rolling_back).await?.is_none()
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no run {rolling_back} (rolling_back)"),
        ));
    }
    let Some(environment) = app.pipeline_of(&run).and_then(|p| p.environment(&callback.env)) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("run {} has no environment {}", run.id, callback.env),
        ));
    };
    let Some(secret) = keys(&environment.deploy) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "environment {} deploys through a {} target, not a webhook",
                callback.env,
                environment.deploy.kind()
            ),
        ));
    };
    if !signed_with.contains(&secret) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!(
                "X-Slipway-Signature was made with another environment's secret, not {}'s; nothing was stored",
                callback.env
            ),
        ));
    }

    let purpose = callback.purpose();
    let rolling_back = purpose.rolling_back();
    let key = StoreKey::deploy_callback(&callback.run, &callback.env, callback.phase, purpose);
    let record = serde_json::to_vec(&callback).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the callback could not be encoded: {e}"),
        )
    })?;
    let record = Bytes::from(record);
    let what = json!({
        "run_id": callback.run, "env": callback.env, "phase": callback.phase,
        "rolling_back": rolling_back, "attempt": purpose.attempt(),
    });
    let rolling_back = rolling_back.map(RunId::as_str);
    match app.store.create(&key, record.clone()).await {
        Ok(_) => {
            tracing::info!(run = %callback.run, env = %callback.env, phase = %callback.phase, rolling_back, status = ?callback.status, "deploy callback stored");
            Ok((StatusCode::ACCEPTED, Json(with_status(what, "stored"))).into_response())
        }
        Err(StoreError::AlreadyExists(_)) => match app.store.get(&key).await.map_err(EngineError::from)? {
            Some(stored) if stored.value == record => {
                tracing::info!(run = %callback.run, env = %callback.env, phase = %callback.phase, rolling_back, "deploy callback redelivered");
                Ok((StatusCode::OK, Json(with_status(what, "duplicate"))).into_response())
            }
            Some(_) => Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "a different callback for the {} phase of run {} in {}{} was already received; the first one stands",
                    callback.phase,
                    callback.run,
                    callback.env,
                    rolling_back
                        .map(|by| format!(" (rollback of {by})"))
                        .unwrap_or_default()
                ),
            )),
            // Created and gone again: nothing deletes callbacks, so the store is misbehaving.
            None => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the state store answered inconsistently; nothing was changed — retry shortly",
            )),
        },
        Err(e) => Err(EngineError::from(e).into()),
    }
}

/// A webhook target's secret and the one it is rotating out, if any.
type Keys<'a> = (&'a ParamName, Option<&'a PreviousSecret>);

fn keys(target: &DeployTargetConfig) -> Option<Keys<'_>> {
    match target {
        DeployTargetConfig::Webhook {
            secret,
            previous_secret,
            ..
        } => Some((secret, previous_secret.as_ref())),
        _ => None,
    }
}

fn with_status(mut what: serde_json::Value, status: &str) -> serde_json::Value {
    if let Some(map) = what.as_object_mut() {
        map.insert("status".into(), status.into());
    }
    what
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use secrecy::SecretString;
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;
    use crate::adapters::memory::{
        FakeDeployTarget, FakeHealth, FakeHttpChecker, Fault, ManualClock, MemoryQueue, MemorySecrets, MemoryStore,
        RecordingNotifier,
    };
    use crate::adapters::webhook_target::{Finished, Pacing, WebhookTarget};
    use crate::app::Tuning;
    use crate::config::Config;
    use crate::domain::{BranchName, CommitInfo, CommitSha, EnvName, NewRun, Phase, RunId};
    use crate::ports::{DeployRequest, DeployTarget, StateStore};

    const SECRET: &str = "deploy-hook-s3cr3t";
    const STAGING_SECRET: &str = "staging-hook-s3cr3t";
    const SHA: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678";

    fn config(deployer: &str) -> String {
        format!(
            r#"
public_url = "https://slipway.example.com"

[github]
webhook_secret = "/slipway/github/webhook-secret"

[approvals]
signing_key = "/slipway/approvals/signing-key"

[[pipelines]]
name = "shop"
repo = "acme/shop"
branch = "main"
mode = "deployment"
ci_secret = "/slipway/shop/ci-secret"

[[pipelines.environments]]
name = "staging"
deploy = {{ type = "webhook", url = "{deployer}", secret = "/slipway/shop/staging-hook" }}

[[pipelines.environments]]
name = "production"
deploy = {{ type = "webhook", url = "{deployer}", secret = "/slipway/shop/deploy-hook", poll_interval = "5ms" }}

[[pipelines.environments]]
name = "qa"
deploy = {{ type = "command", command = ["./deploy.sh"] }}
"#
        )
    }

    /// slipway over fakes, with one run of `SHA` open.
    struct Slipway {
        app: App,
        store: MemoryStore,
        secrets: MemorySecrets,
    }

    async fn slipway(deployer: &str) -> Slipway {
        let config = Config::parse(&config(deployer), Path::new("test.toml")).unwrap();
        let clock = ManualClock::new("2026-11-21T09:00:00Z".parse().unwrap());
        let store = MemoryStore::new();
        let secrets = MemorySecrets::new();
        secrets.set("/slipway/github/webhook-secret", "gh");
        secrets.set("/slipway/shop/ci-secret", "ci");
        secrets.set("/slipway/shop/deploy-hook", SECRET);
        secrets.set("/slipway/shop/staging-hook", STAGING_SECRET);
        let app = App {
            public_url: "https://slipway.example.com".parse().unwrap(),
            store: Arc::new(store.clone()),
            queue: Arc::new(MemoryQueue::new(Arc::new(clock.clone()))),
            secrets: Arc::new(secrets.clone()),
            clock: Arc::new(clock),
            notifiers: vec![Arc::new(RecordingNotifier::new())],
            deployer: Arc::new(FakeDeployTarget::new()),
            checker: Arc::new(FakeHttpChecker::new()),
            health: Arc::new(FakeHealth::new()),
            tuning: Tuning::default(),
            seen: Default::default(),
            release_log: Default::default(),
            shown_runs: Default::default(),
            config: Arc::new(config),
        };
        open(&app, SHA).await;
        Slipway { app, store, secrets }
    }

    /// Opens a run of `sha`.
    async fn open(app: &App, sha: &str) {
        let pipeline = &app.config.pipelines[0];
        app.open_run(NewRun {
            pipeline: pipeline.name.clone(),
            repo: pipeline.repo.clone(),
            branch: BranchName::parse("main").unwrap(),
            sha: CommitSha::parse(sha).unwrap(),
            commit: CommitInfo {
                message: "Add basket".into(),
                author_login: Some("dev".into()),
                author_name: "Dee Veloper".into(),
                author_email: None,
                url: None,
                pushed_by: "dev".into(),
            },
            plan: pipeline.plan(),
            parents: Vec::new(),
            carried: Default::default(),
        })
        .await
        .unwrap();
    }

    fn run_id() -> String {
        format!("shop-{SHA}")
    }

    fn callback(env: &str, status: &str) -> Vec<u8> {
        json!({"run": run_id(), "env": env, "phase": "release", "status": status, "reference": "v42", "output": "done"})
            .to_string()
            .into_bytes()
    }

    fn key(env: &str) -> StoreKey {
        StoreKey::deploy_callback(
            &RunId::parse(&run_id()).unwrap(),
            &EnvName::parse(env).unwrap(),
            Phase::Release,
            crate::ports::DeployPurpose::Deploy,
        )
    }

    async fn post(app: &App, body: &[u8], signature: Option<String>) -> (StatusCode, Value) {
        let mut request = Request::post("/hooks/deploy").header("content-type", "application/json");
        if let Some(signature) = signature {
            request = request.header("x-slipway-signature", signature);
        }
        let request = request.body(Body::from(body.to_vec())).unwrap();
        let response = crate::http::router(app.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

    async fn signed(app: &App, body: &[u8]) -> (StatusCode, Value) {
        post(app, body, Some(signature::sign(SECRET.as_bytes(), body))).await
    }

    #[tokio::test]
    async fn a_signed_callback_is_stored() {
        let s = slipway("https://deployer.example.com/slipway").await;
        let body = callback("production", "succeeded");
        let (status, answer) = signed(&s.app, &body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        assert_eq!(answer["status"], "stored");
        assert_eq!(answer["phase"], "release");
        let stored = s.store.get(&key("production")).await.unwrap().unwrap();
        let stored: DeployCallback = serde_json::from_slice(&stored.value).unwrap();
        assert_eq!(stored.status, Finished::Succeeded);
        assert_eq!(stored.reference.as_deref(), Some("v42"));
        assert_eq!(stored.output.as_deref(), Some("done"));
    }

    #[tokio::test]
    async fn a_flipped_byte_is_refused_and_nothing_is_stored() {
        let s = slipway("https://deployer.example.com/slipway").await;
        let writes = s.store.write_count();
        let body = callback("production", "succeeded");
        let signature = signature::sign(SECRET.as_bytes(), &body);
        let mut flipped = body.clone();
        let at = flipped.iter().position(|b| *b == b'v').unwrap();
        flipped[at] = b'w';
        let (status, answer) = post(&s.app, &flipped, Some(signature)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
        let (status, _) = post(&s.app, &body, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = post(&s.app, &body, Some(signature::sign(b"guess", &body))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(s.store.get(&key("production")).await.unwrap(), None);
        assert_eq!(s.store.write_count(), writes);
    }

    #[tokio::test]
    async fn another_environments_secret_does_not_speak_for_this_one() {
        let s = slipway("https://deployer.example.com/slipway").await;
        let body = callback("production", "succeeded");
        let (status, answer) = post(&s.app, &body, Some(signature::sign(STAGING_SECRET.as_bytes(), &body))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
        assert_eq!(s.store.get(&key("production")).await.unwrap(), None);
    }

    #[tokio::test]
    async fn unknown_runs_and_environments_are_not_found() {
        let s = slipway("https://deployer.example.com/slipway").await;
        let other = "b2c3d4e5f60718293a4b5c6d7e8f901234567890";
        let body =
            json!({"run": format!("shop-{other}"), "env": "production", "phase": "release", "status": "succeeded"})
                .to_string();
        let (status, answer) = signed(&s.app, body.as_bytes()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
        assert!(answer["error"].as_str().unwrap().contains("no run"), "{answer}");

        let (status, answer) = signed(&s.app, &callback("moon", "succeeded")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
        let (status, answer) = signed(&s.app, &callback("qa", "succeeded")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
        assert!(answer["error"].as_str().unwrap().contains("command"), "{answer}");
        assert_eq!(s.store.list("deploy-callbacks/").await.unwrap(), Vec::new());
    }

    #[tokio::test]
    async fn malformed_bodies_and_unknown_statuses_are_bad_requests() {
        let s = slipway("https://deployer.example.com/slipway").await;
        for body in [
            b"not json".to_vec(),
            callback("production", "running"),
            callback("production", "exploded"),
            json!({"run": run_id(), "env": "production", "phase": "verify", "status": "succeeded"})
                .to_string()
                .into_bytes(),
            json!({"run": run_id(), "env": "production", "phase": "release", "status": "succeeded", "reference": "a\nb"})
                .to_string()
                .into_bytes(),
        ] {
            let (status, answer) = signed(&s.app, &body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{}: {answer}", String::from_utf8_lossy(&body));
        }
        // The signature comes first: an unsigned malformed body is 401, not 400.
        let (status, _) = post(&s.app, b"not json", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn a_redelivery_is_idempotent_and_a_different_second_answer_conflicts() {
        let s = slipway("https://deployer.example.com/slipway").await;
        let body = callback("production", "succeeded");
        assert_eq!(signed(&s.app, &body).await.0, StatusCode::ACCEPTED);
        let writes = s.store.write_count();

        // The same callback again, even formatted differently: the same record.
        let reformatted = serde_json::to_vec_pretty(&serde_json::from_slice::<Value>(&body).unwrap()).unwrap();
        for again in [&body, &reformatted] {
            let (status, answer) = signed(&s.app, again).await;
            assert_eq!(status, StatusCode::OK, "{answer}");
            assert_eq!(answer["status"], "duplicate");
        }

        let (status, answer) = signed(&s.app, &callback("production", "failed")).await;
        assert_eq!(status, StatusCode::CONFLICT, "{answer}");
        assert_eq!(s.store.write_count(), writes);
        let stored: DeployCallback =
            serde_json::from_slice(&s.store.get(&key("production")).await.unwrap().unwrap().value).unwrap();
        assert_eq!(stored.status, Finished::Succeeded, "the first one stands");
    }

    /// A later run rolling back to this run's release reports the same run, environment and
    /// phase as this run's own deploy did: `rolling_back` keeps the two apart.
    #[tokio::test]
    async fn a_rollback_callback_is_kept_apart_from_the_release_it_redeploys() {
        let s = slipway("https://deployer.example.com/slipway").await;
        let later = "b2c3d4e5f60718293a4b5c6d7e8f901234567890";
        open(&s.app, later).await;
        let rolling_back = RunId::parse(&format!("shop-{later}")).unwrap();
        assert_eq!(
            signed(&s.app, &callback("production", "succeeded")).await.0,
            StatusCode::ACCEPTED
        );

        let rollback = json!({
            "run": run_id(), "env": "production", "phase": "release", "rolling_back": rolling_back,
            "status": "failed", "reason": "the old release no longer starts",
        })
        .to_string();
        let (status, answer) = signed(&s.app, rollback.as_bytes()).await;
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "not a conflict with the deploy's callback: {answer}"
        );
        assert_eq!(answer["rolling_back"], rolling_back.as_str());
        let rollback_key = StoreKey::deploy_callback(
            &RunId::parse(&run_id()).unwrap(),
            &EnvName::parse("production").unwrap(),
            Phase::Release,
            crate::ports::DeployPurpose::Rollback {
                rolling_back: &rolling_back,
                attempt: 1,
            },
        );
        let stored: DeployCallback =
            serde_json::from_slice(&s.store.get(&rollback_key).await.unwrap().unwrap().value).unwrap();
        assert_eq!(stored.status, Finished::Failed);
        assert_eq!(stored.rolling_back.as_ref(), Some(&rolling_back));
        let own: DeployCallback =
            serde_json::from_slice(&s.store.get(&key("production")).await.unwrap().unwrap().value).unwrap();
        assert_eq!(
            own.status,
            Finished::Succeeded,
            "the deploy's own callback is untouched"
        );
        assert_eq!(own.rolling_back, None);

        // A rolling-back run that does not exist is not found; nothing is stored.
        let unknown = json!({
            "run": run_id(), "env": "production", "phase": "backup",
            "rolling_back": "shop-c3d4e5f60718293a4b5c6d7e8f90123456789012", "status": "succeeded",
        })
        .to_string();
        let (status, answer) = signed(&s.app, unknown.as_bytes()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
        assert!(answer["error"].as_str().unwrap().contains("rolling_back"), "{answer}");
        assert_eq!(s.store.list("deploy-callbacks/").await.unwrap().len(), 2);

        // The same run rolling back a second time (the first attempt failed): its answer has
        // a place of its own, and the first attempt's failure does not stand in its way.
        let again = json!({
            "run": run_id(), "env": "production", "phase": "release", "rolling_back": rolling_back,
            "attempt": 2, "status": "succeeded",
        })
        .to_string();
        let (status, answer) = signed(&s.app, again.as_bytes()).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        assert_eq!(answer["attempt"], 2);
        let second = StoreKey::deploy_callback(
            &RunId::parse(&run_id()).unwrap(),
            &EnvName::parse("production").unwrap(),
            Phase::Release,
            crate::ports::DeployPurpose::Rollback {
                rolling_back: &rolling_back,
                attempt: 2,
            },
        );
        assert!(second.as_str().ends_with(".2.json"), "{second}");
        assert!(s.store.get(&second).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn unavailable_stores_answer_503() {
        let s = slipway("https://deployer.example.com/slipway").await;
        let body = callback("production", "succeeded");
        s.secrets.set_unavailable(true);
        assert_eq!(signed(&s.app, &body).await.0, StatusCode::SERVICE_UNAVAILABLE);
        s.secrets.set_unavailable(false);
        s.store.fail_next("create", Fault::Unavailable);
        assert_eq!(signed(&s.app, &body).await.0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            signed(&s.app, &body).await.0,
            StatusCode::ACCEPTED,
            "a retry goes through"
        );
    }

    /// The whole protocol: slipway POSTs the phase, the deployer answers `accepted` and later
    /// calls back through the real router; the waiting target picks the callback up.
    #[tokio::test]
    async fn a_deploy_completes_through_the_callback() {
        // slipway, served for real, so the deployer can call back.
        let slipway_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let slipway_url = format!("http://{}", slipway_listener.local_addr().unwrap());

        // The deployer: verifies the request, answers accepted, calls back 30 ms later.
        let deployer = axum::Router::new().route(
            "/deploy",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let slipway_url = slipway_url.clone();
                async move {
                    let sig = header(&headers, "x-slipway-signature");
                    if signature::verify(SECRET.as_bytes(), sig, &body).is_err() {
                        return (StatusCode::UNAUTHORIZED, Json(json!({"error": "bad signature"})));
                    }
                    let request: Value = serde_json::from_slice(&body).unwrap();
                    let callback = json!({
                        "run": request["run"], "env": request["env"], "phase": request["phase"],
                        "status": "succeeded", "reference": "v7", "output": "rolled out",
                    })
                    .to_string();
                    let url = format!("{slipway_url}{}", request["callback_path"].as_str().unwrap());
                    tokio::spawn(async move {
                        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
                        let answer = reqwest::Client::new()
                            .post(url)
                            .header(
                                "x-slipway-signature",
                                signature::sign(SECRET.as_bytes(), callback.as_bytes()),
                            )
                            .body(callback)
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(answer.status(), reqwest::StatusCode::ACCEPTED);
                    });
                    (StatusCode::ACCEPTED, Json(json!({"status": "accepted"})))
                }
            }),
        );
        let deployer_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let deployer_url = format!("http://{}/deploy", deployer_listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(deployer_listener, deployer).await });

        let s = slipway(&deployer_url).await;
        let router = crate::http::router(s.app.clone());
        tokio::spawn(async move { axum::serve(slipway_listener, router).await });

        let target = WebhookTarget::new(s.app.store.clone()).with_pacing(Pacing {
            min_poll: std::time::Duration::ZERO,
            ..Pacing::default()
        });
        let run = RunId::parse(&run_id()).unwrap();
        let env = s.app.config.pipelines[0]
            .environment(&EnvName::parse("production").unwrap())
            .unwrap();
        let report = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            target.deploy(DeployRequest {
                phase: Phase::Release,
                run: &run,
                purpose: crate::ports::DeployPurpose::Deploy,
                repo: "acme/shop",
                sha: SHA,
                env: "production",
                artifact: None,
                backup: None,
                secrets: vec![("secret".into(), SecretString::from(SECRET.to_owned()))],
                target: &env.deploy,
            }),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(report.reference.as_deref(), Some("v7"));
        assert_eq!(report.output, "rolled out");
        assert!(!report.skipped);
    }
}

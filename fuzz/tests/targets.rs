//! Fuzz targets: every parser and verifier that reads input from outside, through the real
//! router (validly signed mutated bodies, and forged signatures over any body) and directly
//! where the function is public.
//!
//! Each target first replays its seeds unmutated (the `events/` fixtures, re-aimed copies that
//! reach a configured pipeline, and `fuzz/regressions/<target>/`), then runs arbitrary inputs for a time budget (`harness::fuzz`).
//! Properties: no panic; no 5xx; every answer at most `harness::MAX_ANSWER` bytes; a signature or
//! token is accepted only when it is the real one (up to what the verifier documents as the
//! same: surrounding spaces, hex case); a forged approval changes nothing. Memory is bounded
//! by the router's body caps, checked by running the targets under an address-space limit in
//! `.ci/run`. Deep nesting must be refused, not overflow the stack.

// Test helpers are not #[test] functions, so clippy's allow-unwrap-in-tests does not reach them.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use arbitrary::Arbitrary;
use http::{HeaderValue, StatusCode};
use secrecy::SecretString;
use serde_json::{Value, json};
use slipway::approvals::{self, Action};
use slipway::domain::{PipelineName, RunId, StageStatus};
use slipway::providers::{bitbucket, github, gitlab, slack};
use slipway::signature;
use slipway_fuzz::harness::{
    APPROVAL_KEY, BITBUCKET_SECRET, DEPLOY_SECRET, Forgery, GITLAB_SIGNING, GITLAB_TOKEN, Harness, MAX_ANSWER,
    MAX_PAGE, SLACK_SECRET, as_read, check_answer, fuzz, header_value, post, preview, refused, slack_form,
    slack_signature, slipway, slipway_with_run,
};
use slipway_fuzz::mutate::{Fuzzed, Mutation, mutate};
use slipway_fuzz::seeds;
use slipway_tests::{CI_SECRET, GITHUB_SECRET, Pipeline, SHA};

// ---------------------------------------------------------------------------------------
// Seeds
// ---------------------------------------------------------------------------------------

/// A seed body and the event header it is sent with (hosts that name the event in a header).
#[derive(Debug, Clone)]
struct Seed {
    event: Option<String>,
    body: Vec<u8>,
}

fn json_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// Sets the values at JSON pointers that exist in `v`.
fn aimed(mut v: Value, values: &[(&str, Value)]) -> Value {
    for (pointer, value) in values {
        if let Some(slot) = v.pointer_mut(pointer) {
            *slot = value.clone();
        }
    }
    v
}

fn parsed(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// The `events/<host>/` fixtures with the event header each is sent with, the fixtures
/// re-aimed at acme/shop main and [`SHA`] (so they reach the pipeline), and the regression
/// seeds of `target` (sent with `regression_event`).
fn host_seeds(
    host: &str,
    target: &str,
    event_of: impl Fn(&str) -> &'static str,
    aim: impl Fn(Value) -> Value,
    regression_event: &str,
) -> Vec<Seed> {
    let mut all = Vec::new();
    for (name, body) in seeds::events(host) {
        let event = Some(event_of(&name).to_owned());
        all.push(Seed {
            event: event.clone(),
            body: json_bytes(&aim(parsed(&body))),
        });
        all.push(Seed { event, body });
    }
    for body in seeds::regressions(target) {
        all.push(Seed {
            event: Some(regression_event.to_owned()),
            body,
        });
    }
    all
}

fn bodies(seeds: &[Seed]) -> Vec<Vec<u8>> {
    seeds.iter().map(|s| s.body.clone()).collect()
}

fn github_seeds() -> Vec<Seed> {
    let event_of = |name: &str| match name {
        n if n.starts_with("ping") => "ping",
        n if n.starts_with("push") => "push",
        n if n.starts_with("check-suite") => "check_suite",
        n if n.starts_with("workflow-run") => "workflow_run",
        _ => "push",
    };
    let aim = |v: Value| {
        aimed(
            v,
            &[
                ("/repository/full_name", json!("acme/shop")),
                ("/ref", json!("refs/heads/main")),
                ("/after", json!(SHA)),
                ("/head_commit/id", json!(SHA)),
                ("/workflow_run/head_sha", json!(SHA)),
                ("/workflow_run/head_branch", json!("main")),
                ("/check_suite/head_sha", json!(SHA)),
                ("/check_suite/head_branch", json!("main")),
            ],
        )
    };
    host_seeds("github", "github", event_of, aim, "push")
}

fn gitlab_seeds() -> Vec<Seed> {
    let event_of = |name: &str| match name {
        "pipeline.json" => "Pipeline Hook",
        "tag-push.json" => "Tag Push Hook",
        _ => "Push Hook",
    };
    let aim = |v: Value| {
        aimed(
            v,
            &[
                ("/project/path_with_namespace", json!("acme/shop")),
                ("/ref", json!("refs/heads/main")),
                ("/after", json!(SHA)),
                ("/checkout_sha", json!(SHA)),
                ("/object_attributes/sha", json!(SHA)),
                ("/object_attributes/ref", json!("main")),
            ],
        )
    };
    host_seeds("gitlab", "gitlab", event_of, aim, "Push Hook")
}

fn bitbucket_seeds() -> Vec<Seed> {
    let event_of = |name: &str| match name {
        "commit-status-updated.json" => "repo:commit_status_updated",
        _ => "repo:push",
    };
    // The Bitbucket fixtures are already of acme/shop main and SHA.
    host_seeds("bitbucket", "bitbucket", event_of, |v| v, "repo:push")
}

fn ci_seeds() -> Vec<Seed> {
    let aim = |v: Value| aimed(v, &[("/repo", json!("acme/shop")), ("/sha", json!(SHA))]);
    host_seeds("ci", "ci", |_| "", aim, "")
        .into_iter()
        .map(|s| Seed { event: None, ..s })
        .collect()
}

/// `/hooks/deploy` has no fixture in `events/` (it is slipway's own format): its seeds are the
/// callbacks the module docs describe, for the open run's `qa` environment.
fn deploy_seeds() -> Vec<Seed> {
    let run = run_id().to_string();
    let mut all: Vec<Seed> = [
        json!({"run": run, "env": "qa", "phase": "release", "rolling_back": null, "attempt": null,
               "status": "succeeded", "reference": "v42", "output": "released v42", "reason": null}),
        json!({"run": run, "env": "qa", "phase": "migrate", "status": "failed", "reason": "migration 12 failed"}),
        json!({"run": run, "env": "qa", "phase": "backup", "status": "skipped"}),
        json!({"run": run, "env": "qa", "phase": "restore", "rolling_back": run, "attempt": 2, "status": "succeeded"}),
    ]
    .iter()
    .map(|v| Seed {
        event: None,
        body: json_bytes(v),
    })
    .collect();
    all.extend(
        seeds::regressions("deploy")
            .into_iter()
            .map(|body| Seed { event: None, body }),
    );
    all
}

fn run_id() -> RunId {
    RunId::new(&PipelineName::parse("shop").unwrap(), &SHA.parse().unwrap())
}

// ---------------------------------------------------------------------------------------
// Webhooks signed like GitHub's (`sha256=<hex>` over the raw body): GitHub, Bitbucket, CI,
// deploy callbacks
// ---------------------------------------------------------------------------------------

/// Which event header a delivery carries.
#[derive(Debug, Clone, Arbitrary)]
enum EventHeader {
    /// The seed's own.
    Own,
    /// Another event the host sends.
    Known(u8),
    /// Any bytes.
    Any(Vec<u8>),
    Absent,
}

#[derive(Debug, Clone, Arbitrary)]
struct HookInput {
    body: Fuzzed,
    event: EventHeader,
    /// `None`: signed with the real secret.
    forgery: Option<Forgery>,
}

/// A webhook whose body is signed `sha256=<hex HMAC-SHA256>`.
struct Hook {
    name: &'static str,
    path: &'static str,
    signature_header: &'static str,
    secret: &'static str,
    event_header: Option<&'static str>,
    known_events: &'static [&'static str],
    /// Open a run of [`SHA`] first (CI results and deploy callbacks need one).
    with_run: bool,
    /// The verifier as the route applies it.
    verify: fn(&[u8], Option<&str>, &[u8]) -> bool,
    /// The parser, called directly (where it is public).
    parse: fn(Option<&str>, &[u8]),
}

fn unmutated(seed: usize) -> Fuzzed {
    Fuzzed {
        seed: u16::try_from(seed).unwrap(),
        mutations: Vec::new(),
        mutate_inside: true,
    }
}

fn hook_case(h: &Harness, hook: &Hook, seeds: &[Seed], input: &HookInput) {
    let bodies = bodies(seeds);
    let seed = &seeds[usize::from(input.body.seed) % seeds.len()];
    let body = input.body.apply(&bodies, |b| b.to_vec());
    let event = match &input.event {
        EventHeader::Own => seed.event.as_deref().map(HeaderValue::from_str).transpose().unwrap(),
        EventHeader::Known(i) => Some(HeaderValue::from_static(
            hook.known_events[usize::from(*i) % hook.known_events.len()],
        )),
        EventHeader::Any(bytes) => Some(header_value(bytes)),
        EventHeader::Absent => None,
    };
    let real = signature::sign(hook.secret.as_bytes(), &body);
    let sig = match &input.forgery {
        None => Some(HeaderValue::from_str(&real).unwrap()),
        Some(forgery) => forgery.header(
            &real,
            || signature::sign(hook.secret.as_bytes(), &seed.body),
            |secret| signature::sign(secret, &body),
        ),
    };

    // The verifier accepts the real signature and nothing else.
    let accepted = (hook.verify)(hook.secret.as_bytes(), as_read(&sig), &body);
    if accepted {
        let sent = as_read(&sig).unwrap().trim().to_ascii_lowercase();
        assert_eq!(sent, real, "{}: accepted a signature that is not the body's", hook.name);
    } else {
        assert!(input.forgery.is_some(), "{}: refused the real signature", hook.name);
    }
    // The parser never panics, whatever it is given.
    (hook.parse)(as_read(&event), &body);

    let mut headers = vec![
        (hook.signature_header, sig),
        ("content-type", Some(HeaderValue::from_static("application/json"))),
    ];
    if let Some(name) = hook.event_header {
        headers.push((name, event));
    }
    let answer = h.block_on(async {
        let p = if hook.with_run {
            slipway_with_run().await
        } else {
            slipway().await
        };
        post(&p, hook.path, &headers, body.clone()).await
    });
    let what = format!("{} ({} body bytes)", hook.name, body.len());
    check_answer(&what, &answer, MAX_ANSWER);
    if accepted {
        assert_ne!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "{what}: refused a good signature: {}",
            answer.body
        );
    } else {
        assert_eq!(
            answer.status,
            refused(&body),
            "{what}: a bad signature got {}",
            preview(&answer.body)
        );
    }
}

/// Replays every seed unmutated, then fuzzes.
fn fuzz_hook(hook: Hook, seeds: Vec<Seed>) {
    let h = Harness::new();
    for i in 0..seeds.len() {
        let input = HookInput {
            body: unmutated(i),
            event: EventHeader::Own,
            forgery: None,
        };
        hook_case(&h, &hook, &seeds, &input);
    }
    fuzz(|input: &HookInput| hook_case(&h, &hook, &seeds, input));
}

#[test]
fn github_webhook() {
    let hook = Hook {
        name: "POST /hooks/github",
        path: "/hooks/github",
        signature_header: "x-hub-signature-256",
        secret: GITHUB_SECRET,
        event_header: Some("x-github-event"),
        known_events: &[
            "push",
            "ping",
            "workflow_run",
            "check_suite",
            "check_run",
            "pull_request",
            "status",
        ],
        with_run: false,
        verify: |secret, sig, body| signature::verify(secret, sig, body).is_ok(),
        parse: |event, body| {
            let _ = github::parse(event.unwrap_or(""), body);
        },
    };
    fuzz_hook(hook, github_seeds());
}

#[test]
fn bitbucket_webhook() {
    let hook = Hook {
        name: "POST /hooks/bitbucket",
        path: "/hooks/bitbucket",
        signature_header: "x-hub-signature",
        secret: BITBUCKET_SECRET,
        event_header: Some("x-event-key"),
        known_events: &[
            "repo:push",
            "repo:commit_status_created",
            "repo:commit_status_updated",
            "pullrequest:created",
        ],
        with_run: false,
        verify: |secret, sig, body| bitbucket::verify(secret, sig, body).is_ok(),
        parse: |event, body| {
            let _ = bitbucket::parse(event, body);
        },
    };
    fuzz_hook(hook, bitbucket_seeds());
}

#[test]
fn ci_callback() {
    let hook = Hook {
        name: "POST /hooks/ci",
        path: "/hooks/ci",
        signature_header: "x-slipway-signature",
        secret: CI_SECRET,
        event_header: None,
        known_events: &[""],
        with_run: true,
        verify: |secret, sig, body| signature::verify(secret, sig, body).is_ok(),
        // The CI body's parser is private to the route: it is fuzzed through the router.
        parse: |_, _| {},
    };
    fuzz_hook(hook, ci_seeds());
}

#[test]
fn deploy_callback() {
    let hook = Hook {
        name: "POST /hooks/deploy",
        path: "/hooks/deploy",
        signature_header: "x-slipway-signature",
        secret: DEPLOY_SECRET,
        event_header: None,
        known_events: &[""],
        with_run: true,
        verify: |secret, sig, body| signature::verify(secret, sig, body).is_ok(),
        parse: |_, body| {
            let _ = serde_json::from_slice::<slipway::adapters::webhook_target::DeployCallback>(body);
        },
    };
    fuzz_hook(hook, deploy_seeds());
}

// ---------------------------------------------------------------------------------------
// GitLab: a secret token and a Standard Webhooks signature
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Arbitrary)]
struct GitlabInput {
    body: Fuzzed,
    event: EventHeader,
    token: Option<Forgery>,
    signature: Option<Forgery>,
    /// Seconds between the signature's timestamp and slipway's clock.
    skew: i16,
    id: Option<Vec<u8>>,
}

fn gitlab_case(h: &Harness, seeds: &[Seed], input: &GitlabInput) {
    const KNOWN: &[&str] = &[
        "Push Hook",
        "Tag Push Hook",
        "Pipeline Hook",
        "Merge Request Hook",
        "System Hook",
    ];
    let bodies = bodies(seeds);
    let seed = &seeds[usize::from(input.body.seed) % seeds.len()];
    let body = input.body.apply(&bodies, |b| b.to_vec());
    let event = match &input.event {
        EventHeader::Own => seed.event.as_deref().map(HeaderValue::from_str).transpose().unwrap(),
        EventHeader::Known(i) => Some(HeaderValue::from_static(KNOWN[usize::from(*i) % KNOWN.len()])),
        EventHeader::Any(bytes) => Some(header_value(bytes)),
        EventHeader::Absent => None,
    };
    let now = h.block_on(async { slipway().await.now() });
    let at = now.as_second() + i64::from(input.skew);
    let id = input
        .id
        .as_deref()
        .map(header_value)
        .unwrap_or(HeaderValue::from_static("msg_1"));
    let id_text = id.to_str().unwrap_or("").to_owned();
    // Standard Webhooks signs text: a body that is not UTF-8 has no real signature, and every
    // signature sent with it must be refused. Such a request carries the signature of the
    // body's lossy text instead, the nearest a sender could come.
    let real = gitlab::sign(GITLAB_SIGNING, &id_text, at, &body).ok();
    let sent_as_real = real.clone().unwrap_or_else(|| {
        gitlab::sign(GITLAB_SIGNING, &id_text, at, String::from_utf8_lossy(&body).as_bytes()).unwrap()
    });
    let signature = match &input.signature {
        None => Some(HeaderValue::from_str(&sent_as_real).unwrap()),
        Some(forgery) => forgery.header(
            &sent_as_real,
            || gitlab::sign(GITLAB_SIGNING, &id_text, at, &seed.body).unwrap(),
            |secret| {
                use base64::Engine as _;
                let key = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(secret));
                gitlab::sign(&key, &id_text, at, &body).unwrap_or_default()
            },
        ),
    };
    let token = match &input.token {
        None => Some(HeaderValue::from_static(GITLAB_TOKEN)),
        Some(forgery) => forgery.header(
            GITLAB_TOKEN,
            || GITLAB_TOKEN.into(),
            |s| String::from_utf8_lossy(s).into(),
        ),
    };
    let timestamp = HeaderValue::from_str(&at.to_string()).unwrap();
    let id = Some(id);

    let token_ok = gitlab::verify_token(GITLAB_TOKEN, as_read(&token)).is_ok();
    if token_ok {
        assert_eq!(
            as_read(&token),
            Some(GITLAB_TOKEN),
            "accepted a token that is not the secret"
        );
    }
    let signature_ok = gitlab::verify_signature(
        GITLAB_SIGNING,
        as_read(&id),
        Some(&at.to_string()),
        as_read(&signature),
        &body,
        now,
    )
    .is_ok();
    if signature_ok {
        // One of the space-separated entries is the real one, and it is fresh.
        let sent = as_read(&signature).unwrap();
        assert!(
            real.as_ref()
                .is_some_and(|real| sent.split_whitespace().any(|e| e == real)),
            "accepted a forged signature {sent:?}"
        );
        assert!(input.skew.unsigned_abs() <= 300, "accepted a stale signature");
    }
    let _ = gitlab::parse(as_read(&event), &body);

    let headers = [
        ("x-gitlab-token", token),
        ("x-gitlab-event", event),
        ("webhook-id", id),
        ("webhook-timestamp", Some(timestamp)),
        ("webhook-signature", signature),
        ("content-type", Some(HeaderValue::from_static("application/json"))),
    ];
    let answer = h.block_on(async {
        let p = slipway().await;
        post(&p, "/hooks/gitlab", &headers, body.clone()).await
    });
    let what = format!("POST /hooks/gitlab ({} body bytes)", body.len());
    check_answer(&what, &answer, MAX_ANSWER);
    if token_ok && signature_ok {
        assert_ne!(answer.status, StatusCode::UNAUTHORIZED, "{what}: {}", answer.body);
    } else {
        assert_eq!(answer.status, refused(&body), "{what}: {}", preview(&answer.body));
    }
}

#[test]
fn gitlab_webhook() {
    let seeds = gitlab_seeds();
    let h = Harness::new();
    for i in 0..seeds.len() {
        let input = GitlabInput {
            body: unmutated(i),
            event: EventHeader::Own,
            token: None,
            signature: None,
            skew: 0,
            id: None,
        };
        gitlab_case(&h, &seeds, &input);
    }
    fuzz(|input: &GitlabInput| gitlab_case(&h, &seeds, input));
}

// ---------------------------------------------------------------------------------------
// Slack interactions: a form field holding JSON, signed with a timestamp
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Arbitrary)]
struct SlackInput {
    body: Fuzzed,
    signature: Option<Forgery>,
    /// Seconds between the request's timestamp and slipway's clock.
    skew: i16,
    timestamp: Option<Vec<u8>>,
}

/// The Slack fixture, and copies of it clicked by alice on her real approval link (the token
/// replaced at run time: `TOKEN` stands for it) with the response URL on a closed loopback
/// port, so a decision's courtesy update goes nowhere.
fn slack_seeds() -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    for (_, body) in seeds::events("slack") {
        let v = parsed(&body);
        for action in ["approve", "reject"] {
            let clicked = aimed(
                v.clone(),
                &[
                    ("/user/id", json!("U0ALICE")),
                    ("/actions/0/action_id", json!(action)),
                    ("/actions/0/value", json!("TOKEN")),
                    ("/response_url", json!("http://127.0.0.1:9/slack")),
                ],
            );
            all.push(json_bytes(&clicked));
        }
        all.push(body);
    }
    all.extend(seeds::regressions("slack"));
    all
}

/// A fresh slipway whose run of [`SHA`] waits for approval to production, and alice's
/// approval token from the notification she was sent.
async fn at_approval() -> (Pipeline, String) {
    let p = slipway().await;
    p.to_approval(SHA).await;
    let url = p.approval_for("alice").approve_url.expect("an approval link");
    let token = url
        .split("/approvals/")
        .nth(1)
        .and_then(|rest| rest.split('?').next())
        .expect("a token in the link")
        .to_owned();
    (p, token)
}

fn slack_case(h: &Harness, seeds: &[Vec<u8>], input: &SlackInput) {
    h.block_on(async {
        let (p, token) = at_approval().await;
        let now = p.now().as_second();
        let with_token = |json: &[u8]| {
            let text = String::from_utf8_lossy(json).replace("\"TOKEN\"", &format!("\"{token}\""));
            slack_form(text.as_bytes())
        };
        let body = input.body.apply(seeds, with_token);
        let at = (now + i64::from(input.skew)).to_string();
        let timestamp = match &input.timestamp {
            Some(bytes) => header_value(bytes),
            None => HeaderValue::from_str(&at).unwrap(),
        };
        let ts_text = timestamp.to_str().unwrap_or("").to_owned();
        let real = slack_signature(SLACK_SECRET.as_bytes(), &ts_text, &body);
        let seed = with_token(&seeds[usize::from(input.body.seed) % seeds.len()]);
        let signature = match &input.signature {
            None => Some(HeaderValue::from_str(&real).unwrap()),
            Some(forgery) => forgery.header(
                &real,
                || slack_signature(SLACK_SECRET.as_bytes(), &ts_text, &seed),
                |secret| slack_signature(secret, &ts_text, &body),
            ),
        };
        let timestamp = Some(timestamp);
        let verified = slack::verify(
            SLACK_SECRET.as_bytes(),
            as_read(&timestamp),
            as_read(&signature),
            &body,
            p.now(),
        )
        .is_ok();
        if verified {
            let sent = as_read(&signature).unwrap().trim().to_ascii_lowercase();
            assert_eq!(sent, real, "accepted a forged Slack signature");
            let at: i64 = ts_text.trim().parse().unwrap();
            assert!((at - now).abs() <= 300, "accepted a stale Slack request");
        }
        let _ = slack::parse_interaction(&body);

        let headers = [
            ("x-slack-request-timestamp", timestamp),
            ("x-slack-signature", signature),
            (
                "content-type",
                Some(HeaderValue::from_static("application/x-www-form-urlencoded")),
            ),
        ];
        let answer = post(&p, "/hooks/slack/interactions", &headers, body.clone()).await;
        let what = format!("POST /hooks/slack/interactions ({} body bytes)", body.len());
        check_answer(&what, &answer, MAX_ANSWER);
        if verified {
            assert_ne!(answer.status, StatusCode::UNAUTHORIZED, "{what}: {}", answer.body);
        } else {
            assert_eq!(answer.status, refused(&body), "{what}: {}", preview(&answer.body));
            assert_eq!(
                p.approval_stage_status(SHA).await,
                StageStatus::Waiting,
                "{what}: an unverified click decided"
            );
        }
    });
}

#[test]
fn slack_interactions() {
    let seeds = slack_seeds();
    let h = Harness::new();
    for i in 0..seeds.len() {
        for inside in [true, false] {
            let input = SlackInput {
                body: Fuzzed {
                    mutate_inside: inside,
                    ..unmutated(i)
                },
                signature: None,
                skew: 0,
                timestamp: None,
            };
            slack_case(&h, &seeds, &input);
        }
    }
    fuzz(|input: &SlackInput| slack_case(&h, &seeds, input));
}

// ---------------------------------------------------------------------------------------
// Approval and rollback tokens, through every page that takes one
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Arbitrary)]
enum TokenText {
    Real,
    Mutated(#[arbitrary(with = slipway_fuzz::mutate::some_mutations)] Vec<Mutation>),
    Any(Vec<u8>),
}

#[derive(Debug, Clone, Arbitrary)]
enum TokenUse {
    ConfirmPage,
    /// POST the decision form, with any bytes as its body or a well-formed one.
    Decide {
        form: Option<Vec<u8>>,
        approve: bool,
        comment: String,
    },
    RollbackPage,
    RollbackPost {
        form: Option<Vec<u8>>,
    },
    /// `GET /runs/<id>?token=…`
    RunPage,
}

#[derive(Debug, Clone, Arbitrary)]
struct TokenInput {
    token: TokenText,
    used: TokenUse,
}

/// Percent-encodes every byte but the unreserved ones, so any token fits in a path.
fn path_safe(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn token_case(h: &Harness, input: &TokenInput) {
    h.block_on(async {
        let (p, real) = at_approval().await;
        let token = match &input.token {
            TokenText::Real => real.clone().into_bytes(),
            TokenText::Mutated(mutations) => mutate(real.clone().into_bytes(), mutations, &[]),
            TokenText::Any(bytes) => bytes.clone(),
        };
        // The verifier accepts the token slipway issued and nothing else.
        let key = SecretString::from(APPROVAL_KEY);
        if let Ok(text) = std::str::from_utf8(&token) {
            for action in [Action::Approve, Action::Rollback] {
                if approvals::verify(&key, text, action).is_ok() {
                    assert_eq!(text, real, "accepted a token slipway did not issue");
                }
            }
        }
        // Longer request lines never reach the router: the HTTP server refuses them first, and
        // an `http::Uri` holds at most 64 KiB (a percent-encoded byte takes three).
        let mut token = token;
        token.truncate(8 * 1024);
        let forged = token != real.as_bytes();
        let encoded = path_safe(&token);
        let form_of = |form: &Option<Vec<u8>>, default: String| form.clone().unwrap_or(default.into_bytes());
        let form_type = Some(HeaderValue::from_static("application/x-www-form-urlencoded"));
        let (what, answer) = match &input.used {
            TokenUse::ConfirmPage => (
                "GET /approvals/…",
                p.get(&format!("https://x/approvals/{encoded}")).await,
            ),
            TokenUse::Decide { form, approve, comment } => {
                let decision = if *approve { "approve" } else { "reject" };
                let mut default = format!("decision={decision}&comment=");
                default.extend(url::form_urlencoded::byte_serialize(comment.as_bytes()));
                let body = form_of(form, default);
                let path = format!("/approvals/{encoded}");
                (
                    "POST /approvals/…",
                    post(&p, &path, &[("content-type", form_type)], body).await,
                )
            }
            TokenUse::RollbackPage => ("GET /rollback/…", p.get(&format!("https://x/rollback/{encoded}")).await),
            TokenUse::RollbackPost { form } => {
                let body = form_of(form, "confirm=rollback".into());
                let path = format!("/rollback/{encoded}");
                (
                    "POST /rollback/…",
                    post(&p, &path, &[("content-type", form_type)], body).await,
                )
            }
            TokenUse::RunPage => {
                let url = format!("https://x/runs/{}?token={encoded}", run_id());
                ("GET /runs/…?token=…", p.get(&url).await)
            }
        };
        check_answer(what, &answer, MAX_PAGE);
        if matches!(input.used, TokenUse::RunPage) {
            // The run page is for people who signed in, and for holders of a rollback link
            // of the run. An approval link's token (the real one here) is not one, nor is
            // anything made from it: the sign-in page, without run data or a form.
            assert_eq!(
                answer.status,
                StatusCode::UNAUTHORIZED,
                "{what}: {}",
                preview(&answer.body)
            );
            assert!(
                !answer.body.contains("<form"),
                "{what}: a token that is not a rollback link got a form"
            );
        } else if forged {
            assert!(
                matches!(answer.status.as_u16(), 400..=499),
                "{what}: a forged token got {}",
                answer.status
            );
            assert_eq!(
                p.approval_stage_status(SHA).await,
                StageStatus::Waiting,
                "{what}: a forged token decided"
            );
        }
    });
}

#[test]
fn approval_tokens() {
    let h = Harness::new();
    for used in [
        TokenUse::ConfirmPage,
        TokenUse::Decide {
            form: None,
            approve: true,
            comment: "ship it".into(),
        },
        TokenUse::RollbackPage,
        TokenUse::RunPage,
    ] {
        token_case(
            &h,
            &TokenInput {
                token: TokenText::Real,
                used,
            },
        );
    }
    fuzz(|input: &TokenInput| token_case(&h, input));
}

// ---------------------------------------------------------------------------------------
// The configuration file and the local secrets file
// ---------------------------------------------------------------------------------------

fn config_seeds() -> Vec<Vec<u8>> {
    let mut all = vec![
        seeds::workspace_file("slipway.example.toml"),
        slipway_tests::CONFIG.as_bytes().to_vec(),
        slipway_fuzz::harness::config().into_bytes(),
    ];
    all.extend(seeds::regressions("config"));
    all
}

fn config_case(seeds: &[Vec<u8>], input: &Fuzzed) {
    let text = input.apply(seeds, |b| b.to_vec());
    let text = String::from_utf8_lossy(&text);
    if let Err(e) = slipway::config::Config::parse(&text, Path::new("fuzz.toml")) {
        let message = e.to_string();
        assert!(!message.is_empty());
    }
}

#[test]
fn config_file() {
    let seeds = config_seeds();
    for seed in &seeds {
        config_case(
            &seeds,
            &Fuzzed {
                seed: 0,
                mutations: vec![Mutation::Random(seed.clone())],
                mutate_inside: true,
            },
        );
    }
    fuzz(|input: &Fuzzed| config_case(&seeds, input));
}

fn secrets_case(seeds: &[Vec<u8>], input: &Fuzzed) {
    use slipway::adapters::local::secrets_file::SecretsFile;
    let text = input.apply(seeds, |b| b.to_vec());
    let text = String::from_utf8_lossy(&text);
    match SecretsFile::from_toml(&text, "fuzz.secrets.toml") {
        Err(e) => assert!(!e.to_string().is_empty()),
        Ok(file) => assert!(!format!("{file:?}").is_empty()),
    }
}

#[test]
fn secrets_file() {
    let mut seeds = vec![
        seeds::workspace_file("slipway.secrets.example.toml"),
        b"\"/slipway/github/webhook-secret\" = \"value-1\"\n\"/slipway/shop/ci\" = \"value-2\"\n".to_vec(),
    ];
    seeds.extend(seeds::regressions("secrets"));
    fuzz(|input: &Fuzzed| secrets_case(&seeds, input));
}

// ---------------------------------------------------------------------------------------
// Deep nesting: refused, never a stack overflow (which would kill the process, not fail a
// test). Run on the test thread's 2 MiB stack, the size of a tokio worker's.
// ---------------------------------------------------------------------------------------

const DEPTH: usize = 100_000;

/// Request headers by name; `None` leaves one out.
type Headers<'a> = Vec<(&'a str, Option<HeaderValue>)>;

#[test]
fn deeply_nested_json_in_every_hook_is_refused() {
    let h = Harness::new();
    let nested = format!("{{\"a\":{}{}}}", "[".repeat(DEPTH), "]".repeat(DEPTH));
    let body = nested.into_bytes();
    h.block_on(async {
        let p = slipway_with_run().await;
        let now = p.now().as_second();
        let sha256 = |secret: &str| Some(HeaderValue::from_str(&signature::sign(secret.as_bytes(), &body)).unwrap());
        let gitlab_sig = gitlab::sign(GITLAB_SIGNING, "msg_1", now, &body).unwrap();
        let json = Some(HeaderValue::from_static("application/json"));
        let hooks: Vec<(&str, Headers)> = vec![
            (
                "/hooks/github",
                vec![
                    ("x-github-event", Some(HeaderValue::from_static("push"))),
                    ("x-hub-signature-256", sha256(GITHUB_SECRET)),
                ],
            ),
            (
                "/hooks/bitbucket",
                vec![
                    ("x-event-key", Some(HeaderValue::from_static("repo:push"))),
                    ("x-hub-signature", sha256(BITBUCKET_SECRET)),
                ],
            ),
            ("/hooks/ci", vec![("x-slipway-signature", sha256(CI_SECRET))]),
            ("/hooks/deploy", vec![("x-slipway-signature", sha256(DEPLOY_SECRET))]),
            (
                "/hooks/gitlab",
                vec![
                    ("x-gitlab-event", Some(HeaderValue::from_static("Push Hook"))),
                    ("x-gitlab-token", Some(HeaderValue::from_static(GITLAB_TOKEN))),
                    ("webhook-id", Some(HeaderValue::from_static("msg_1"))),
                    (
                        "webhook-timestamp",
                        Some(HeaderValue::from_str(&now.to_string()).unwrap()),
                    ),
                    ("webhook-signature", Some(HeaderValue::from_str(&gitlab_sig).unwrap())),
                ],
            ),
        ];
        for (path, mut headers) in hooks {
            headers.push(("content-type", json.clone()));
            let answer = post(&p, path, &headers, body.clone()).await;
            check_answer(path, &answer, MAX_ANSWER);
            assert_eq!(
                answer.status,
                StatusCode::BAD_REQUEST,
                "{path}: {}",
                preview(&answer.body)
            );
        }
        let form = slack_form(&body);
        let ts = now.to_string();
        let headers = [
            ("x-slack-request-timestamp", Some(HeaderValue::from_str(&ts).unwrap())),
            (
                "x-slack-signature",
                Some(HeaderValue::from_str(&slack_signature(SLACK_SECRET.as_bytes(), &ts, &form)).unwrap()),
            ),
        ];
        let answer = post(&p, "/hooks/slack/interactions", &headers, form).await;
        check_answer("/hooks/slack/interactions", &answer, MAX_ANSWER);
    });
}

#[test]
fn deeply_nested_toml_is_refused() {
    let cases = [
        format!("public_url = {}{}", "[".repeat(DEPTH), "]".repeat(DEPTH)),
        format!("x = {}1{}", "{a = ".repeat(DEPTH), "}".repeat(DEPTH)),
        format!("{} = 1", vec!["a"; DEPTH].join(".")),
        format!("[{}]", vec!["a"; DEPTH].join(".")),
        // toml_parser 1.1.5 let each `{}` after a `{` lower its depth count, so the nesting
        // that followed went unchecked and overflowed the stack (found by `config_file`;
        // fixed in 1.1.6).
        format!("x = {{{}a={}", "{}".repeat(DEPTH), "{a=".repeat(DEPTH)),
    ];
    for text in &cases {
        let refused = slipway::config::Config::parse(text, Path::new("deep.toml"));
        assert!(refused.is_err(), "{} accepted", preview(text));
        let secrets = slipway::adapters::local::secrets_file::SecretsFile::from_toml(text, "deep.toml");
        assert!(secrets.is_err(), "{} accepted as a secrets file", preview(text));
    }
}

//! `slipway.toml`: the pipelines, their environments, and where notifications go.
//!
//! Parsed into typed values once at start-up. Ids validate while parsing, unknown keys are
//! refused, and [`Config::validate`] checks what types cannot; every error names the key
//! and the problem, so an invalid file stops start-up with a message a person can act on.

pub mod checks;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use jiff::SignedDuration;
use serde::{Deserialize, Deserializer};

use crate::approvals::KeyId;
use crate::domain::{ApproverId, BranchName, EnvName, EnvPlan, Mode, ParamName, PipelineName, Plan, RepoName};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read. For a missing file the message says how to make one.
    #[error("cannot read {}: {}{}", path.display(), io_reason(error), read_hint(error))]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {key}: {problem}")]
    Invalid {
        path: PathBuf,
        key: String,
        problem: String,
    },
}

/// An I/O error in words, without Rust's `(os error 2)` suffix (also the secrets file's).
pub(crate) fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

fn read_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::NotFound => " — create one with `slipway init`, or pass --config",
        _ => "",
    }
}

impl ConfigError {
    /// The key the problem is at (`pipelines[0] (shop).environments[1] (production).deploy.command`),
    /// when it is known: a file that cannot be read or parsed has none.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Read { .. } | ConfigError::Parse { .. } => None,
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The address people reach slipway at; approval links are built from it.
    #[serde(default)]
    pub public_url: Option<url::Url>,
    #[serde(default)]
    pub github: Option<GithubConfig>,
    #[serde(default)]
    pub gitlab: Option<GitlabConfig>,
    #[serde(default)]
    pub bitbucket: Option<BitbucketConfig>,
    #[serde(default)]
    pub slack: Option<SlackConfig>,
    pub approvals: ApprovalsConfig,
    /// Channels every notification goes to.
    #[serde(default)]
    pub notify: Vec<ChannelConfig>,
    /// Who may sign in to the control room (`/`, `/approvals`, `/pipelines/…`) besides the
    /// approvers, for how long, and the API token scripts use.
    #[serde(default)]
    pub dashboard: DashboardConfig,
    /// Operational metrics in Prometheus text at `GET /metrics`. None: not exposed (404).
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    pub pipelines: Vec<PipelineConfig>,
}

/// `[metrics]`: who may read `GET /metrics` (Prometheus text exposition, `slipway serve`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// The parameter holding the token a scraper sends as `Authorization: Bearer <token>`.
    /// A parameter left blank matches no token: `/metrics` then answers 401 to everyone.
    pub token: ParamName,
}

/// The control room's sign-in. Approvers (of any pipeline) and viewers sign in with a link
/// (`slipway login-link --as ID`); approvers may act, viewers only see.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardConfig {
    /// People who may see every page but act on nothing.
    #[serde(default)]
    pub viewers: Vec<ViewerConfig>,
    /// How long a session lasts after signing in.
    #[serde(default = "default_session", deserialize_with = "duration")]
    pub session: SignedDuration,
    /// The parameter holding the token scripts send as `Authorization: Bearer <token>` to read
    /// the JSON API. None: the API answers only signed-in people.
    #[serde(default)]
    pub api_token: Option<ParamName>,
    /// How people sign in: with links (`link`, the default), or also through an
    /// authenticating reverse proxy (`proxy`) that names them in `proxy_header`.
    #[serde(default)]
    pub auth: AuthMode,
    /// The header the proxy names the signed-in person in (oauth2-proxy:
    /// `X-Forwarded-Email`). Its value is matched against approvers' and viewers' ids and
    /// approvers' addresses.
    #[serde(default)]
    pub proxy_header: Option<String>,
    /// The addresses the proxy connects from: the header is believed only on connections
    /// from these.
    #[serde(default)]
    pub proxy_addresses: Vec<std::net::IpAddr>,
}

/// How people sign in to the control room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Sign-in links only.
    #[default]
    Link,
    /// An authenticating reverse proxy names the person in a header; links work too.
    Proxy,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self {
            viewers: Vec::new(),
            session: default_session(),
            api_token: None,
            auth: AuthMode::Link,
            proxy_header: None,
            proxy_addresses: Vec::new(),
        }
    }
}

impl DashboardConfig {
    /// The id a proxy's `value` names (matched case-insensitively against approvers' and
    /// viewers' ids and approvers' addresses), if it names anyone in `config`.
    pub fn person_named(config: &Config, value: &str) -> Option<ApproverId> {
        let value = value.trim();
        if value.is_empty() {
            return None;
        }
        let approvers = config.pipelines.iter().flat_map(|p| p.approvers.iter());
        for approver in approvers {
            if approver.id.as_str().eq_ignore_ascii_case(value) || approver.address.eq_ignore_ascii_case(value) {
                return Some(approver.id.clone());
            }
        }
        config
            .dashboard
            .viewers
            .iter()
            .find(|v| v.id.as_str().eq_ignore_ascii_case(value))
            .map(|v| v.id.clone())
    }
}

/// What a signed-in person may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Sees everything and acts for the pipelines they approve for.
    Approver,
    /// Sees everything, acts on nothing.
    Viewer,
}

/// Someone who may look but not act.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewerConfig {
    pub id: ApproverId,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubConfig {
    /// The parameter holding the secret of the GitHub webhook.
    pub webhook_secret: ParamName,
    /// The secret being rotated out, still accepted until its `until`.
    #[serde(default)]
    pub previous_webhook_secret: Option<PreviousSecret>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitlabConfig {
    /// The parameter holding the hook's secret token, sent as `X-Gitlab-Token`.
    pub token: ParamName,
    /// The secret token being rotated out, still accepted until its `until`.
    #[serde(default)]
    pub previous_token: Option<PreviousSecret>,
    /// The parameter holding the hook's signing token (`whsec_…`); when set, the Standard
    /// Webhooks signature (`webhook-signature`) is required too.
    #[serde(default)]
    pub signing_key: Option<ParamName>,
    /// The signing token being rotated out, still accepted until its `until`.
    #[serde(default)]
    pub previous_signing_key: Option<PreviousSecret>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BitbucketConfig {
    /// The parameter holding the webhook's secret (`X-Hub-Signature: sha256=…`).
    pub secret: ParamName,
    /// The secret being rotated out, still accepted until its `until`.
    #[serde(default)]
    pub previous_secret: Option<PreviousSecret>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The parameter holding the Slack app's signing secret, for interactive approvals.
    pub signing_secret: ParamName,
    /// The signing secret being rotated out, still accepted until its `until`.
    #[serde(default)]
    pub previous_signing_secret: Option<PreviousSecret>,
}

/// A secret being rotated out of an inbound check (a webhook secret, a CI secret): requests
/// signed with it are still accepted until `until`, and refused from then on, as any wrong
/// signature is. Written `{ param = "/slipway/github/webhook-secret-old", until =
/// "2026-12-01T00:00:00Z" }`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviousSecret {
    /// The parameter holding the old value.
    pub param: ParamName,
    /// When the old value stops being accepted (RFC 3339, with an offset or `Z`).
    #[serde(deserialize_with = "timestamp")]
    pub until: jiff::Timestamp,
}

impl PreviousSecret {
    /// Is the old value still accepted at `now`?
    pub fn accepted_at(&self, now: jiff::Timestamp) -> bool {
        now < self.until
    }
}

/// The keys that sign approval and rollback links. New links are signed with `signing_key`
/// and carry `key_id` (none if unset); a link is checked with the key its id names, so links
/// signed with a key listed in `previous_keys` keep working until their own expiry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// The parameter holding the key that signs new links.
    pub signing_key: ParamName,
    /// The id new links carry, so they are checked with this key after the next rotation.
    #[serde(default)]
    pub key_id: Option<KeyId>,
    /// Keys that signed links still out there. One of these (or the current key) may have no
    /// `id`: it checks links that carry none, which are all links sent before key ids existed.
    #[serde(default)]
    pub previous_keys: Vec<PreviousKey>,
}

/// A retired link-signing key, kept so the links it signed still work.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviousKey {
    /// The key id its links carry; none for the key that signed links without an id.
    #[serde(default)]
    pub id: Option<KeyId>,
    /// The parameter holding the key.
    pub param: ParamName,
}

impl ApprovalsConfig {
    /// The parameter of the key that checks links carrying `id` (`None`: links without an
    /// id), if any key is configured for it.
    pub fn key_for(&self, id: Option<&KeyId>) -> Option<&ParamName> {
        if self.key_id.as_ref() == id {
            return Some(&self.signing_key);
        }
        self.previous_keys
            .iter()
            .find(|k| k.id.as_ref() == id)
            .map(|k| &k.param)
    }
}

/// Where notifications go.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChannelConfig {
    /// A human-readable line on standard output.
    Stdout,
    /// One JSON object per line, appended to `path`.
    File { path: PathBuf },
    /// Block Kit messages posted to a Slack incoming webhook, whose URL is a secret.
    Slack { webhook_url: ParamName },
    /// Each notification as JSON, POSTed to `url` and signed with the secret stored under
    /// `secret`: `X-Slipway-Signature: sha256=<hex HMAC-SHA256 of the body>`, plus
    /// `X-Slipway-Event: <kind>` and `X-Slipway-Delivery: <id>` (stable across retries).
    ///
    /// ```toml
    /// [[notify]]
    /// type = "webhook"
    /// url = "https://hooks.example.com/slipway"
    /// secret = "/slipway/webhook/secret"
    /// ```
    Webhook { url: url::Url, secret: ParamName },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub name: PipelineName,
    pub repo: RepoName,
    #[serde(default = "default_branch")]
    pub branch: BranchName,
    pub mode: Mode,
    /// The parameter holding the secret CI signs its result callbacks with.
    pub ci_secret: ParamName,
    /// The CI secret being rotated out, still accepted until its `until`.
    #[serde(default)]
    pub previous_ci_secret: Option<PreviousSecret>,
    #[serde(default = "default_expiry", deserialize_with = "duration")]
    pub approval_expiry: SignedDuration,
    /// How long a run's build may wait for CI before it fails (from the push).
    #[serde(default = "default_build_timeout", deserialize_with = "duration")]
    pub build_timeout: SignedDuration,
    /// May the commit's author approve their own commit?
    #[serde(default)]
    pub allow_self_approval: bool,
    #[serde(default)]
    pub approvers: Vec<ApproverConfig>,
    /// The checks a git host reports (GitHub workflow or check suite names, GitLab
    /// `pipeline`, Bitbucket status keys) that must all be green for the build to pass.
    /// Empty: only the generic `/hooks/ci` callback reports builds.
    #[serde(default)]
    pub required_checks: Vec<String>,
    /// The least line coverage (percent) a build may report and still go on.
    #[serde(default)]
    pub min_coverage: Option<f64>,
    /// The release cadence alarm ([`crate::views::cadence`]): the first environment running
    /// commits the last one lacks for too long, or too many of them.
    #[serde(default)]
    pub cadence: Option<CadenceConfig>,
    pub environments: Vec<EnvironmentConfig>,
    /// Ticket watchers: the trackers told about each release of the last environment, on
    /// every ticket its commits mention (README: "Ticket watchers").
    #[serde(default)]
    pub trackers: Vec<TrackerConfig>,
}

/// `[[pipelines.trackers]]`: an issue tracker told, on each ticket a release's commits
/// mention, what shipped where and when — and again if it is rolled back.
///
/// ```toml
/// [[pipelines.trackers]]
/// kind = "jira"
/// url = "https://acme.atlassian.net"
/// keys = ["SHOP", "OPS"]
/// api = "cloud"
/// email = "bot@acme.com"
/// token = "/slipway/jira/token"
/// transition = "Done"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TrackerConfig {
    /// A comment on each Jira ticket (`ABC-123`, of the project `keys` listed): Cloud REST v3
    /// with an ADF body and basic auth (`email` + API token), or Server/Data Center REST v2
    /// with a bearer token; then, if `transition` is set, that transition by name.
    Jira {
        /// Names the tracker in its markers and logs (default `jira`).
        #[serde(default)]
        name: Option<String>,
        url: url::Url,
        keys: Vec<String>,
        #[serde(default)]
        api: JiraApi,
        #[serde(default)]
        email: Option<String>,
        token: ParamName,
        #[serde(default)]
        transition: Option<String>,
    },
    /// A comment on each GitHub issue (`#123` in the pipeline's repo, `owner/repo#123`).
    Github {
        #[serde(default)]
        name: Option<String>,
        #[serde(default = "default_github_api")]
        url: url::Url,
        token: ParamName,
    },
    /// A note on each GitLab issue (`#123` in the pipeline's project, `group/project#123`).
    Gitlab {
        #[serde(default)]
        name: Option<String>,
        #[serde(default = "default_gitlab_url")]
        url: url::Url,
        token: ParamName,
    },
    /// One POST per release listing its tickets (Jira keys of the projects `keys` lists, and
    /// `#123` / `owner/repo#123`) and commits, signed like the `webhook` notify channel.
    Webhook {
        #[serde(default)]
        name: Option<String>,
        url: url::Url,
        #[serde(default)]
        keys: Vec<String>,
        secret: ParamName,
    },
}

/// Which Jira REST API a `jira` tracker speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JiraApi {
    /// Jira Cloud: REST v3, comments in ADF, basic auth with `email` and an API token.
    #[default]
    Cloud,
    /// Jira Server / Data Center: REST v2, plain-text comments, a personal access token as
    /// a bearer token.
    Server,
}

impl TrackerConfig {
    /// `jira`, `github`, `gitlab` or `webhook`.
    pub fn kind(&self) -> &'static str {
        match self {
            TrackerConfig::Jira { .. } => "jira",
            TrackerConfig::Github { .. } => "github",
            TrackerConfig::Gitlab { .. } => "gitlab",
            TrackerConfig::Webhook { .. } => "webhook",
        }
    }

    /// The name markers and logs know the tracker by: `name`, else its kind.
    pub fn name(&self) -> &str {
        let name = match self {
            TrackerConfig::Jira { name, .. }
            | TrackerConfig::Github { name, .. }
            | TrackerConfig::Gitlab { name, .. }
            | TrackerConfig::Webhook { name, .. } => name,
        };
        name.as_deref().unwrap_or(self.kind())
    }

    /// The base URL requests go to.
    pub fn url(&self) -> &url::Url {
        match self {
            TrackerConfig::Jira { url, .. }
            | TrackerConfig::Github { url, .. }
            | TrackerConfig::Gitlab { url, .. }
            | TrackerConfig::Webhook { url, .. } => url,
        }
    }

    /// The parameter holding its token (or, for `webhook`, its signing secret).
    pub fn token(&self) -> &ParamName {
        match self {
            TrackerConfig::Jira { token, .. }
            | TrackerConfig::Github { token, .. }
            | TrackerConfig::Gitlab { token, .. } => token,
            TrackerConfig::Webhook { secret, .. } => secret,
        }
    }

    /// The Jira project keys whose tickets it recognises.
    pub fn jira_keys(&self) -> &[String] {
        match self {
            TrackerConfig::Jira { keys, .. } | TrackerConfig::Webhook { keys, .. } => keys,
            TrackerConfig::Github { .. } | TrackerConfig::Gitlab { .. } => &[],
        }
    }

    /// What is wrong with it, as `(key, problem)`.
    fn problem(&self) -> Option<(&'static str, String)> {
        let url = self.url();
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Some(("url", format!("{url} is not an http(s) URL")));
        }
        let name = self.name();
        if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        {
            return Some(("name", format!("{name:?} is not 1-64 of A-Z a-z 0-9 - _")));
        }
        for key in self.jira_keys() {
            let mut bytes = key.bytes();
            let ok = bytes.next().is_some_and(|b| b.is_ascii_uppercase())
                && key.len() >= 2
                && bytes.all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
            if !ok {
                return Some((
                    "keys",
                    format!("{key:?} is not a Jira project key (A-Z then A-Z 0-9, like \"SHOP\")"),
                ));
            }
        }
        match self {
            TrackerConfig::Jira { keys, .. } if keys.is_empty() => Some((
                "keys",
                "list the Jira project keys whose tickets to comment on, e.g. [\"SHOP\"]".into(),
            )),
            TrackerConfig::Jira {
                api: JiraApi::Cloud,
                email,
                ..
            } if email.as_deref().is_none_or(|e| !e.contains('@')) => Some((
                "email",
                "api = \"cloud\" signs in with the account's email and an API token: set email".into(),
            )),
            TrackerConfig::Jira {
                api: JiraApi::Server,
                email: Some(_),
                ..
            } => Some((
                "email",
                "api = \"server\" uses the token as a bearer token: drop email".into(),
            )),
            TrackerConfig::Jira {
                transition: Some(t), ..
            } if t.trim().is_empty() => Some(("transition", "name the transition, e.g. \"Done\"".into())),
            _ => None,
        }
    }
}

fn default_github_api() -> url::Url {
    url::Url::parse("https://api.github.com").expect("valid")
}

fn default_gitlab_url() -> url::Url {
    url::Url::parse("https://gitlab.com").expect("valid")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproverConfig {
    /// Matches the commit author's login on the git host.
    pub id: ApproverId,
    /// Where to reach them: an email address or a chat handle.
    pub address: String,
    /// Their Slack user id (`U…`), for deciding from Slack's buttons.
    #[serde(default)]
    pub slack: Option<String>,
    /// A bot account (a chat-ops bot, a release script) that is told about approvals but
    /// never counts as one: its decisions are refused. Ids ending in `[bot]` are bots too.
    #[serde(default)]
    pub bot: bool,
}

impl ApproverConfig {
    /// Bots never approve: flagged `bot = true`, or a GitHub-style `name[bot]` id.
    pub fn is_bot(&self) -> bool {
        self.bot || self.id.as_str().ends_with("[bot]")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentConfig {
    pub name: EnvName,
    /// Require an approval before this environment. Default: in `delivery` mode, the last
    /// environment only; in `deployment` mode, none (and `true` is refused).
    #[serde(default)]
    pub approval: Option<bool>,
    pub deploy: DeployTargetConfig,
    /// The `verify` phase: HTTP checks run after the release.
    #[serde(default)]
    pub smoke: Vec<SmokeCheckConfig>,
    /// How many different approvers must approve (N of the M listed). Bots never count.
    #[serde(default = "one")]
    pub approvals_required: u32,
    /// After the deploy and its smoke checks, watch a health source for a while; an
    /// unhealthy reading rolls the environment back.
    #[serde(default)]
    pub bake: Option<BakeConfig>,
    /// The IANA time zone `windows` and `freezes` are read in (default `UTC`).
    #[serde(default)]
    pub timezone: Option<String>,
    /// Weekly windows in which this environment may be deployed to; none: any time.
    #[serde(default)]
    pub windows: Vec<crate::policy::Window>,
    /// Date ranges with a reason during which nothing is deployed to this environment.
    #[serde(default)]
    pub freezes: Vec<crate::policy::Freeze>,
}

impl EnvironmentConfig {
    /// May this environment be deployed to at `now`? Read at the moment of promotion, so a
    /// freeze holds runs created before it too.
    pub fn verdict(&self, now: jiff::Timestamp) -> crate::policy::Verdict {
        crate::policy::verdict(self.timezone.as_deref(), &self.windows, &self.freezes, now)
    }
}

fn one() -> u32 {
    1
}

/// A post-deploy bake: `source` must stay healthy for `duration`, read every `interval`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BakeConfig {
    #[serde(deserialize_with = "duration")]
    pub duration: SignedDuration,
    #[serde(default = "default_bake_interval", deserialize_with = "duration")]
    pub interval: SignedDuration,
    pub source: HealthSourceConfig,
}

fn default_bake_interval() -> SignedDuration {
    SignedDuration::from_secs(30)
}

/// Where a bake reads health from.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum HealthSourceConfig {
    /// GET `url` (JSON); the number at JSON pointer `pointer` must not exceed `max`
    /// (`{ type = "http", url = "https://…/metrics", pointer = "/error_rate", max = 0.05 }`).
    Http {
        url: String,
        pointer: String,
        max: f64,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default = "default_check_timeout", deserialize_with = "duration")]
        timeout: SignedDuration,
    },
    /// A CloudWatch alarm: `ALARM` is unhealthy, `OK` and `INSUFFICIENT_DATA` are not.
    CloudwatchAlarm {
        alarm: String,
        /// Another endpoint than AWS's (an emulator).
        #[serde(default)]
        endpoint_url: Option<url::Url>,
        #[serde(default)]
        region: Option<String>,
    },
}

/// How an environment is deployed. Each target carries out the deploy phases — `backup`,
/// `migrate`, `release`, and `restore` for a rollback; a phase a target has no action for is
/// recorded as skipped.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum DeployTargetConfig {
    /// Runs programs with no stdin and a timeout: `command` releases; `backup`, `migrate` and
    /// `restore` are optional. Each gets `SLIPWAY_PHASE`, `SLIPWAY_REPO`, `SLIPWAY_SHA`,
    /// `SLIPWAY_ENV`, `SLIPWAY_RUN`, `SLIPWAY_ARTIFACT` and (restore) `SLIPWAY_BACKUP_REF`, plus
    /// each of `secrets` resolved from the secret store under its variable name, and the path
    /// of a private file holding each of `secret_files`. A backup names what it made by
    /// printing a line `SLIPWAY_BACKUP_REF=<reference>`.
    Command {
        /// The program and its arguments that releases; no shell is involved.
        command: Vec<String>,
        #[serde(default)]
        backup: Option<Vec<String>>,
        #[serde(default)]
        migrate: Option<Vec<String>>,
        #[serde(default)]
        restore: Option<Vec<String>>,
        #[serde(default)]
        working_dir: Option<PathBuf>,
        /// How long each phase may take.
        #[serde(default = "default_deploy_timeout", deserialize_with = "duration")]
        timeout: SignedDuration,
        /// Variable name → secret parameter.
        #[serde(default)]
        secrets: BTreeMap<String, ParamName>,
        /// Variable name → secret parameter, passed as a file: each phase gets the secret in a
        /// file of its own (mode 0600, in a fresh directory only slipway's user can open), the
        /// variable holds the file's path, and the directory is removed when the phase ends.
        /// For programs that read keys from files: `ssh -i "$SSH_KEY_FILE"`.
        #[serde(default)]
        secret_files: BTreeMap<String, ParamName>,
        /// Plain (non-secret) variables.
        #[serde(default)]
        env: BTreeMap<String, String>,
    },
    /// POSTs a signed JSON request per phase to `url`; the answer says whether the phase is
    /// done, failed, or accepted — then completion comes from polling its `status_url`, or
    /// from a signed callback to `POST /hooks/deploy`.
    Webhook {
        url: url::Url,
        /// The parameter holding the HMAC key requests and callbacks are signed with.
        secret: ParamName,
        /// The key being rotated out: callbacks signed with it are still accepted until its
        /// `until`. Requests are always signed with `secret`.
        #[serde(default)]
        previous_secret: Option<PreviousSecret>,
        /// How often to poll a status URL (or look for the callback).
        #[serde(default = "default_poll_interval", deserialize_with = "duration")]
        poll_interval: SignedDuration,
        #[serde(default = "default_deploy_timeout", deserialize_with = "duration")]
        timeout: SignedDuration,
    },
    /// Promotes an artifact stored in S3 (`SLIPWAY_ARTIFACT` = `s3://bucket/prefix/`): copies
    /// its objects under `prefix/releases/<run>/` in `bucket` and switches the
    /// `prefix/current` pointer, keeping the previous one for rollback.
    S3 {
        bucket: String,
        #[serde(default)]
        prefix: String,
        #[serde(default)]
        endpoint_url: Option<url::Url>,
        #[serde(default)]
        region: Option<String>,
        #[serde(default = "default_deploy_timeout", deserialize_with = "duration")]
        timeout: SignedDuration,
    },
    /// Updates a Lambda function's code from the artifact (`s3://bucket/key.zip`), publishes a
    /// version and moves `alias` to it; rollback moves the alias back.
    Lambda {
        function: String,
        alias: String,
        #[serde(default)]
        endpoint_url: Option<url::Url>,
        #[serde(default)]
        region: Option<String>,
        #[serde(default = "default_deploy_timeout", deserialize_with = "duration")]
        timeout: SignedDuration,
    },
}

fn default_poll_interval() -> SignedDuration {
    SignedDuration::from_secs(5)
}

impl DeployTargetConfig {
    /// The secrets this target needs, by the name it reads them under. A webhook's signing
    /// key is `secret`; a command's `secret_files` are here too, under their variable names
    /// (the target writes those to files).
    pub fn secrets(&self) -> BTreeMap<String, ParamName> {
        match self {
            DeployTargetConfig::Command {
                secrets, secret_files, ..
            } => secrets
                .iter()
                .chain(secret_files)
                .map(|(var, param)| (var.clone(), param.clone()))
                .collect(),
            DeployTargetConfig::Webhook { secret, .. } => BTreeMap::from([("secret".to_owned(), secret.clone())]),
            DeployTargetConfig::S3 { .. } | DeployTargetConfig::Lambda { .. } => BTreeMap::new(),
        }
    }

    /// The secret parameters this target reads.
    pub fn secret_params(&self) -> Vec<&ParamName> {
        match self {
            DeployTargetConfig::Command {
                secrets, secret_files, ..
            } => secrets.values().chain(secret_files.values()).collect(),
            DeployTargetConfig::Webhook {
                secret,
                previous_secret,
                ..
            } => std::iter::once(secret)
                .chain(previous_secret.iter().map(|p| &p.param))
                .collect(),
            DeployTargetConfig::S3 { .. } | DeployTargetConfig::Lambda { .. } => Vec::new(),
        }
    }

    /// How long one phase may take before it is stopped.
    pub fn timeout(&self) -> SignedDuration {
        match self {
            DeployTargetConfig::Command { timeout, .. }
            | DeployTargetConfig::Webhook { timeout, .. }
            | DeployTargetConfig::S3 { timeout, .. }
            | DeployTargetConfig::Lambda { timeout, .. } => *timeout,
        }
    }

    /// `command`, `webhook`, `s3` or `lambda`.
    pub fn kind(&self) -> &'static str {
        match self {
            DeployTargetConfig::Command { .. } => "command",
            DeployTargetConfig::Webhook { .. } => "webhook",
            DeployTargetConfig::S3 { .. } => "s3",
            DeployTargetConfig::Lambda { .. } => "lambda",
        }
    }
}

/// One smoke check: an HTTP request and what its answer must look like. `{sha}` in `url`,
/// `headers` values, `body_contains` and `json` values is replaced by the deployed commit's SHA, so a check
/// can prove the new version is the one answering.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmokeCheckConfig {
    pub name: String,
    pub url: String,
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_status")]
    pub expect_status: u16,
    #[serde(default)]
    pub body_contains: Option<String>,
    /// JSON pointer → the value expected there (`"/checks/database" = "ok"`).
    #[serde(default)]
    pub json: BTreeMap<String, toml::Value>,
    /// How long one request may take.
    #[serde(default = "default_check_timeout", deserialize_with = "duration")]
    pub timeout: SignedDuration,
    /// Keep retrying a failing check until this long after the first attempt.
    #[serde(default = "default_check_deadline", deserialize_with = "duration")]
    pub deadline: SignedDuration,
    /// The first wait between attempts; it doubles each time, up to 30 s.
    #[serde(default = "default_backoff", deserialize_with = "duration")]
    pub backoff: SignedDuration,
}

fn default_branch() -> BranchName {
    BranchName::parse("main").expect("valid")
}
fn default_session() -> SignedDuration {
    SignedDuration::from_hours(12)
}
fn default_expiry() -> SignedDuration {
    SignedDuration::from_hours(24)
}
fn default_build_timeout() -> SignedDuration {
    crate::domain::DEFAULT_BUILD_TIMEOUT
}
fn default_deploy_timeout() -> SignedDuration {
    SignedDuration::from_mins(15)
}
fn default_method() -> String {
    "GET".into()
}
fn default_status() -> u16 {
    200
}
fn default_check_timeout() -> SignedDuration {
    SignedDuration::from_secs(10)
}
fn default_check_deadline() -> SignedDuration {
    SignedDuration::from_mins(2)
}
fn default_backoff() -> SignedDuration {
    SignedDuration::from_secs(2)
}

/// `"2026-12-01T00:00:00Z"`: an instant, with its offset.
fn timestamp<'de, D: Deserializer<'de>>(d: D) -> Result<jiff::Timestamp, D::Error> {
    let raw = String::deserialize(d)?;
    raw.parse().map_err(|e| {
        serde::de::Error::custom(format!(
            "{raw:?} is not a time like \"2026-12-01T00:00:00Z\" (RFC 3339, with Z or an offset): {e}"
        ))
    })
}

/// `"24h"`, `"10m"`, `"1h 30m"`, `"PT5S"`.
/// `cadence = { max_age = "2d", max_commits = 20 }`: when to raise the cadence alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CadenceConfig {
    /// The longest the first environment may run commits the last one lacks.
    #[serde(default, deserialize_with = "optional_duration")]
    pub max_age: Option<SignedDuration>,
    /// The most commits the first environment may run that the last one lacks.
    #[serde(default)]
    pub max_commits: Option<u32>,
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SignedDuration>, D::Error> {
    duration(d).map(Some)
}

/// A duration like `30s`, `10m`, `24h`, or in days (`2d`, `1 week`), a day being 24 hours.
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<SignedDuration, D::Error> {
    let raw = String::deserialize(d)?;
    let parsed: SignedDuration = match raw.parse() {
        Ok(parsed) => parsed,
        Err(e) => raw
            .parse::<jiff::Span>()
            .and_then(|span| span.to_duration(jiff::SpanRelativeTo::days_are_24_hours()))
            .map_err(|_| {
                serde::de::Error::custom(format!(
                    "{raw:?} is not a duration like \"30s\", \"10m\", \"24h\" or \"2d\": {e}"
                ))
            })?,
    };
    if parsed.is_negative() {
        return Err(serde::de::Error::custom(format!("{raw:?} is negative")));
    }
    Ok(parsed)
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = Self::read(path)?;
        Self::parse(&text, path)
    }

    /// The text of a configuration file.
    pub fn read(path: &Path) -> Result<String, ConfigError> {
        std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.into(),
            error,
        })
    }

    /// Parses and validates configuration text; `path` is only used in messages. The error
    /// is the first problem found; [`Config::parse_all`] gives every one.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let (config, problems) = Self::parse_all(text, path)?;
        match problems.into_iter().next() {
            Some(first) => Err(first),
            None => Ok(config),
        }
    }

    /// Parses configuration text and lists every problem validation finds (none: the
    /// configuration is valid), in the order of the file. Only text that does not parse at all
    /// is an error: there is no configuration to look at then.
    pub fn parse_all(text: &str, path: &Path) -> Result<(Self, Vec<ConfigError>), ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let problems = config.problems(path);
        Ok((config, problems))
    }

    /// Every problem types cannot catch: each names its key.
    fn problems(&self, path: &Path) -> Vec<ConfigError> {
        let mut problems = Vec::new();
        self.validate(path, &mut problems);
        problems
    }

    /// Pushes each problem found onto `problems`, in the order of the file.
    fn validate(&self, path: &Path, problems: &mut Vec<ConfigError>) {
        let mut invalid = |key: String, problem: String| {
            problems.push(ConfigError::Invalid {
                path: path.into(),
                key,
                problem,
            });
        };
        if self.pipelines.is_empty() {
            invalid("pipelines".into(), "declare at least one [[pipelines]]".into());
        }
        if let Some(url) = &self.public_url
            && !matches!(url.scheme(), "http" | "https")
        {
            invalid("public_url".into(), format!("{url} is not an http(s) URL"));
        }
        for (key, current, previous) in self.rotations() {
            if &previous.param == current {
                invalid(
                    format!("{key}.param"),
                    format!("{current} is the current secret too: name the parameter holding the old value"),
                );
            }
        }
        if let Some(gl) = &self.gitlab
            && gl.signing_key.is_none()
            && gl.previous_signing_key.is_some()
        {
            invalid(
                "gitlab.previous_signing_key".into(),
                "there is no signing_key to rotate: set signing_key too, or drop previous_signing_key".into(),
            );
        }
        let mut viewers = HashSet::new();
        for (v, viewer) in self.dashboard.viewers.iter().enumerate() {
            if !viewers.insert(viewer.id.as_str().to_ascii_lowercase()) {
                invalid(
                    format!("dashboard.viewers[{v}].id"),
                    format!("{} is listed twice", viewer.id),
                );
            }
        }
        if self.dashboard.auth == AuthMode::Proxy {
            let header_ok = self
                .dashboard
                .proxy_header
                .as_deref()
                .is_some_and(|h| axum::http::HeaderName::from_bytes(h.as_bytes()).is_ok());
            if !header_ok {
                invalid(
                    "dashboard.proxy_header".into(),
                    "auth = \"proxy\" needs the header the proxy names people in, e.g. \"X-Forwarded-Email\"".into(),
                );
            }
            if self.dashboard.proxy_addresses.is_empty() {
                invalid(
                    "dashboard.proxy_addresses".into(),
                    "auth = \"proxy\" needs the addresses the proxy connects from, e.g. [\"127.0.0.1\"]; the header is believed from those only".into(),
                );
            }
        }
        if self.dashboard.session <= SignedDuration::ZERO {
            invalid(
                "dashboard.session".into(),
                "a session must last longer than 0s, e.g. \"12h\"".into(),
            );
        }
        let approvals = &self.approvals;
        let mut key_ids = HashSet::from([approvals.key_id.as_ref()]);
        for (k, key) in approvals.previous_keys.iter().enumerate() {
            if !key_ids.insert(key.id.as_ref()) {
                let problem = match &key.id {
                    Some(id) if approvals.key_id.as_ref() == Some(id) => {
                        format!("{:?} is the current key_id", id.as_str())
                    }
                    Some(id) => format!("another previous key already has id {:?}", id.as_str()),
                    None if approvals.key_id.is_none() => {
                        "signing_key has no key_id, so it already checks links without one: give signing_key a \
                         key_id when you keep the old key here"
                            .into()
                    }
                    None => "another previous key already has no id: only one key can check links without one".into(),
                };
                invalid(format!("approvals.previous_keys[{k}].id"), problem);
            }
        }
        let mut names = HashSet::new();
        let mut branches = HashSet::new();
        for (p, pipeline) in self.pipelines.iter().enumerate() {
            let at = |key: &str| format!("pipelines[{p}] ({}).{key}", pipeline.name);
            if !names.insert(&pipeline.name) {
                invalid(
                    at("name"),
                    format!("another pipeline is already named {:?}", pipeline.name.as_str()),
                );
            }
            if !branches.insert((&pipeline.repo, &pipeline.branch)) {
                invalid(
                    at("branch"),
                    format!("another pipeline already follows {} {}", pipeline.repo, pipeline.branch),
                );
            }
            if pipeline.approval_expiry < SignedDuration::from_mins(1) {
                invalid(at("approval_expiry"), "must be at least 1m".into());
            }
            if let Some(cadence) = &pipeline.cadence {
                if cadence.max_age.is_none() && cadence.max_commits.is_none() {
                    invalid(at("cadence"), "needs max_age, max_commits or both".into());
                }
                if cadence.max_age.is_some_and(|a| a < SignedDuration::from_hours(1)) {
                    invalid(at("cadence.max_age"), "must be at least 1h".into());
                }
                if cadence.max_commits == Some(0) {
                    invalid(at("cadence.max_commits"), "must be at least 1".into());
                }
                if pipeline.environments.len() < 2 {
                    invalid(
                        at("cadence"),
                        "compares the first environment with the last: the pipeline needs two".into(),
                    );
                }
            }
            if pipeline.build_timeout < SignedDuration::from_mins(1) {
                invalid(at("build_timeout"), "must be at least 1m".into());
            }
            if pipeline.environments.is_empty() {
                invalid(at("environments"), "declare at least one environment".into());
            }
            let mut approvers = HashSet::new();
            for (a, approver) in pipeline.approvers.iter().enumerate() {
                if !approvers.insert(approver.id.as_str().to_ascii_lowercase()) {
                    invalid(
                        at(&format!("approvers[{a}].id")),
                        format!("{} is listed twice", approver.id),
                    );
                }
            }
            let mut envs = HashSet::new();
            for (e, env) in pipeline.environments.iter().enumerate() {
                let at = |key: &str| at(&format!("environments[{e}] ({}).{key}", env.name));
                if !envs.insert(&env.name) {
                    invalid(at("name"), "environment names must be unique".into());
                }
                if pipeline.mode == Mode::Deployment && env.approval == Some(true) {
                    invalid(
                        at("approval"),
                        "mode = \"deployment\" deploys without approvals; use mode = \"delivery\"".into(),
                    );
                }
                if let DeployTargetConfig::Command {
                    command,
                    backup,
                    migrate,
                    restore,
                    ..
                } = &env.deploy
                {
                    let phases = [
                        ("command", Some(command)),
                        ("backup", backup.as_ref()),
                        ("migrate", migrate.as_ref()),
                        ("restore", restore.as_ref()),
                    ];
                    for (key, program) in phases {
                        if let Some(program) = program
                            && (program.is_empty() || program[0].trim().is_empty())
                        {
                            invalid(
                                at(&format!("deploy.{key}")),
                                "give the program to run and its arguments".into(),
                            );
                        }
                    }
                }
                if let DeployTargetConfig::S3 { bucket, .. } = &env.deploy
                    && bucket.trim().is_empty()
                {
                    invalid(at("deploy.bucket"), "name the bucket releases go to".into());
                }
                if let DeployTargetConfig::Lambda { function, alias, .. } = &env.deploy
                    && (function.trim().is_empty() || alias.trim().is_empty())
                {
                    invalid(at("deploy"), "name the function and the alias to move".into());
                }
                if env.approvals_required == 0 {
                    invalid(at("approvals_required"), "must be at least 1".into());
                }
                let humans = pipeline.approvers.iter().filter(|a| !a.is_bot()).count();
                let gated = env
                    .approval
                    .unwrap_or(pipeline.mode == Mode::Delivery && e + 1 == pipeline.environments.len());
                // None listed at all is reported for the whole pipeline, below.
                if gated
                    && !pipeline.approvers.is_empty()
                    && usize::try_from(env.approvals_required).unwrap_or(usize::MAX) > humans
                {
                    invalid(
                        at("approvals_required"),
                        format!(
                            "{} approvals are required but only {humans} approver(s) are not bots",
                            env.approvals_required
                        ),
                    );
                }
                if let Some(bake) = &env.bake {
                    if bake.duration.is_zero() || bake.interval.is_zero() {
                        invalid(at("bake"), "duration and interval must be more than 0s".into());
                    }
                    if let HealthSourceConfig::Http { url, .. } = &bake.source
                        && !url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
                    {
                        invalid(at("bake.source.url"), format!("{url:?} is not an http(s) URL"));
                    }
                    // `""` is the whole body; anything else must start with `/`.
                    if let HealthSourceConfig::Http { pointer, .. } = &bake.source
                        && !(pointer.is_empty() || pointer.starts_with('/'))
                    {
                        invalid(
                            at("bake.source.pointer"),
                            format!(
                                "{pointer:?} is not a JSON pointer (RFC 6901): it starts with / and names each \
                                 step down, like \"/errors/rate\" for {{\"errors\": {{\"rate\": 0.01}}}} (\"\" is \
                                 the whole body)"
                            ),
                        );
                    }
                }
                if let Err(problem) = crate::policy::validate(env.timezone.as_deref(), &env.windows, &env.freezes) {
                    invalid(at(&problem.key), problem.message);
                }
                let timeout = env.deploy.timeout();
                if timeout.is_zero() {
                    invalid(at("deploy.timeout"), "must be more than 0s".into());
                }
                let vars: Vec<(&str, &String)> = match &env.deploy {
                    DeployTargetConfig::Command {
                        secrets, secret_files, ..
                    } => secrets
                        .keys()
                        .map(|v| ("secrets", v))
                        .chain(secret_files.keys().map(|v| ("secret_files", v)))
                        .collect(),
                    _ => Vec::new(),
                };
                for (table, var) in vars {
                    if var.is_empty()
                        || !var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                        || var.starts_with("SLIPWAY_")
                    {
                        invalid(
                            at(&format!("deploy.{table}.{var}")),
                            "variable names are A-Z 0-9 _ and may not start with SLIPWAY_".into(),
                        );
                    }
                }
                if let DeployTargetConfig::Command {
                    secrets,
                    secret_files,
                    env: plain,
                    ..
                } = &env.deploy
                {
                    for var in secret_files.keys() {
                        let also = if secrets.contains_key(var) {
                            "deploy.secrets"
                        } else if plain.contains_key(var) {
                            "deploy.env"
                        } else {
                            continue;
                        };
                        invalid(
                            at(&format!("deploy.secret_files.{var}")),
                            format!("{var} is set in {also} too: give each variable one value"),
                        );
                    }
                }
                for (c, check) in env.smoke.iter().enumerate() {
                    let at = |key: &str| at(&format!("smoke[{c}] ({}).{key}", check.name));
                    let url = check.url.replace("{sha}", "0");
                    match url::Url::parse(&url) {
                        Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                        _ => invalid(at("url"), format!("{:?} is not an http(s) URL", check.url)),
                    }
                    if http::Method::from_bytes(check.method.as_bytes()).is_err() {
                        invalid(at("method"), format!("{:?} is not an HTTP method", check.method));
                    }
                    if !(100..=599).contains(&check.expect_status) {
                        invalid(
                            at("expect_status"),
                            format!("{} is not an HTTP status", check.expect_status),
                        );
                    }
                    for pointer in check.json.keys() {
                        if !(pointer.is_empty() || pointer.starts_with('/')) {
                            invalid(
                                at(&format!("json.{pointer:?}")),
                                "a JSON pointer starts with / (like \"/checks/database\")".into(),
                            );
                        }
                    }
                    if check.timeout.is_zero() || check.deadline < check.timeout {
                        invalid(
                            at("deadline"),
                            "timeout must be more than 0s and deadline at least as long as timeout".into(),
                        );
                    }
                }
            }
            if let Some(min) = pipeline.min_coverage
                && !(0.0..=100.0).contains(&min)
            {
                invalid(at("min_coverage"), format!("{min} is not a percentage (0-100)"));
            }
            let mut trackers = HashSet::new();
            for (t, tracker) in pipeline.trackers.iter().enumerate() {
                let at = |key: &str| at(&format!("trackers[{t}] ({}).{key}", tracker.name()));
                if let Some((key, problem)) = tracker.problem() {
                    invalid(at(key), problem);
                }
                if !trackers.insert(tracker.name()) {
                    invalid(
                        at("name"),
                        "another tracker of this pipeline has this name: give each its own name".into(),
                    );
                }
            }
            if pipeline.required_checks.iter().any(|c| c.trim().is_empty()) {
                invalid(at("required_checks"), "check names may not be empty".into());
            }
            if pipeline.mode == Mode::Delivery && pipeline.approvers.is_empty() {
                invalid(
                    at("approvers"),
                    "mode = \"delivery\" needs at least one approver".into(),
                );
            }
        }
    }

    /// Every inbound secret being rotated out: where it is configured (`github.previous_webhook_secret`),
    /// the current secret's parameter, and the previous one.
    pub fn rotations(&self) -> Vec<(String, &ParamName, &PreviousSecret)> {
        let mut all: Vec<(String, &ParamName, &Option<PreviousSecret>)> = Vec::new();
        if let Some(gh) = &self.github {
            all.push((
                "github.previous_webhook_secret".into(),
                &gh.webhook_secret,
                &gh.previous_webhook_secret,
            ));
        }
        if let Some(gl) = &self.gitlab {
            all.push(("gitlab.previous_token".into(), &gl.token, &gl.previous_token));
            if let Some(signing_key) = &gl.signing_key {
                all.push((
                    "gitlab.previous_signing_key".into(),
                    signing_key,
                    &gl.previous_signing_key,
                ));
            }
        }
        if let Some(bb) = &self.bitbucket {
            all.push(("bitbucket.previous_secret".into(), &bb.secret, &bb.previous_secret));
        }
        if let Some(slack) = &self.slack {
            all.push((
                "slack.previous_signing_secret".into(),
                &slack.signing_secret,
                &slack.previous_signing_secret,
            ));
        }
        for (p, pipeline) in self.pipelines.iter().enumerate() {
            let at = format!("pipelines[{p}] ({})", pipeline.name);
            all.push((
                format!("{at}.previous_ci_secret"),
                &pipeline.ci_secret,
                &pipeline.previous_ci_secret,
            ));
            for (e, env) in pipeline.environments.iter().enumerate() {
                if let DeployTargetConfig::Webhook {
                    secret,
                    previous_secret,
                    ..
                } = &env.deploy
                {
                    let key = format!("{at}.environments[{e}] ({}).deploy.previous_secret", env.name);
                    all.push((key, secret, previous_secret));
                }
            }
        }
        all.into_iter()
            .filter_map(|(key, current, previous)| previous.as_ref().map(|p| (key, current, p)))
            .collect()
    }

    pub fn pipeline(&self, name: &PipelineName) -> Option<&PipelineConfig> {
        self.pipelines.iter().find(|p| &p.name == name)
    }

    /// What `id` may do in the control room: act, if they approve for any pipeline (and are
    /// not a bot), else look, if they are a viewer; `None`: they may not sign in.
    pub fn role_of(&self, id: &ApproverId) -> Option<Role> {
        let approves = self
            .pipelines
            .iter()
            .filter_map(|p| p.approver(id))
            .any(|a| !a.is_bot());
        if approves {
            return Some(Role::Approver);
        }
        self.dashboard
            .viewers
            .iter()
            .any(|v| v.id.as_str().eq_ignore_ascii_case(id.as_str()))
            .then_some(Role::Viewer)
    }

    /// The pipeline that follows `repo`'s `branch`, if any.
    pub fn pipeline_for(&self, repo: &RepoName, branch: &BranchName) -> Option<&PipelineConfig> {
        self.pipelines
            .iter()
            .find(|p| p.repo.as_str().eq_ignore_ascii_case(repo.as_str()) && &p.branch == branch)
    }
}

impl PipelineConfig {
    /// The plan every new run of this pipeline follows.
    pub fn plan(&self) -> Plan {
        let last = self.environments.len() - 1;
        Plan {
            mode: self.mode,
            approval_ttl: self.approval_expiry,
            build_timeout: self.build_timeout,
            environments: self
                .environments
                .iter()
                .enumerate()
                .map(|(i, env)| EnvPlan {
                    name: env.name.clone(),
                    approval: match self.mode {
                        Mode::Deployment => false,
                        Mode::Delivery => env.approval.unwrap_or(i == last),
                    },
                    smoke: !env.smoke.is_empty(),
                    approvals_required: env.approvals_required,
                    bake: env.bake.is_some(),
                })
                .collect(),
            required_checks: self.required_checks.clone(),
            min_coverage: self.min_coverage,
        }
    }

    pub fn environment(&self, name: &EnvName) -> Option<&EnvironmentConfig> {
        self.environments.iter().find(|e| &e.name == name)
    }

    pub fn approver(&self, id: &ApproverId) -> Option<&ApproverConfig> {
        self.approvers
            .iter()
            .find(|a| a.id.as_str().eq_ignore_ascii_case(id.as_str()))
    }

    /// Every secret parameter this pipeline needs, so start-up can check they exist.
    pub fn secret_params(&self) -> impl Iterator<Item = &ParamName> {
        std::iter::once(&self.ci_secret)
            .chain(self.previous_ci_secret.iter().map(|p| &p.param))
            .chain(self.environments.iter().flat_map(|e| e.deploy.secret_params()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const EXAMPLE: &str = r#"
public_url = "http://127.0.0.1:8080"

[github]
webhook_secret = "/slipway/github/webhook-secret"

[approvals]
signing_key = "/slipway/approvals/signing-key"

[[notify]]
type = "stdout"

[[notify]]
type = "file"
path = "notifications.jsonl"

[[pipelines]]
name = "shop"
repo = "acme/shop"
mode = "delivery"
ci_secret = "/slipway/shop/ci-secret"
approval_expiry = "12h"

[[pipelines.approvers]]
id = "alice"
address = "alice@example.com"

[[pipelines.environments]]
name = "staging"
deploy = { type = "command", command = ["./deploy.sh"], timeout = "5m", secrets = { DATABASE_URL = "/slipway/shop/staging/database-url" } }

[[pipelines.environments.smoke]]
name = "health"
url = "http://127.0.0.1:9000/health"
body_contains = "{sha}"
json = { "/database" = "ok" }

[[pipelines.environments]]
name = "production"
deploy = { type = "command", command = ["./deploy.sh"] }
"#;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("slipway.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn trackers_parse_with_defaults_and_refuse_what_cannot_work() {
        let with = |trackers: &str| parse(&format!("{EXAMPLE}\n{trackers}"));
        let config = with(
            r#"
[[pipelines.trackers]]
kind = "jira"
url = "https://acme.atlassian.net"
keys = ["SHOP", "OPS2"]
email = "bot@acme.com"
token = "/slipway/jira/token"
transition = "Done"

[[pipelines.trackers]]
kind = "github"
token = "/slipway/github/token"

[[pipelines.trackers]]
kind = "gitlab"
name = "gitlab-issues"
token = "/slipway/gitlab/issues-token"
"#,
        )
        .unwrap();
        let trackers = &config.pipelines[0].trackers;
        let seen: Vec<_> = trackers
            .iter()
            .map(|t| (t.name(), t.url().as_str(), t.token().as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                ("jira", "https://acme.atlassian.net/", "/slipway/jira/token"),
                ("github", "https://api.github.com/", "/slipway/github/token"),
                ("gitlab-issues", "https://gitlab.com/", "/slipway/gitlab/issues-token"),
            ]
        );
        assert!(
            matches!(
                &trackers[0],
                TrackerConfig::Jira {
                    api: JiraApi::Cloud,
                    ..
                }
            ),
            "cloud by default"
        );
        let names = crate::embedded::required_secrets(&config);
        assert!(names.iter().any(|n| n.as_str() == "/slipway/gitlab/issues-token"));

        let cases = [
            (
                "kind = \"jira\"\nurl = \"https://x.atlassian.net\"\nkeys = [\"SHOP\"]\ntoken = \"/t\"",
                "trackers[0] (jira).email",
            ),
            (
                "kind = \"jira\"\napi = \"server\"\nurl = \"https://jira.acme\"\nkeys = [\"shop\"]\ntoken = \"/t\"",
                "trackers[0] (jira).keys",
            ),
            (
                "kind = \"jira\"\napi = \"server\"\nurl = \"https://jira.acme\"\nkeys = []\ntoken = \"/t\"",
                "trackers[0] (jira).keys",
            ),
            (
                "kind = \"github\"\nurl = \"ftp://github.acme\"\ntoken = \"/t\"",
                "trackers[0] (github).url",
            ),
            (
                "kind = \"github\"\nname = \"a b\"\ntoken = \"/t\"",
                "trackers[0] (a b).name",
            ),
            (
                "kind = \"github\"\ntoken = \"/t\"\nenvs = [\"production\"]",
                "unknown field `envs`",
            ),
            ("kind = \"trello\"\ntoken = \"/t\"", "unknown variant `trello`"),
        ];
        for (tracker, said) in cases {
            let err = with(&format!("[[pipelines.trackers]]\n{tracker}\n")).unwrap_err();
            assert!(err.contains(said), "{tracker}: {err}");
        }
        let twice = with("[[pipelines.trackers]]\nkind = \"github\"\ntoken = \"/t\"\n[[pipelines.trackers]]\nkind = \"github\"\ntoken = \"/u\"\n")
            .unwrap_err();
        assert!(twice.contains("trackers[1] (github).name"), "{twice}");
    }

    #[test]
    fn the_example_parses_with_defaults() {
        let config = parse(EXAMPLE).unwrap();
        let p = &config.pipelines[0];
        assert_eq!(p.branch.as_str(), "main");
        assert_eq!(p.approval_expiry, SignedDuration::from_hours(12));
        assert!(!p.allow_self_approval);
        let plan = p.plan();
        assert_eq!(plan.build_timeout, SignedDuration::from_hours(24), "a day by default");
        assert_eq!(
            plan.environments
                .iter()
                .map(|e| (e.name.as_str(), e.approval, e.smoke))
                .collect::<Vec<_>>(),
            [("staging", false, true), ("production", true, false)]
        );
        assert_eq!(p.environments[1].deploy.timeout(), SignedDuration::from_mins(15));
        let check = &p.environments[0].smoke[0];
        assert_eq!((check.method.as_str(), check.expect_status), ("GET", 200));
        assert_eq!(
            p.secret_params().map(|s| s.as_str()).collect::<Vec<_>>(),
            ["/slipway/shop/ci-secret", "/slipway/shop/staging/database-url"]
        );
    }

    #[test]
    fn a_pipeline_sets_how_long_its_builds_may_wait_for_ci() {
        let config = parse(&EXAMPLE.replace(
            "approval_expiry = \"12h\"",
            "approval_expiry = \"12h\"\nbuild_timeout = \"36h\"",
        ))
        .unwrap();
        assert_eq!(config.pipelines[0].plan().build_timeout, SignedDuration::from_hours(36));
    }

    #[test]
    fn errors_name_the_key_and_the_problem() {
        let cases = [
            (
                EXAMPLE.replace("repo = \"acme/shop\"", "repo = \"acme\""),
                "invalid repository \"acme\": expected owner/name",
            ),
            (
                EXAMPLE.replace("mode = \"delivery\"", "mode = \"yolo\""),
                "unknown variant `yolo`",
            ),
            (
                EXAMPLE.replace("approval_expiry = \"12h\"", "approval_expiry = \"soon\""),
                "\"soon\" is not a duration",
            ),
            (
                EXAMPLE.replace(
                    "approval_expiry = \"12h\"",
                    "approval_expiry = \"12h\"\nbuild_timeout = \"2 fortnights\"",
                ),
                "\"2 fortnights\" is not a duration",
            ),
            (
                EXAMPLE.replace(
                    "approval_expiry = \"12h\"",
                    "approval_expiry = \"12h\"\nbuild_timeout = \"30s\"",
                ),
                "pipelines[0] (shop).build_timeout: must be at least 1m",
            ),
            (
                EXAMPLE.replace("name = \"production\"", "name = \"staging\""),
                "pipelines[0] (shop).environments[1] (staging).name: environment names must be unique",
            ),
            (
                EXAMPLE.replace("command = [\"./deploy.sh\"] }", "command = [] }"),
                "environments[1] (production).deploy.command: give the program",
            ),
            (
                EXAMPLE.replace("url = \"http://127.0.0.1:9000/health\"", "url = \"ftp://x\""),
                "smoke[0] (health).url: \"ftp://x\" is not an http(s) URL",
            ),
            (
                EXAMPLE.replace("\"/database\"", "\"database\""),
                "a JSON pointer starts with /",
            ),
            (
                EXAMPLE.replace(
                    "[[pipelines.approvers]]\nid = \"alice\"\naddress = \"alice@example.com\"",
                    "",
                ),
                "pipelines[0] (shop).approvers: mode = \"delivery\" needs at least one approver",
            ),
            (
                EXAMPLE
                    .replace("mode = \"delivery\"", "mode = \"deployment\"")
                    .replace("name = \"production\"", "name = \"production\"\napproval = true"),
                "deploys without approvals",
            ),
            (
                EXAMPLE.replace(
                    "ci_secret = \"/slipway/shop/ci-secret\"",
                    "ci_secret = \"/slipway/shop/ci-secret\"\ncolour = \"blue\"",
                ),
                "unknown field `colour`",
            ),
            (
                EXAMPLE.replace("DATABASE_URL", "SLIPWAY_SHA"),
                "deploy.secrets.SLIPWAY_SHA: variable names",
            ),
            (
                format!(
                    "{EXAMPLE}\n[[pipelines]]\nname = \"shop\"\nrepo = \"acme/other\"\nmode = \"deployment\"\nci_secret = \"/x\"\nenvironments = [{{ name = \"prod\", deploy = {{ type = \"command\", command = [\"x\"] }} }}]\n"
                ),
                "pipelines[1] (shop).name: another pipeline is already named",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(&text).expect_err(expected);
            assert!(err.starts_with("slipway.toml"), "{err}");
            assert!(err.contains(expected), "expected {expected:?} in:\n{err}");
        }
    }

    #[test]
    fn every_problem_is_listed_in_the_order_of_the_file() {
        let text = EXAMPLE
            .replace("approval_expiry = \"12h\"", "approval_expiry = \"30s\"")
            .replace("command = [\"./deploy.sh\"] }", "command = [] }")
            .replace("url = \"http://127.0.0.1:9000/health\"", "url = \"ftp://x\"");
        let (_, problems) = Config::parse_all(&text, Path::new("slipway.toml")).unwrap();
        let keys: Vec<&str> = problems.iter().filter_map(ConfigError::key).collect();
        assert_eq!(
            keys,
            [
                "pipelines[0] (shop).approval_expiry",
                "pipelines[0] (shop).environments[0] (staging).smoke[0] (health).url",
                "pipelines[0] (shop).environments[1] (production).deploy.command",
            ]
        );
        let first = parse(&text).unwrap_err();
        assert_eq!(first, problems[0].to_string(), "parse stops at the first");
        assert!(Config::parse_all("pipelines = 3", Path::new("x.toml")).is_err());
    }

    #[test]
    fn a_missing_file_says_how_to_make_one() {
        let dir = tempfile::tempdir().unwrap();
        let err = Config::load(&dir.path().join("slipway.toml")).unwrap_err().to_string();
        assert!(
            err.ends_with("slipway.toml: No such file or directory — create one with `slipway init`, or pass --config"),
            "{err}"
        );
    }

    #[test]
    fn secret_files_are_secrets_given_as_files() {
        let with = |files: &str| {
            EXAMPLE.replace(
                "command = [\"./deploy.sh\"] }",
                &format!("command = [\"./deploy.sh\"], env = {{ HOST = \"h\" }}, secret_files = {files} }}"),
            )
        };
        let config = parse(&with("{ SSH_KEY_FILE = \"/slipway/shop/deploy-key\" }")).unwrap();
        let deploy = &config.pipelines[0].environments[1].deploy;
        assert_eq!(
            deploy
                .secrets()
                .into_iter()
                .map(|(v, p)| (v, p.to_string()))
                .collect::<Vec<_>>(),
            [("SSH_KEY_FILE".to_owned(), "/slipway/shop/deploy-key".to_owned())]
        );
        assert!(
            crate::embedded::required_secrets(&config)
                .iter()
                .any(|p| p.as_str() == "/slipway/shop/deploy-key"),
            "start-up needs it"
        );
        let cases = [
            (
                "{ \"ssh key\" = \"/k\" }",
                "environments[1] (production).deploy.secret_files.ssh key: variable names",
            ),
            (
                "{ SLIPWAY_KEY = \"/k\" }",
                "deploy.secret_files.SLIPWAY_KEY: variable names are A-Z 0-9 _ and may not start with SLIPWAY_",
            ),
            (
                "{ HOST = \"/k\" }",
                "deploy.secret_files.HOST: HOST is set in deploy.env too",
            ),
            ("{ KEY = \"k\" }", "invalid parameter name"),
        ];
        for (files, said) in cases {
            let err = parse(&with(files)).unwrap_err();
            assert!(err.contains(said), "{files}: {err}");
        }
        let both = EXAMPLE.replace(
            "secrets = { DATABASE_URL = \"/slipway/shop/staging/database-url\" } }",
            "secrets = { DATABASE_URL = \"/a\" }, secret_files = { DATABASE_URL = \"/b\" } }",
        );
        let err = parse(&both).unwrap_err();
        assert!(
            err.contains("deploy.secret_files.DATABASE_URL: DATABASE_URL is set in deploy.secrets too"),
            "{err}"
        );
    }

    #[test]
    fn the_example_files_commented_secret_files_line_parses() {
        let text = include_str!("../../slipway.example.toml").replace("# secret_files = ", "secret_files = ");
        let config = parse(&text).unwrap();
        assert!(
            config.pipelines[0].environments[0]
                .deploy
                .secret_params()
                .iter()
                .any(|p| p.as_str() == "/slipway/shop/deploy-key")
        );
    }

    #[test]
    fn a_bake_pointer_that_is_not_a_json_pointer_stops_start_up() {
        let with_pointer = |pointer: &str| {
            EXAMPLE.replace(
                "name = \"production\"\n",
                &format!(
                    "name = \"production\"\nbake = {{ duration = \"10m\", source = {{ type = \"http\", url = \"https://metrics.example.com/shop\", pointer = {pointer:?}, max = 0.05 }} }}\n"
                ),
            )
        };
        for bad in ["error_rate", "errors.rate", "#/errors/rate", " /errors/rate"] {
            let err = parse(&with_pointer(bad)).expect_err(bad);
            assert!(
                err.starts_with(&format!(
                    "slipway.toml: pipelines[0] (shop).environments[1] (production).bake.source.pointer: {bad:?} is not a JSON pointer (RFC 6901)"
                )),
                "{err}"
            );
            assert!(err.contains("\"/errors/rate\""), "{err}");
        }
        for good in ["/error_rate", "/errors/rate", "/checks/0/rate", ""] {
            let config = parse(&with_pointer(good)).unwrap_or_else(|e| panic!("{good:?}: {e}"));
            let bake = config.pipelines[0].environments[1].bake.as_ref().unwrap();
            assert!(matches!(&bake.source, HealthSourceConfig::Http { pointer, .. } if pointer == good));
        }
    }

    /// The example with a GitHub secret and the shop pipeline's CI secret being rotated.
    fn rotating(github_until: &str) -> String {
        EXAMPLE
            .replace(
                "webhook_secret = \"/slipway/github/webhook-secret\"\n",
                &format!(
                    "webhook_secret = \"/slipway/github/webhook-secret\"\nprevious_webhook_secret = {{ param = \"/slipway/github/webhook-secret-old\", until = \"{github_until}\" }}\n"
                ),
            )
            .replace(
                "ci_secret = \"/slipway/shop/ci-secret\"\n",
                "ci_secret = \"/slipway/shop/ci-secret\"\nprevious_ci_secret = { param = \"/slipway/shop/ci-secret-old\", until = \"2026-12-01T01:00:00+01:00\" }\n",
            )
    }

    #[test]
    fn previous_secrets_are_listed_with_their_key_and_needed_at_start_up() {
        let config = parse(&rotating("2026-12-01T00:00:00Z")).unwrap();
        let rotations: Vec<_> = config
            .rotations()
            .into_iter()
            .map(|(key, current, previous)| (key, current.to_string(), previous.param.to_string(), previous.until))
            .collect();
        let until: jiff::Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        assert_eq!(
            rotations,
            [
                (
                    "github.previous_webhook_secret".to_owned(),
                    "/slipway/github/webhook-secret".to_owned(),
                    "/slipway/github/webhook-secret-old".to_owned(),
                    until
                ),
                (
                    "pipelines[0] (shop).previous_ci_secret".to_owned(),
                    "/slipway/shop/ci-secret".to_owned(),
                    "/slipway/shop/ci-secret-old".to_owned(),
                    until
                ),
            ]
        );
        let previous = &config.rotations()[0].2;
        assert!(previous.accepted_at("2026-11-30T23:59:59Z".parse().unwrap()));
        assert!(!previous.accepted_at(until));
        assert!(
            config.pipelines[0]
                .secret_params()
                .any(|p| p.as_str() == "/slipway/shop/ci-secret-old")
        );
        // An `until` already past parses: start-up warns, it does not refuse.
        assert!(parse(&rotating("2020-01-01T00:00:00Z")).is_ok());
    }

    #[test]
    fn rotation_mistakes_name_the_key() {
        let cases = [
            (rotating("next tuesday"), "\"next tuesday\" is not a time like \"2026-12-01T00:00:00Z\""),
            (rotating("2026-12-01"), "is not a time like"),
            (
                rotating("2026-12-01T00:00:00Z").replace("webhook-secret-old", "webhook-secret"),
                "github.previous_webhook_secret.param: /slipway/github/webhook-secret is the current secret too",
            ),
            (
                rotating("2026-12-01T00:00:00Z").replace("until = ", "expires = "),
                "unknown field `expires`",
            ),
            (
                EXAMPLE.replace(
                    "signing_key = \"/slipway/approvals/signing-key\"",
                    "signing_key = \"/slipway/approvals/signing-key\"\nprevious_keys = [{ param = \"/a\" }, { param = \"/b\" }]",
                ),
                "approvals.previous_keys[0].id: signing_key has no key_id, so it already checks links without one",
            ),
            (
                EXAMPLE.replace(
                    "signing_key = \"/slipway/approvals/signing-key\"",
                    "signing_key = \"/slipway/approvals/signing-key\"\nkey_id = \"k\"\nprevious_keys = [{ param = \"/a\" }, { param = \"/b\" }]",
                ),
                "approvals.previous_keys[1].id: another previous key already has no id",
            ),
            (
                EXAMPLE.replace(
                    "signing_key = \"/slipway/approvals/signing-key\"",
                    "signing_key = \"/slipway/approvals/signing-key\"\nprevious_keys = [{ id = \"a\", param = \"/a\" }, { id = \"a\", param = \"/b\" }]",
                ),
                "approvals.previous_keys[1].id: another previous key already has id \"a\"",
            ),
            (
                EXAMPLE.replace(
                    "signing_key = \"/slipway/approvals/signing-key\"",
                    "signing_key = \"/slipway/approvals/signing-key\"\nkey_id = \"2026-11\"\nprevious_keys = [{ id = \"2026-11\", param = \"/a\" }]",
                ),
                "approvals.previous_keys[0].id: \"2026-11\" is the current key_id",
            ),
            (
                EXAMPLE.replace(
                    "signing_key = \"/slipway/approvals/signing-key\"",
                    "signing_key = \"/slipway/approvals/signing-key\"\nkey_id = \"2026.11\"",
                ),
                "invalid key id \"2026.11\"",
            ),
            (
                format!(
                    "{EXAMPLE}\n[gitlab]\ntoken = \"/t\"\nprevious_signing_key = {{ param = \"/k\", until = \"2026-12-01T00:00:00Z\" }}\n"
                ),
                "gitlab.previous_signing_key: there is no signing_key to rotate",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(&text).expect_err(expected);
            assert!(err.contains(expected), "expected {expected:?} in:\n{err}");
        }
    }

    #[test]
    fn each_link_key_id_finds_its_key() {
        let config = parse(&EXAMPLE.replace(
            "signing_key = \"/slipway/approvals/signing-key\"",
            "signing_key = \"/p/new\"\nkey_id = \"2026-11\"\nprevious_keys = [{ id = \"2026-10\", param = \"/p/old\" }, { param = \"/p/first\" }]",
        ))
        .unwrap();
        let approvals = &config.approvals;
        let id = |s: &str| KeyId::parse(s).unwrap();
        let found = |k: Option<&KeyId>| approvals.key_for(k).map(|p| p.to_string());
        assert_eq!(found(Some(&id("2026-11"))).as_deref(), Some("/p/new"));
        assert_eq!(found(Some(&id("2026-10"))).as_deref(), Some("/p/old"));
        assert_eq!(found(None).as_deref(), Some("/p/first"), "links without an id");
        assert_eq!(found(Some(&id("2026-09"))), None);

        // Before any rotation: the one key has no id and checks links without one.
        let plain = parse(EXAMPLE).unwrap();
        assert_eq!(
            plain.approvals.key_for(None).map(|p| p.as_str()),
            Some("/slipway/approvals/signing-key")
        );
        assert_eq!(plain.approvals.key_for(Some(&id("2026-11"))), None);
    }

    #[test]
    fn the_example_file_parses_and_so_do_its_commented_rotations() {
        let text = include_str!("../../slipway.example.toml");
        parse(text).unwrap();
        let rotated = text
            .replacen("webhook_secret = \"/slipway/github/webhook-secret\"\n", "", 1)
            .replacen("signing_key = \"/slipway/approvals/signing-key\"\n", "", 1)
            .replace("# webhook_secret = ", "webhook_secret = ")
            .replace("# previous_webhook_secret = ", "previous_webhook_secret = ")
            .replace(
                "# signing_key = \"/slipway/approvals/",
                "signing_key = \"/slipway/approvals/",
            )
            .replace("# key_id = ", "key_id = ")
            .replace("# previous_keys = ", "previous_keys = ");
        let config = parse(&rotated).unwrap();
        assert_eq!(config.rotations().len(), 1);
        assert_eq!(config.approvals.key_id.as_ref().map(KeyId::as_str), Some("2026-11"));
        assert_eq!(
            config.approvals.key_for(None).map(ParamName::as_str),
            Some("/slipway/approvals/signing-key")
        );
    }

    #[test]
    fn deployment_mode_has_no_approvals() {
        let config = parse(&EXAMPLE.replace("mode = \"delivery\"", "mode = \"deployment\"")).unwrap();
        assert!(config.pipelines[0].plan().environments.iter().all(|e| !e.approval));
    }

    #[test]
    fn pipelines_are_found_by_repo_and_branch() {
        let config = parse(EXAMPLE).unwrap();
        let repo = RepoName::parse("Acme/Shop").unwrap();
        assert!(
            config
                .pipeline_for(&repo, &BranchName::parse("main").unwrap())
                .is_some()
        );
        assert!(config.pipeline_for(&repo, &BranchName::parse("dev").unwrap()).is_none());
    }
}

//! What a release brings: every commit a push carried, not only its head, kept with the run
//! and shown on its page and in its JSON; the release log written with each release, and
//! DORA's four keys read from it.

use http::StatusCode;
use jiff::SignedDuration;
use serde_json::{Value, json};
use slipway::domain::RunStatus;
use slipway_tests::{GITHUB_SECRET, Pipeline, SHA, SHA2, push_payload};

const SITE: &str = "https://slipway.example.com";
const FIRST: &str = "1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a";
const SECOND: &str = "2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b";

/// A push of three commits, `SHA` the newest, as GitHub lists them (oldest first).
fn three_commit_push() -> String {
    let mut payload: Value = serde_json::from_str(&push_payload("acme/shop", "main", SHA)).expect("JSON");
    let head = payload["head_commit"].clone();
    let commit = |id: &str, message: &str, name: &str, at: &str| {
        let mut c = head.clone();
        c["id"] = json!(id);
        c["message"] = json!(message);
        c["author"] = json!({"name": name, "email": "x@example.com"});
        c["timestamp"] = json!(at);
        c
    };
    payload["before"] = json!("0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f");
    payload["compare"] = json!("https://github.com/acme/shop/compare/0f0f0f0f0f0f...a1b2c3d4e5f6");
    payload["commits"] = json!([
        commit(
            FIRST,
            "SHOP-1 Add the <basket> model\n\nIt holds items.",
            "Bob",
            "2026-11-20T09:00:00+01:00"
        ),
        commit(SECOND, "SHOP-2 Price the basket", "Carol", "2026-11-20T10:00:00Z"),
        head,
    ]);
    payload.to_string()
}

#[tokio::test]
async fn a_run_keeps_every_commit_its_push_carried_and_its_page_lists_them() {
    let p = Pipeline::start().await;
    let answer = p
        .github("push", "d-three", three_commit_push().as_bytes(), GITHUB_SECRET)
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let run = p.run(SHA).await;
    let carried: Vec<_> = run.carried.commits.iter().map(|c| c.sha.as_str()).collect();
    assert_eq!(carried, [FIRST, SECOND, SHA], "oldest first, the head last");
    assert_eq!(run.carried.commits[0].author, "Bob");
    assert_eq!(
        run.carried.commits[1].at.map(|t| t.to_string()).as_deref(),
        Some("2026-11-20T10:00:00Z")
    );
    // git's order is learned from them too: the older commits come before the head.
    assert_eq!(
        run.parents.len(),
        3,
        "before and the two older commits: {:?}",
        run.parents
    );

    let page = p.read(&format!("{SITE}/runs/{}", run.id)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Commits this push carried (3)"), "{}", page.body);
    // Newest first on the page, each message's first line only, escaped.
    let (second, first) = (
        page.body.find("SHOP-2 Price").unwrap(),
        page.body.find("SHOP-1 Add").unwrap(),
    );
    assert!(second < first, "newest first");
    assert!(page.body.contains("SHOP-1 Add the &lt;basket&gt; model"), "escaped");
    assert!(!page.body.contains("It holds items."), "the first line only");

    let json = p.read(&format!("{SITE}/api/runs/{}", run.id)).await;
    let body: Value = serde_json::from_str(&json.body).expect("JSON");
    assert_eq!(body["carried"]["commits"].as_array().map(Vec::len), Some(3), "{body}");
    assert_eq!(
        body["carried"]["compare_url"],
        "https://github.com/acme/shop/compare/0f0f0f0f0f0f...a1b2c3d4e5f6"
    );
}

#[tokio::test]
async fn a_push_of_one_commit_adds_no_list_to_the_run_page() {
    let p = Pipeline::start().await;
    p.push(SHA).await;
    let run = p.run(SHA).await;
    assert_eq!(run.carried.commits.len(), 1);
    let page = p.read(&format!("{SITE}/runs/{}", run.id)).await;
    assert!(!page.body.contains("Commits this push carried"), "{}", page.body);
}

/// A push moving `main` from `before` to `sha`, carrying `commits` (oldest first, `sha`
/// last), each committed the given minutes before now and naming an issue: the one numbered
/// by its age in minutes.
async fn push_commits(p: &Pipeline, sha: &str, before: &str, commits: &[(&str, i64)]) {
    let listed: Vec<(&str, String, Option<jiff::Timestamp>)> = commits
        .iter()
        .map(|(id, minutes)| {
            let at = p.now() - SignedDuration::from_mins(*minutes);
            (*id, format!("Change {} (#{minutes})", &id[..4]), Some(at))
        })
        .collect();
    let listed: Vec<(&str, &str, Option<jiff::Timestamp>)> = listed
        .iter()
        .map(|(id, message, at)| (*id, message.as_str(), *at))
        .collect();
    p.push_carrying(sha, before, &listed).await;
}

/// `sha`'s push (see [`push_commits`]) built green, approved by alice, and the workers left
/// to it; then an hour passes.
async fn ship(p: &Pipeline, sha: &str, before: &str, commits: &[(&str, i64)]) {
    p.healthy("staging", sha);
    push_commits(p, sha, before, commits).await;
    assert_eq!(p.ci(sha, "success").await.status, StatusCode::OK);
    p.run_queues().await;
    let approve = p.approval_for("alice").approve_url.expect("an approve link");
    assert_eq!(p.post_decision(&approve, "approve").await.status, StatusCode::OK);
    p.run_queues().await;
    p.advance(SignedDuration::from_hours(1));
}

/// Production's release log over the last day.
async fn production_log(p: &Pipeline) -> Vec<slipway::views::release_log::Logged> {
    slipway::views::release_log::releases(
        &p.app,
        &"shop".parse().expect("a name"),
        &"production".parse().expect("a name"),
        p.now() - SignedDuration::from_hours(24),
        p.now(),
    )
    .await
    .expect("the log reads")
}

const C1: &str = "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1";
const ZERO: &str = "0000000000000000000000000000000000000000";

/// SHA ships healthy with an older commit; SHA2 ships, fails production's smoke checks and
/// is rolled back.
async fn a_release_and_a_rollback(p: &Pipeline) {
    p.healthy("production", SHA);
    ship(p, SHA, ZERO, &[(C1, 90), (SHA, 30)]).await;
    assert_eq!(p.run(SHA).await.status(), RunStatus::Released);
    // Production keeps answering with SHA's version: SHA2's smoke checks fail there.
    ship(p, SHA2, SHA, &[(SHA2, 10)]).await;
    assert_eq!(p.run(SHA2).await.status(), RunStatus::RolledBack);
    assert_eq!(p.deployed("production"), [SHA, SHA2, SHA]);
}

#[tokio::test]
async fn the_four_keys_come_from_the_release_log_of_production() {
    let p = Pipeline::start().await;
    a_release_and_a_rollback(&p).await;

    let answer = p.read(&format!("{SITE}/api/pipelines/shop/metrics?days=7")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let body: Value = serde_json::from_str(&answer.body).expect("JSON");
    let m = &body["metrics"];
    assert_eq!(m["env"], "production");
    assert_eq!(m["days"], 7);
    assert_eq!(m["deployments"], 2, "{m}");
    assert_eq!(m["failed_deployments"], 1, "{m}");
    assert_eq!(m["change_failure_rate"], 0.5, "{m}");
    assert_eq!(m["unrestored"], 0, "{m}");
    // SHA's two commits, committed 90 and 30 minutes before the push; SHA2's commit was
    // shipped only by a failing deploy, so it has no lead time yet.
    assert_eq!(m["lead_time"]["count"], 2, "{m}");
    let (median, p90) = (
        m["lead_time"]["median"].as_i64().expect("seconds"),
        m["lead_time"]["p90"].as_i64().expect("seconds"),
    );
    assert!((30 * 60..90 * 60).contains(&median) && p90 >= 90 * 60, "{m}");
    assert_eq!(m["time_to_restore"]["count"], 1, "{m}");
    assert!(m["time_to_restore"]["median"].as_i64().expect("seconds") >= 0, "{m}");
    assert_eq!(m["daily"].as_array().map(Vec::len), Some(7), "{m}");
    let per_day: i64 = m["daily"]
        .as_array()
        .expect("days")
        .iter()
        .map(|d| d["deployments"].as_i64().expect("a count"))
        .sum();
    assert_eq!(per_day, 2);

    // The log itself: staging's two releases, production's two and the one put back.
    let log = production_log(&p).await;
    let lines: Vec<_> = log
        .iter()
        .map(|e| (&e.sha.as_str()[..8], e.put_back_by.is_some(), e.failed_at.is_some()))
        .collect();
    assert_eq!(
        lines,
        [
            (&SHA[..8], false, false),
            (&SHA2[..8], false, true),
            (&SHA[..8], true, false)
        ]
    );
    let shipped: Vec<_> = log[0].shipped.iter().map(|s| s.sha.as_str()).collect();
    assert_eq!(shipped, [C1, SHA], "the first release ships its own push's commits");
    let shipped: Vec<_> = log[1].shipped.iter().map(|s| s.sha.as_str()).collect();
    assert_eq!(shipped, [SHA2], "the second, the commits since the first");

    // Bad input.
    for (query, status) in [
        ("?days=0", StatusCode::BAD_REQUEST),
        ("?days=many", StatusCode::BAD_REQUEST),
        ("?days=367", StatusCode::BAD_REQUEST),
    ] {
        let answer = p.read(&format!("{SITE}/api/pipelines/shop/metrics{query}")).await;
        assert_eq!(answer.status, status, "{query}: {}", answer.body);
        assert!(
            answer.body.contains("days must be a number from 1 to 366"),
            "{}",
            answer.body
        );
    }
    let unknown = p.read(&format!("{SITE}/api/pipelines/nope/metrics")).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let anonymous = p.get(&format!("{SITE}/api/pipelines/shop/metrics")).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_pipeline_page_shows_the_four_keys_and_a_chart_drawn_on_the_server() {
    let p = Pipeline::start().await;
    a_release_and_a_rollback(&p).await;
    let page = p.read(&format!("{SITE}/pipelines/shop")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Delivery to production"), "{}", page.body);
    assert!(
        page.body.contains("50%") && page.body.contains("(1 of 2)"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("<svg") && !page.body.contains("<script"),
        "{}",
        page.body
    );
    // An older page of the history leaves the figures (and their reads) out.
    let older = p.read(&format!("{SITE}/pipelines/shop?before=shop:1")).await;
    assert_eq!(older.status, StatusCode::OK);
    assert!(!older.body.contains("Delivery to"), "{}", older.body);
}

#[tokio::test]
async fn the_sweep_writes_again_a_release_a_crash_left_out_of_the_log() {
    let p = Pipeline::start().await;
    p.healthy("production", SHA);
    ship(&p, SHA, ZERO, &[(SHA, 30)]).await;
    // The month's record vanishes, as if the worker died between recording the release in
    // the environment's record and writing the log.
    let month = p.now().to_zoned(jiff::tz::TimeZone::UTC).date();
    for env in ["staging", "production"] {
        let key = slipway::ports::StoreKey::release_log(
            &"shop".parse().expect("a name"),
            &env.parse().expect("a name"),
            month.year(),
            month.month(),
        );
        slipway::ports::StateStore::remove(&p.store, &key)
            .await
            .expect("removed");
    }
    let figures = |p: &Pipeline| {
        let app = p.app.clone();
        async move {
            let config = app.config.pipelines[0].clone();
            slipway::views::delivery::pipeline_figures(&app, &config, 7)
                .await
                .expect("figures")
                .expect("an environment")
        }
    };
    assert_eq!(figures(&p).await.deployments, 0);
    slipway::sweep::run_once(&p.app).await.expect("the sweep runs");
    assert_eq!(figures(&p).await.deployments, 1, "the sweep logged the release again");
    // Once is enough: a second sweep, and a redelivered settle, change nothing.
    slipway::sweep::run_once(&p.app).await.expect("the sweep runs");
    assert_eq!(figures(&p).await.deployments, 1);
}

/// This process keeps the month it wrote last, so its next release there does not read it.
/// Another process (another container, the sweep) that wrote the month since is not written
/// over: the write over the old version is refused, the month read again, nothing lost.
#[tokio::test]
async fn a_month_written_by_another_process_since_is_read_again_and_nothing_is_lost() {
    use slipway::ports::StateStore as _;
    use slipway::views::release_log::Month;
    let p = Pipeline::start().await;
    p.healthy("production", SHA);
    ship(&p, SHA, ZERO, &[(SHA, 30)]).await;
    let [first] = production_log(&p).await.try_into().expect("one release");
    let day = first.at.to_zoned(jiff::tz::TimeZone::UTC).date();
    let key = slipway::ports::StoreKey::release_log(
        &"shop".parse().expect("a name"),
        &"production".parse().expect("a name"),
        day.year(),
        day.month(),
    );
    // Another process marks the release failing, behind this one's back.
    let stored = p.store.get(&key).await.expect("the month reads").expect("a month");
    let mut month: Month = serde_json::from_slice(&stored.value).expect("a month");
    let failed_at = first.at + SignedDuration::from_mins(5);
    month.releases[0].failed_at = Some(failed_at);
    p.store
        .replace(
            &key,
            serde_json::to_vec(&month).expect("serialises").into(),
            &stored.version,
        )
        .await
        .expect("the other process writes");
    p.healthy("production", SHA2);
    ship(&p, SHA2, SHA, &[(SHA2, 10)]).await;
    let log = production_log(&p).await;
    let shas: Vec<&str> = log.iter().map(|l| l.sha.as_str()).collect();
    assert_eq!(shas, [SHA, SHA2], "{log:#?}");
    assert_eq!(log[0].failed_at, Some(failed_at), "the other process's word stands");
}

const SHA3: &str = "c3d4e5f60718293a4b5c6d7e8f90123456789012";
const SHA4: &str = "d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4";

/// Pushes `sha` on top of `before` with one commit and lets staging take it; production's
/// approval waits.
async fn to_staging(p: &Pipeline, sha: &str, before: &str) {
    p.healthy("staging", sha);
    push_commits(p, sha, before, &[(sha, 5)]).await;
    assert_eq!(p.ci(sha, "success").await.status, StatusCode::OK);
    p.run_queues().await;
}

#[tokio::test]
async fn a_slipping_cadence_is_announced_once_repeated_daily_and_cleared_when_production_catches_up() {
    let config = slipway_tests::CONFIG.replacen(
        "mode = \"delivery\"",
        "mode = \"delivery\"\ncadence = { max_age = \"48h\", max_commits = 1 }",
        1,
    );
    let p = Pipeline::with_config(&config).await;
    p.healthy("production", SHA);
    ship(&p, SHA, ZERO, &[(SHA, 30)]).await;
    let sweep = || async { slipway::sweep::run_once(&p.app).await.expect("the sweep runs") };
    assert_eq!(sweep().await.cadence_notices, 0, "production runs what staging runs");

    // Staging takes two commits production lacks: over max_commits.
    to_staging(&p, SHA2, SHA).await;
    to_staging(&p, SHA3, SHA2).await;
    assert_eq!(sweep().await.cadence_notices, 1);
    let alarms = p.notifications_of("cadence");
    assert_eq!(alarms.len(), 1, "{alarms:#?}");
    assert!(
        alarms[0].title.contains("2 commits not in production"),
        "{}",
        alarms[0].title
    );
    assert_eq!(alarms[0].run_id.to_string(), format!("shop-{SHA3}"));
    // The overview says so.
    let home = p.read(&format!("{SITE}/")).await;
    assert!(home.body.contains("Release cadence:"), "{}", home.body);

    // Later sweeps the same day say nothing new; a day on, once more.
    p.advance(SignedDuration::from_hours(2));
    assert_eq!(sweep().await.cadence_notices, 0);
    p.advance(SignedDuration::from_hours(23));
    assert_eq!(sweep().await.cadence_notices, 1);
    assert_eq!(p.notifications_of("cadence").len(), 2);

    // The waiting approvals expired meanwhile; a fourth commit goes all the way: all clear,
    // once.
    p.healthy("production", SHA4);
    ship(&p, SHA4, SHA3, &[(SHA4, 5)]).await;
    assert_eq!(p.run(SHA4).await.status(), RunStatus::Released);
    assert_eq!(sweep().await.cadence_notices, 1);
    assert_eq!(p.notifications_of("cadence_cleared").len(), 1);
    assert_eq!(sweep().await.cadence_notices, 0);
    let home = p.read(&format!("{SITE}/")).await;
    assert!(!home.body.contains("Release cadence:"), "{}", home.body);
}

#[test]
fn a_cadence_needs_a_bound_and_two_environments() {
    for (cadence, problem) in [
        ("cadence = {}", "needs max_age, max_commits or both"),
        ("cadence = { max_age = \"10m\" }", "must be at least 1h"),
        ("cadence = { max_commits = 0 }", "must be at least 1"),
    ] {
        let config =
            slipway_tests::CONFIG.replacen("mode = \"delivery\"", &format!("mode = \"delivery\"\n{cadence}"), 1);
        let error = slipway::config::Config::parse(&config, std::path::Path::new("slipway.toml"))
            .expect_err(cadence)
            .to_string();
        assert!(
            error.contains(problem) && error.contains("cadence"),
            "{cadence}: {error}"
        );
    }
}

#[test]
fn a_cadence_reads_days_as_the_readme_writes_them() {
    let config = slipway_tests::CONFIG.replacen(
        "mode = \"delivery\"",
        "mode = \"delivery\"\ncadence = { max_age = \"2d\", max_commits = 20 }",
        1,
    );
    let config = slipway::config::Config::parse(&config, std::path::Path::new("slipway.toml")).expect("valid");
    let cadence = config.pipelines[0].cadence.expect("a cadence");
    assert_eq!(cadence.max_age, Some(SignedDuration::from_hours(48)));
    assert_eq!(cadence.max_commits, Some(20));
}

#[tokio::test]
async fn a_release_page_says_what_shipped_who_approved_and_how_the_deploy_went() {
    let p = Pipeline::start().await;
    p.healthy("production", SHA);
    ship(&p, SHA, ZERO, &[(C1, 90), (SHA, 30)]).await;
    // The released notification links to the release page.
    let released = p.notifications_of("released");
    let text = &released.last().expect("a released notice").text;
    let url = text
        .split("What shipped: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("a release link")
        .to_owned();
    assert!(
        url.starts_with(&format!("{SITE}/pipelines/shop/releases/production/")),
        "{text}"
    );
    let page = p.read(&url).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("What shipped (2 commits)"), "{}", page.body);
    assert!(
        page.body.contains(&C1[..8]) && page.body.contains(&SHA[..8]),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("Approved by") && page.body.contains("alice"),
        "{}",
        page.body
    );
    // Without trackers, its tickets are the repository's own issues its commits name.
    assert!(page.body.contains("acme/shop#90, acme/shop#30"), "{}", page.body);
    assert!(
        page.body.contains("deploy:production") && page.body.contains("release"),
        "{}",
        page.body
    );
    // The pipeline page's releases link to their pages.
    let pipeline = p.read(&format!("{SITE}/pipelines/shop")).await.body;
    assert!(pipeline.contains(url.trim_start_matches(SITE)), "{pipeline}");

    // SHA2 ships C2 and itself, fails production's checks and is put back: its page says so,
    // and lists only what it brought since SHA.
    const C2: &str = "c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2";
    ship(&p, SHA2, SHA, &[(C2, 20), (SHA2, 10)]).await;
    let log = production_log(&p).await;
    let failed = log.iter().find(|e| e.sha.as_str() == SHA2).expect("SHA2's release");
    let page = p
        .read(&format!(
            "{SITE}/pipelines/shop/releases/production/{}",
            failed.at.as_second()
        ))
        .await;
    assert!(page.body.contains("Found failing"), "{}", page.body);
    assert!(
        page.body.contains("What shipped (2 commits)") && page.body.contains(&C2[..8]),
        "{}",
        page.body
    );
    assert!(!page.body.contains(&C1[..8]), "C1 shipped before: {}", page.body);

    // Bad input: an unknown environment or release, a name that is no time.
    for (path, status) in [
        ("/pipelines/shop/releases/qa/1", StatusCode::NOT_FOUND),
        ("/pipelines/shop/releases/production/1", StatusCode::NOT_FOUND),
        ("/pipelines/shop/releases/production/yesterday", StatusCode::BAD_REQUEST),
        ("/pipelines/nope/releases/production/1", StatusCode::NOT_FOUND),
    ] {
        assert_eq!(p.read(&format!("{SITE}{path}")).await.status, status, "{path}");
    }
    assert_eq!(
        p.get(&url).await.status,
        StatusCode::UNAUTHORIZED,
        "anonymous visitors get the sign-in page"
    );
}

#[tokio::test]
async fn a_month_of_the_log_that_no_longer_reads_never_stops_the_sweep() {
    let p = Pipeline::start().await;
    p.healthy("production", SHA);
    // Production's month is garbage before the release is logged there.
    let month = p.now().to_zoned(jiff::tz::TimeZone::UTC).date();
    let key = slipway::ports::StoreKey::release_log(
        &"shop".parse().expect("a name"),
        &"production".parse().expect("a name"),
        month.year(),
        month.month(),
    );
    slipway::ports::StateStore::create(&p.store, &key, bytes::Bytes::from_static(b"not json"))
        .await
        .expect("written");
    ship(&p, SHA, ZERO, &[(SHA, 30)]).await;
    assert_eq!(p.run(SHA).await.status(), RunStatus::Released, "the release went on");
    let swept = slipway::sweep::run_once(&p.app).await;
    assert!(swept.is_ok(), "{swept:?}");
    // The pipeline's page says what is wrong rather than showing wrong figures.
    let page = p.read(&format!("{SITE}/pipelines/shop")).await;
    assert_eq!(page.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", page.body);
}

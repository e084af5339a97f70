//! The control room: `/`, `/approvals`, `/pipelines/{name}` and their JSON, behind sign-in.
//! Anonymous visitors see the sign-in page and never run data; a sign-in link starts a
//! session in a cookie a script on the page cannot read; the pages read what they show.

use axum::body::Body;
use http::{Request, StatusCode};
use jiff::SignedDuration;
use slipway::http::auth::{SignInError, sign_in_link};
use slipway_tests::{CONFIG, Pipeline, SHA, SHA2};

const SITE: &str = "https://slipway.example.com";

fn url(path: &str) -> String {
    format!("{SITE}{path}")
}

/// The short form pages show of a commit.
fn short(sha: &str) -> &str {
    &sha[..8]
}

/// `CONFIG` with `extra` added before its pipelines.
fn config_with(extra: &str) -> String {
    CONFIG.replacen("[[pipelines]]", &format!("{extra}\n[[pipelines]]"), 1)
}

/// The value of the hidden `csrf` field of a page's sign-out form.
fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a sign-out form") + "name=\"csrf\" value=\"".len();
    page[at..].split('"').next().expect("a value").to_owned()
}

#[tokio::test]
async fn anonymous_visitors_see_the_sign_in_page_and_no_run_data() {
    let p = Pipeline::start().await;
    p.to_approval(SHA).await;
    for page in ["/", "/approvals", "/pipelines/shop"] {
        let answer = p.get(&url(page)).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{page}");
        assert!(answer.body.contains("Sign in to slipway"), "{page}: {}", answer.body);
        assert!(
            answer.body.contains("slipway login-link --as"),
            "it says how to get a link"
        );
        assert!(!answer.body.contains(short(SHA)), "{page} shows no run data to anyone");
        assert!(!answer.body.contains("acme/shop"), "{page} shows no pipeline to anyone");
    }
    for api in [
        "/api/pipelines",
        "/api/approvals",
        "/api/environments",
        "/api/pipelines/shop",
    ] {
        let answer = p.get(&url(api)).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{api}");
        assert_eq!(answer.headers["www-authenticate"], "Bearer");
        assert!(
            answer.json()["error"].as_str().unwrap_or("").contains("sign in"),
            "{}",
            answer.body
        );
    }
    // A cookie that is not a session of ours is nobody.
    for cookie in ["slipway_session=nonsense", "slipway_session=v1.e30.AAAA", "other=1"] {
        assert_eq!(
            p.get_as(cookie, &url("/")).await.status,
            StatusCode::UNAUTHORIZED,
            "{cookie}"
        );
    }
    let login = p.get(&url("/login")).await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(login.body.contains("Sign in to slipway"));
}

#[tokio::test]
async fn a_sign_in_link_shows_a_button_and_the_button_starts_a_session() {
    let p = Pipeline::start().await;
    p.to_approval(SHA).await;
    let link = sign_in_link(&p.app, &"alice".parse().unwrap(), SignedDuration::from_hours(24))
        .await
        .unwrap();
    assert!(link.starts_with(&url("/login/v1.")), "{link}");

    // Opening the link changes nothing: link scanners open every URL.
    let opened = p.get(&link).await;
    assert_eq!(opened.status, StatusCode::OK, "{}", opened.body);
    assert!(opened.body.contains("Sign in as alice"));
    assert!(!opened.headers.contains_key("set-cookie"));

    let path = url::Url::parse(&link).unwrap().path().to_owned();
    let clicked = p.send(Request::post(path).body(Body::empty()).unwrap()).await;
    assert_eq!(clicked.status, StatusCode::SEE_OTHER);
    assert_eq!(clicked.headers["location"], url("/"));
    let set = clicked.headers["set-cookie"].to_str().unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/", "Max-Age=43200"] {
        assert!(set.contains(attribute), "{attribute} in {set}");
    }
    let cookie = set.split(';').next().unwrap();
    assert!(cookie.starts_with("slipway_session=v1."));

    let home = p.get_as(cookie, &url("/")).await;
    assert_eq!(home.status, StatusCode::OK, "{}", home.body);
    assert!(home.body.contains("alice (approver)"));
    assert!(home.body.contains("shop"));
    assert!(home.body.contains(short(SHA)), "the run is drawn");
    assert!(home.body.contains("approval:production"), "with its stage boxes");
    assert!(
        home.body.contains("Nothing released here yet"),
        "production runs nothing yet"
    );
    assert_eq!(home.headers["cache-control"], "no-store");
    assert_eq!(home.headers["referrer-policy"], "no-referrer");

    // The session lasts `[dashboard] session` (12 hours by default), then it is nobody's.
    p.advance(SignedDuration::from_hours(11));
    assert_eq!(p.get_as(cookie, &url("/")).await.status, StatusCode::OK);
    p.advance(SignedDuration::from_hours(2));
    assert_eq!(p.get_as(cookie, &url("/")).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn forged_expired_and_foreign_links_do_not_sign_anyone_in() {
    let p = Pipeline::start().await;
    p.to_approval(SHA).await;
    let link = sign_in_link(&p.app, &"bob".parse().unwrap(), SignedDuration::from_hours(1))
        .await
        .unwrap();
    let post = |link: String| {
        let path = url::Url::parse(&link).unwrap().path().to_owned();
        Request::post(path).body(Body::empty()).unwrap()
    };

    // One character changed in the payload: forged.
    let mut forged = link.clone();
    let at = forged.find("/login/v1.").unwrap() + "/login/v1.".len() + 3;
    let c = if &forged[at..=at] == "A" { "B" } else { "A" };
    forged.replace_range(at..=at, c);
    let answer = p.send(post(forged.clone())).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    assert!(!answer.headers.contains_key("set-cookie"));
    assert_eq!(p.get(&forged).await.status, StatusCode::FORBIDDEN);

    // An approval link is not a sign-in link, though the same key signed it.
    let approval = p.approval_for("alice").approve_url.unwrap();
    let token = approval.split("/approvals/").nth(1).unwrap().split('?').next().unwrap();
    let answer = p.send(post(url(&format!("/login/{token}")))).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert!(answer.body.contains("Not a sign-in link"), "{}", answer.body);

    // Nor is a session a sign-in link, or a sign-in link a session.
    let cookie = p.sign_in("bob").await;
    let session = cookie.trim_start_matches("slipway_session=");
    assert_eq!(
        p.send(post(url(&format!("/login/{session}")))).await.status,
        StatusCode::FORBIDDEN
    );
    let link_token = link.split("/login/").nth(1).unwrap();
    assert_eq!(
        p.get_as(&format!("slipway_session={link_token}"), &url("/"))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    // Expired: 410, saying how to get a new one.
    p.advance(SignedDuration::from_mins(61));
    let answer = p.send(post(link)).await;
    assert_eq!(answer.status, StatusCode::GONE);
    assert!(answer.body.contains("slipway login-link --as bob"), "{}", answer.body);

    // Nobody outside the configuration gets a link at all.
    let refused = sign_in_link(&p.app, &"mallory".parse().unwrap(), SignedDuration::from_hours(1)).await;
    assert!(matches!(refused, Err(SignInError::NotAllowed(_))), "{refused:?}");
}

#[tokio::test]
async fn viewers_see_every_page_and_sign_out_needs_the_pages_own_token() {
    let p = Pipeline::with_config(&config_with("[[dashboard.viewers]]\nid = \"carol\"\n")).await;
    p.to_approval(SHA).await;
    let cookie = p.sign_in("carol").await;
    for page in ["/", "/approvals", "/pipelines/shop"] {
        let answer = p.get_as(&cookie, &url(page)).await;
        assert_eq!(answer.status, StatusCode::OK, "{page}: {}", answer.body);
        assert!(answer.body.contains("carol (viewer)"), "{page}");
    }
    let home = p.get_as(&cookie, &url("/")).await.body;
    let csrf = csrf_of(&home);

    let sign_out = |body: String| {
        Request::post("/logout")
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap()
    };
    // Without the form's token (a form on another site), nothing happens.
    for body in [String::new(), "csrf=".into(), "csrf=guess".into()] {
        let answer = p.send(sign_out(body)).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
        assert!(!answer.headers.contains_key("set-cookie"));
    }
    // Another session's token is not this one's.
    let other = csrf_of(&p.get_as(&p.sign_in("alice").await, &url("/")).await.body);
    assert_ne!(other, csrf);
    assert_eq!(
        p.send(sign_out(format!("csrf={other}"))).await.status,
        StatusCode::FORBIDDEN
    );

    let answer = p.send(sign_out(format!("csrf={csrf}"))).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert_eq!(answer.headers["location"], url("/login"));
    let set = answer.headers["set-cookie"].to_str().unwrap();
    assert!(
        set.starts_with("slipway_session=;") && set.contains("Max-Age=0"),
        "{set}"
    );
}

#[tokio::test]
async fn the_overview_shows_what_runs_where_and_what_waits_for_whom() {
    let p = Pipeline::start().await;
    p.release(SHA).await;
    p.healthy("staging", SHA2);
    p.to_approval(SHA2).await;
    let cookie = p.sign_in("alice").await;

    let overview = p.get_as(&cookie, &url("/api/pipelines")).await;
    assert_eq!(overview.status, StatusCode::OK, "{}", overview.body);
    let overview = overview.json();
    let shop = &overview["pipelines"][0];
    assert_eq!(shop["name"], "shop");
    assert_eq!(shop["runs"][0]["sha"], SHA2, "newest first");
    assert_eq!(shop["runs"][1]["sha"], SHA);
    assert_eq!(shop["runs"][1]["status"], "released");
    let staging = &shop["environments"][0];
    let production = &shop["environments"][1];
    assert_eq!(staging["current"]["release"]["sha"], SHA2);
    assert_eq!(staging["current"]["smoke"], "succeeded");
    assert_eq!(production["current"]["release"]["sha"], SHA);
    assert_eq!(production["current"]["approved_by"][0], "alice");
    assert_eq!(
        staging["ahead_of_next"]["runs"], 1,
        "staging runs one push ahead of production"
    );

    let approvals = p.get_as(&cookie, &url("/api/approvals")).await.json();
    let pending = &approvals["approvals"][0];
    assert_eq!(pending["run"]["sha"], SHA2);
    assert_eq!(pending["env"], "production");
    assert_eq!(pending["required"], 1);
    assert_eq!(pending["asked"].as_array().unwrap().len(), 3);
    assert_eq!(pending["brings"]["current"]["sha"], SHA);
    assert_eq!(pending["brings"]["runs"][0]["sha"], SHA2);

    let page = p.get_as(&cookie, &url("/approvals")).await.body;
    assert!(page.contains("0 of 1"), "{page}");
    assert!(page.contains(short(SHA2)));

    let envs = p.get_as(&cookie, &url("/api/environments")).await.json();
    assert_eq!(envs["environments"].as_array().unwrap().len(), 2);
    assert_eq!(envs["environments"][1]["pipeline"], "shop");

    let history = p.get_as(&cookie, &url("/api/pipelines/shop")).await.json();
    assert_eq!(history["runs"].as_array().unwrap().len(), 2);
    assert_eq!(history["environments"][1]["releases"][0]["sha"], SHA);
    assert_eq!(history["environments"][1]["releases"][0]["rollback"], false);

    // Clear refusals for what is not there.
    assert_eq!(
        p.get_as(&cookie, &url("/pipelines/nope")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        p.get_as(&cookie, &url("/api/pipelines/nope")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        p.get_as(&cookie, &url("/api/pipelines/shop?limit=0")).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        p.get_as(&cookie, &url("/pipelines/shop?before=x")).await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn scripts_read_the_api_with_the_api_token_and_nothing_else() {
    let p = Pipeline::with_config(&config_with("[dashboard]\napi_token = \"/slipway/api-token\"\n")).await;
    p.secrets.set("/slipway/api-token", "s3cret-api-token");
    p.to_approval(SHA).await;
    let get = |token: &'static str| {
        Request::get("/api/approvals")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap()
    };
    let answer = p.send(get("s3cret-api-token")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.json()["approvals"][0]["run"]["sha"], SHA);
    assert_eq!(p.send(get("s3cret-api-tokem")).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(p.send(get("")).await.status, StatusCode::UNAUTHORIZED);
    // The token sees the pages too, as a viewer: no buttons, and every action refused.
    let page = Request::get("/")
        .header("authorization", "Bearer s3cret-api-token")
        .body(Body::empty())
        .unwrap();
    let answer = p.send(page).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.body.contains("API token (viewer)"));
    assert!(!answer.body.contains("/decision"), "{}", answer.body);
    // A parameter left blank is no token at all: an empty bearer does not match it.
    p.secrets.set("/slipway/api-token", "");
    assert_eq!(p.send(get("")).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn behind_a_path_prefix_every_link_and_the_cookie_stay_under_it() {
    let p = Pipeline::with_config(&CONFIG.replace(
        "public_url = \"https://slipway.example.com\"",
        "public_url = \"https://example.com/slipway/\"",
    ))
    .await;
    p.to_approval(SHA).await;
    let link = sign_in_link(&p.app, &"alice".parse().unwrap(), SignedDuration::from_hours(1))
        .await
        .unwrap();
    assert!(link.starts_with("https://example.com/slipway/login/"), "{link}");
    // The proxy strips the prefix before slipway sees the request.
    let token = link.split("/login/").nth(1).unwrap();
    let answer = p
        .send(Request::post(format!("/login/{token}")).body(Body::empty()).unwrap())
        .await;
    assert_eq!(answer.headers["location"], "https://example.com/slipway/");
    let set = answer.headers["set-cookie"].to_str().unwrap();
    assert!(set.contains("Path=/slipway"), "{set}");
    let cookie = set.split(';').next().unwrap();
    let home = p.get_as(cookie, "https://example.com/").await.body;
    assert!(
        home.contains("href=\"https://example.com/slipway/approvals\""),
        "{home}"
    );
    assert!(home.contains("href=\"https://example.com/slipway/pipelines/shop\""));
    assert!(!home.contains("href=\"/"), "no link leaves the prefix");
}

/// `n` pushes whose builds fail, each on top of the one before.
async fn history(p: &Pipeline, from: u32, n: u32) {
    for i in from..from + n {
        let sha = format!("{i:08x}{:032x}", 0x5eed_u32);
        assert_eq!(p.push(&sha).await.status, StatusCode::CREATED);
        assert_eq!(p.ci(&sha, "failure").await.status, StatusCode::OK);
        p.advance(SignedDuration::from_secs(1));
    }
    p.run_queues().await;
    slipway::sweep::run_once(&p.app).await.expect("the sweep runs");
}

#[tokio::test]
async fn each_page_reads_what_it_shows_however_long_the_history() {
    let p = Pipeline::start().await;
    p.release(SHA).await;
    history(&p, 1, 20).await;
    p.healthy("staging", SHA2);
    p.to_approval(SHA2).await;
    let cookie = p.sign_in("alice").await;
    let cost = |path: &'static str| {
        let (p, cookie) = (&p, cookie.clone());
        async move {
            let before = p.store.read_count();
            let answer = p.get_as(&cookie, &url(path)).await;
            assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.body);
            p.store.read_count() - before
        }
    };
    let short_history = [
        cost("/").await,
        cost("/approvals").await,
        cost("/pipelines/shop").await,
        cost("/pipelines/shop?before=shop:10&limit=5").await,
    ];
    history(&p, 100, 9_978).await;
    let long_history = [
        cost("/").await,
        cost("/approvals").await,
        cost("/pipelines/shop").await,
        cost("/pipelines/shop?before=shop:5000&limit=50").await,
    ];
    // The same bound at 22 runs and at 10,000, from what each page shows:
    // `/`: per pipeline its record and a chunk or two, the 5 runs drawn; per environment its
    // record and the run it runs, unless drawn. `/approvals`: per gate its environment's record
    // and the one before's, the run waiting (the newest released upstream since), the
    // pipeline's record and a chunk or two. A pipeline's page: its record, a chunk or two, the
    // unfinished runs it shows (here the one waiting), its environments' records, and on the
    // first page the release log's months of 90 days; an older page the same but the log,
    // whatever its depth.
    for (reads, runs) in [(short_history, 22), (long_history, 10_000)] {
        let [home, approvals, pipeline, older] = reads;
        assert!(home <= 3 + 5 + 2 * 2, "/ read {home} at {runs} runs");
        assert!(approvals <= 2 + 3 + 2, "/approvals read {approvals} at {runs} runs");
        assert!(
            pipeline <= 3 + 1 + 2 + 4,
            "/pipelines/shop read {pipeline} at {runs} runs"
        );
        assert!(
            older <= 3 + 2,
            "an older page of /pipelines/shop read {older} at {runs} runs"
        );
    }
    eprintln!("reads at 22 runs {short_history:?}, at 10,000 {long_history:?}");
}

/// A signed-in person's form POST to `path`, with the CSRF token of their session.
async fn press(p: &Pipeline, cookie: &str, path: &str, fields: &str) -> slipway_tests::Answer {
    let csrf = csrf_of(&p.get_as(cookie, &url("/")).await.body);
    let body = if fields.is_empty() {
        format!("csrf={csrf}")
    } else {
        format!("csrf={csrf}&{fields}")
    };
    let request = Request::post(path)
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .expect("a valid request");
    p.send(request).await
}

#[tokio::test]
async fn an_approver_approves_from_the_approvals_page_and_a_second_click_changes_nothing() {
    let p = Pipeline::start().await;
    p.to_approval(SHA).await;
    let run = p.run(SHA).await.id;
    let alice = p.sign_in("alice").await;
    let page = p.get_as(&alice, &url("/approvals")).await.body;
    assert!(
        page.contains(&format!("action=\"{SITE}/runs/{run}/decision\"")),
        "{page}"
    );

    let path = format!("/runs/{run}/decision");
    let fields = "env=production&decision=approve&comment=Looks+good";
    let first = press(&p, &alice, &path, fields).await;
    assert_eq!(first.status, StatusCode::SEE_OTHER, "{}", first.body);
    assert_eq!(first.headers["location"], url(&format!("/runs/{run}")));
    // A double click: the second lands on the run too, and changes nothing.
    let writes = p.store.write_count();
    let second = press(&p, &alice, &path, fields).await;
    assert_eq!(second.status, StatusCode::SEE_OTHER, "{}", second.body);
    assert_eq!(p.store.write_count(), writes);

    p.run_queues().await;
    assert_eq!(p.deployed("production"), [SHA]);
    let history = format!("{:?}", p.run(SHA).await.history);
    assert!(
        history.contains("alice approved promotion to production: Looks good"),
        "{history}"
    );
}

#[tokio::test]
async fn the_same_checks_hold_as_for_links() {
    let p = Pipeline::with_config(&config_with("[[dashboard.viewers]]\nid = \"carol\"\n")).await;
    p.to_approval(SHA).await;
    let run = p.run(SHA).await.id;
    let path = format!("/runs/{run}/decision");
    let approve = "env=production&decision=approve";

    // The author may not approve their own commit.
    let dev = p.sign_in("dev").await;
    let answer = press(&p, &dev, &path, approve).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    assert!(answer.body.contains("You wrote this commit"));

    // A viewer sees the page without buttons, and a POST anyway is refused.
    let carol = p.sign_in("carol").await;
    let page = p.get_as(&carol, &url("/approvals")).await.body;
    assert!(!page.contains("/decision"), "no buttons for viewers: {page}");
    let answer = press(&p, &carol, &path, approve).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert!(
        answer.body.contains("not an approver of pipeline shop"),
        "{}",
        answer.body
    );

    // Without the session's own token (a form on another site), nothing happens.
    let alice = p.sign_in("alice").await;
    let forged = Request::post(path.as_str())
        .header("cookie", &alice)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!("csrf=forged&{approve}")))
        .unwrap();
    assert_eq!(p.send(forged).await.status, StatusCode::FORBIDDEN);
    // Nor without a session at all: the sign-in page.
    let anonymous = Request::post(path.as_str())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(approve))
        .unwrap();
    assert_eq!(p.send(anonymous).await.status, StatusCode::UNAUTHORIZED);
    // A bad form: 400, naming what is wrong.
    let answer = press(&p, &alice, &path, "env=production&decision=maybe").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.body.contains("decision must be approve or reject"));

    // After the deadline: 410, and the expiry is recorded.
    p.advance(SignedDuration::from_hours(25));
    let alice = p.sign_in("alice").await;
    let answer = press(&p, &alice, &path, approve).await;
    assert_eq!(answer.status, StatusCode::GONE, "{}", answer.body);
    assert_eq!(
        p.approval_stage_status(SHA).await,
        slipway::domain::StageStatus::Expired
    );
}

#[tokio::test]
async fn release_from_the_overview_approves_the_newest_waiting_run() {
    let p = Pipeline::start().await;
    p.to_approval(SHA).await;
    let alice = p.sign_in("alice").await;
    let home = p.get_as(&alice, &url("/")).await.body;
    assert!(
        home.contains(&format!("Release {} to production", &SHA[..12])),
        "{home}"
    );
    let run = p.run(SHA).await.id;
    let answer = press(
        &p,
        &alice,
        &format!("/runs/{run}/decision"),
        "env=production&decision=approve",
    )
    .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    p.run_queues().await;
    assert_eq!(p.deployed("production"), [SHA]);
    let home = p.get_as(&alice, &url("/")).await.body;
    assert!(!home.contains("Release "), "nothing waits any more: {home}");
}

#[tokio::test]
async fn a_run_that_failed_at_a_flaky_deploy_is_retried_once_with_who_asked() {
    let p = Pipeline::start().await;
    p.deployer.fail_next("staging", "registry timed out");
    assert_eq!(p.push(SHA).await.status, StatusCode::CREATED);
    assert_eq!(p.ci(SHA, "success").await.status, StatusCode::OK);
    p.run_queues().await;
    let run = p.run(SHA).await;
    assert_eq!(
        run.status(),
        slipway::domain::RunStatus::RolledBack,
        "the failed release was undone"
    );
    // Sending CI again does not bring it back: that is what Retry is for.
    let again = p.ci(SHA, "success").await.json();
    assert!(again["ignored"].is_string(), "{again}");

    let alice = p.sign_in("alice").await;
    let page = p.get_as(&alice, &url(&format!("/runs/{}", run.id))).await.body;
    assert!(
        page.contains(&format!("action=\"{SITE}/runs/{}/retry\"", run.id)),
        "{page}"
    );
    let answer = press(&p, &alice, &format!("/runs/{}/retry", run.id), "").await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    let again = press(&p, &alice, &format!("/runs/{}/retry", run.id), "").await;
    assert_eq!(
        again.status,
        StatusCode::SEE_OTHER,
        "a double click lands on the run too"
    );

    p.run_queues().await;
    let run = p.run(SHA).await;
    assert_eq!(
        run.status(),
        slipway::domain::RunStatus::AwaitingApproval,
        "{:?}",
        run.history
    );
    let deploys = p.deployer.deploys_to("staging");
    assert_eq!(deploys.len(), 2, "the failed deploy, and one after the retry");
    // The retry is the deploy's second attempt: targets see it as such (its delivery ids and
    // callback keys differ from the first attempt's, whose answers it must never find).
    assert_eq!(
        deploys.iter().map(|d| d.attempt).collect::<Vec<_>>(),
        [None, Some(2)],
        "{deploys:?}"
    );
    let retried: Vec<_> = run
        .history
        .iter()
        .filter(|h| h.what.contains("asked to retry"))
        .collect();
    assert_eq!(retried.len(), 1, "one retry on record");
    assert_eq!(
        retried[0].actor,
        slipway::domain::Actor::Approver("alice".parse().unwrap())
    );
}

#[tokio::test]
async fn an_older_run_is_not_retried_over_a_newer_one() {
    let p = Pipeline::start().await;
    p.deployer.fail_next("staging", "registry timed out");
    assert_eq!(p.push(SHA).await.status, StatusCode::CREATED);
    assert_eq!(p.ci(SHA, "success").await.status, StatusCode::OK);
    p.run_queues().await;
    p.healthy("staging", SHA2);
    assert_eq!(p.push_after(SHA2, SHA).await.status, StatusCode::CREATED);
    assert_eq!(p.ci(SHA2, "success").await.status, StatusCode::OK);
    p.run_queues().await;
    assert_eq!(p.deployed("staging").last().map(String::as_str), Some(SHA2));

    let refused = slipway::handlers::retry::request_retry(
        &p.app,
        &p.run(SHA).await.id,
        None,
        slipway::domain::Actor::Slipway,
        "ops",
    )
    .await;
    let why = refused.expect_err("refused").to_string();
    assert!(why.contains("has passed staging since"), "{why}");
    let alice = p.sign_in("alice").await;
    let answer = press(&p, &alice, &format!("/runs/{}/retry", p.run(SHA).await.id), "").await;
    assert_eq!(answer.status, StatusCode::CONFLICT);
    assert!(answer.body.contains("older commit over it"), "{}", answer.body);
}

#[tokio::test]
async fn production_is_rolled_back_to_a_chosen_release_from_the_pipeline_page() {
    let p = Pipeline::start().await;
    p.release(SHA).await;
    p.release(SHA2).await;
    let alice = p.sign_in("alice").await;
    let page = p.get_as(&alice, &url("/pipelines/shop")).await.body;
    assert!(page.contains("Roll back to this"), "{page}");
    let (a, b) = (p.run(SHA).await.id, p.run(SHA2).await.id);
    let path = "/pipelines/shop/environments/production/rollback";
    let fields = format!("from={b}&to={a}");
    let answer = press(&p, &alice, path, &fields).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    assert_eq!(answer.headers["location"], url(&format!("/runs/{b}")));
    let again = press(&p, &alice, path, &fields).await;
    assert_eq!(
        again.status,
        StatusCode::SEE_OTHER,
        "a double click queues nothing more"
    );
    p.healthy("production", SHA);
    p.run_queues().await;
    assert_eq!(p.run(SHA2).await.status(), slipway::domain::RunStatus::RolledBack);
    let rollbacks = p
        .run(SHA2)
        .await
        .stages
        .iter()
        .filter(|s| s.kind == slipway::domain::StageKind::Rollback)
        .count();
    assert_eq!(rollbacks, 1);
    // The page kept open from before: the same rollback, already done, changes nothing.
    let writes = p.store.write_count();
    let stale = press(&p, &alice, path, &fields).await;
    assert_eq!(stale.status, StatusCode::SEE_OTHER);
    assert_eq!(p.store.write_count(), writes);
    // A release production never ran is refused.
    let answer = press(&p, &alice, path, &format!("from={a}&to=shop-{}", "f".repeat(40))).await;
    assert_eq!(answer.status, StatusCode::CONFLICT, "{}", answer.body);
    assert!(
        answer.body.contains("was never released to production"),
        "{}",
        answer.body
    );
}

#[tokio::test]
async fn every_notification_to_an_approver_carries_their_own_sign_in_link() {
    let p = Pipeline::start().await;
    p.to_approval(SHA).await;
    let asked = p.approval_for("bob");
    let link = asked.sign_in_url.expect("a sign-in link");
    assert!(link.starts_with(&url("/login/v1.")), "{link}");
    let path = url::Url::parse(&link).unwrap().path().to_owned();
    let answer = p.send(Request::post(path).body(Body::empty()).unwrap()).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    let cookie = answer.headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let home = p.get_as(&cookie, &url("/")).await;
    assert!(home.body.contains("bob (approver)"), "the link is bob's own");

    // The release notices to approvers carry one too; notices to everyone carry none.
    let approve = p.approval_for("alice").approve_url.unwrap();
    p.post_decision(&approve, "approve").await;
    p.run_queues().await;
    for notice in p.notifications_of("released") {
        assert_eq!(notice.sign_in_url.is_some(), notice.approver.is_some(), "{notice:?}");
    }
    assert!(p.notifications_of("released").iter().any(|n| n.sign_in_url.is_some()));
}

const PROXY: &str =
    "[dashboard]\nauth = \"proxy\"\nproxy_header = \"X-Forwarded-Email\"\nproxy_addresses = [\"127.0.0.1\", \"::1\"]\n";

/// A request as an authenticating proxy at `from` passes it on, naming `email`.
fn through_proxy(method: &str, path: &str, from: &str, email: &str, body: &str) -> Request<Body> {
    let ip: std::net::IpAddr = from.parse().expect("an IP address");
    let peer = std::net::SocketAddr::new(ip, 40123);
    Request::builder()
        .method(method)
        .uri(path)
        .header("x-forwarded-email", email)
        .header("content-type", "application/x-www-form-urlencoded")
        .extension(axum::extract::ConnectInfo(peer))
        .body(Body::from(body.to_owned()))
        .expect("a valid request")
}

#[tokio::test]
async fn behind_an_authenticating_proxy_its_header_signs_people_in_from_its_address_only() {
    let p = Pipeline::with_config(&config_with(PROXY)).await;
    p.to_approval(SHA).await;

    // The proxy names alice by her address: she is signed in, as an approver.
    let home = p
        .send(through_proxy("GET", "/", "127.0.0.1", "Alice@Example.com", ""))
        .await;
    assert_eq!(home.status, StatusCode::OK, "{}", home.body);
    assert!(home.body.contains("alice (approver)"));

    // The same header from anywhere else, or with no address known, is nobody's.
    let direct = p
        .send(through_proxy("GET", "/", "10.1.2.3", "alice@example.com", ""))
        .await;
    assert_eq!(direct.status, StatusCode::UNAUTHORIZED);
    let unknown_peer = Request::get("/")
        .header("x-forwarded-email", "alice@example.com")
        .body(Body::empty())
        .unwrap();
    assert_eq!(p.send(unknown_peer).await.status, StatusCode::UNAUTHORIZED);
    // Someone the configuration does not name is nobody too.
    let stranger = p
        .send(through_proxy("GET", "/", "127.0.0.1", "mallory@example.com", ""))
        .await;
    assert_eq!(stranger.status, StatusCode::UNAUTHORIZED);

    // alice acts through the proxy with her page's form token.
    let csrf = csrf_of(&home.body);
    let run = p.run(SHA).await.id;
    let fields = format!("csrf={csrf}&env=production&decision=approve");
    let forged = p
        .send(through_proxy(
            "POST",
            &format!("/runs/{run}/decision"),
            "127.0.0.1",
            "alice@example.com",
            "csrf=x&env=production&decision=approve",
        ))
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let approved = p
        .send(through_proxy(
            "POST",
            &format!("/runs/{run}/decision"),
            "127.0.0.1",
            "alice@example.com",
            &fields,
        ))
        .await;
    assert_eq!(approved.status, StatusCode::SEE_OTHER, "{}", approved.body);
    // bob's page token is not alice's.
    let bob = p.send(through_proxy("GET", "/", "::1", "bob@example.com", "")).await;
    assert_ne!(csrf_of(&bob.body), csrf);
    // Sign-in links keep working beside the proxy.
    let cookie = p.sign_in("bob").await;
    assert_eq!(p.get_as(&cookie, &url("/")).await.status, StatusCode::OK);
}

#[test]
fn proxy_sign_in_needs_its_header_and_its_addresses() {
    let parse = |extra: &str| slipway::config::Config::parse(&config_with(extra), std::path::Path::new("slipway.toml"));
    let no_header = parse("[dashboard]\nauth = \"proxy\"\nproxy_addresses = [\"127.0.0.1\"]\n")
        .unwrap_err()
        .to_string();
    assert!(no_header.contains("dashboard.proxy_header"), "{no_header}");
    let no_addresses = parse("[dashboard]\nauth = \"proxy\"\nproxy_header = \"X-Forwarded-Email\"\n")
        .unwrap_err()
        .to_string();
    assert!(no_addresses.contains("dashboard.proxy_addresses"), "{no_addresses}");
    let twice = parse("[[dashboard.viewers]]\nid = \"carol\"\n[[dashboard.viewers]]\nid = \"Carol\"\n")
        .unwrap_err()
        .to_string();
    assert!(twice.contains("dashboard.viewers[1].id"), "{twice}");
    assert!(parse(PROXY).is_ok());
}

#[tokio::test]
async fn slipway_approve_decides_from_a_shell_with_the_same_checks() {
    use slipway::http::actions::decide_from_shell;
    let p = Pipeline::start().await;
    p.to_approval(SHA).await;
    let run = p.run(SHA).await.id;
    let who = |id: &str| id.parse::<slipway::domain::ApproverId>().unwrap();

    let refused = decide_from_shell(&p.app, &run, None, &who("dev"), true, None)
        .await
        .unwrap_err();
    assert!(refused.contains("You wrote this commit"), "{refused}");
    let refused = decide_from_shell(&p.app, &run, None, &who("mallory"), true, None)
        .await
        .unwrap_err();
    assert!(refused.contains("not an approver"), "{refused}");

    let done = decide_from_shell(&p.app, &run, None, &who("alice"), true, Some("from the shell".into()))
        .await
        .unwrap();
    assert_eq!(done, format!("approved {} for production as alice", &SHA[..12]));
    let again = decide_from_shell(
        &p.app,
        &run,
        Some(&"production".parse().unwrap()),
        &who("alice"),
        true,
        None,
    )
    .await;
    assert!(again.is_ok(), "the same decision again changes nothing: {again:?}");
    p.run_queues().await;
    assert_eq!(p.deployed("production"), [SHA]);
    let none = decide_from_shell(&p.app, &run, None, &who("bob"), true, None)
        .await
        .unwrap_err();
    assert!(none.contains("waits for no approval"), "{none}");
}

#[tokio::test]
async fn a_waiting_approval_is_found_after_a_newer_commit_failed_on_staging() {
    let p = Pipeline::start().await;
    p.release(SHA).await;
    p.healthy("staging", SHA2);
    p.to_approval(SHA2).await;
    // A newer commit reaches staging and fails its smoke checks there (staging still answers
    // with SHA2): it never reaches the gate, and SHA2 still waits for production.
    const SHA3: &str = "c3d4e5f60718293a4b5c6d7e8f90123456789012";
    assert_eq!(p.push_after(SHA3, SHA2).await.status, StatusCode::CREATED);
    assert_eq!(p.ci(SHA3, "success").await.status, StatusCode::OK);
    p.run_queues().await;
    assert!(p.run(SHA3).await.status().is_finished());

    let alice = p.sign_in("alice").await;
    let reads = p.store.read_count();
    let approvals = p.get_as(&alice, &url("/api/approvals")).await.json();
    let list = approvals["approvals"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{approvals:#}");
    assert_eq!(list[0]["run"]["sha"], SHA2);
    assert_eq!(list[0]["env"], "production");
    // Production's and staging's records, staging's releases newest first until one waits
    // (SHA3's, then SHA2's), and what SHA2 brings.
    assert!(
        p.store.read_count() - reads <= 2 + 2 + 3,
        "{} reads",
        p.store.read_count() - reads
    );
}

//! Test notifications, one per kind, shared by the channel tests.

use jiff::Timestamp;

use crate::domain::RunId;
use crate::ports::Notification;

/// Every notification kind slipway sends.
pub(crate) const KINDS: [&str; 5] = [
    "approval_requested",
    "released",
    "failed",
    "rejected",
    "approval_expired",
];

pub(crate) const SHA: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678";

/// A realistic notification of `kind` (failed without alert; flip `alert` for a red main).
pub(crate) fn notification(kind: &str) -> Notification {
    let mut n = Notification {
        kind: kind.to_owned(),
        id: format!("{kind}-1-team"),
        run_id: RunId::parse(&format!("shop-{SHA}")).unwrap(),
        pipeline: "shop".to_owned(),
        repo: "acme/shop".to_owned(),
        sha: SHA.to_owned(),
        branch: "main".to_owned(),
        commit_message: "Fix the checkout button <script> & friends\n\nIt was misaligned on mobile.".to_owned(),
        author: "bob".to_owned(),
        environment: None,
        title: String::new(),
        text: String::new(),
        stage: None,
        alert: false,
        approver: None,
        address: None,
        approve_url: None,
        reject_url: None,
        rollback_url: None,
        expires_at: None,
        sign_in_url: None,
        run_url: format!("https://slipway.example.com/runs/shop-{SHA}"),
    };
    match kind {
        "approval_requested" => {
            n.id = "approval_requested-1-alice".to_owned();
            n.environment = Some("production".to_owned());
            n.title = "Approval requested: acme/shop to production".to_owned();
            n.text = "staging is green with a1b2c3d4e5f6; release it to production?".to_owned();
            n.approver = Some("alice".to_owned());
            n.address = Some("alice@example.com".to_owned());
            n.approve_url = Some("https://slipway.example.com/approvals/tok123?decision=approve".to_owned());
            n.reject_url = Some("https://slipway.example.com/approvals/tok123?decision=reject".to_owned());
            n.expires_at = Some("2025-06-01T12:00:00Z".parse::<Timestamp>().unwrap());
            n.sign_in_url = Some("https://slipway.example.com/login/tok789".to_owned());
        }
        "released" => {
            n.environment = Some("staging".to_owned());
            n.title = "Released acme/shop to staging".to_owned();
            n.text = "a1b2c3d4e5f6 is live on staging.".to_owned();
            n.approver = Some("alice".to_owned());
            n.address = Some("alice@example.com".to_owned());
            n.rollback_url = Some(format!("https://slipway.example.com/runs/shop-{SHA}?token=tok456"));
            n.expires_at = Some("2025-06-08T12:00:00Z".parse::<Timestamp>().unwrap());
        }
        "failed" => {
            n.environment = Some("staging".to_owned());
            n.stage = Some("smoke".to_owned());
            n.title = "acme/shop failed in smoke on staging".to_owned();
            n.text = "health: expected status 200, got 503 <html>Bad Gateway</html>".to_owned();
        }
        "rejected" => {
            n.environment = Some("production".to_owned());
            n.title = "Release of acme/shop to production rejected".to_owned();
            n.text = "alice rejected it: \"wait for the Monday freeze to end\"".to_owned();
        }
        "approval_expired" => {
            n.environment = Some("production".to_owned());
            n.title = "Approval to release acme/shop to production expired".to_owned();
            n.text = "Nobody decided within 12h; push again or re-run to ask again.".to_owned();
        }
        other => panic!("unknown notification kind {other}"),
    }
    n
}

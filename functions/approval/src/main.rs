//! `approval`: approval and rollback links, Slack buttons and the read API
//! (`/approvals/{token}`, `/rollback/{token}`, `/hooks/slack/interactions`, `/hooks/deploy`,
//! `/api/runs`, `/runs/{id}`). See infra/template.yaml.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), slipway::lambda::Error> {
    slipway::telemetry::init_lambda();
    let app = slipway::cloud::app_from_env().await?;
    slipway::lambda::run_http(app).await
}

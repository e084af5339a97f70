//! `push-webhook`: git host webhooks (`POST /hooks/github`, `/hooks/gitlab`, `/hooks/bitbucket`).
//! See infra/template.yaml.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), slipway::lambda::Error> {
    slipway::telemetry::init_lambda();
    let app = slipway::cloud::app_from_env().await?;
    slipway::lambda::run_http(app).await
}

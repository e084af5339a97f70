//! `push-webhook`: GitHub push webhooks (`POST /hooks/github`). See infra/template.yaml.

#[tokio::main]
async fn main() -> Result<(), slipway::lambda::Error> {
    slipway::telemetry::init_lambda();
    let app = slipway::cloud::app_from_env().await?;
    slipway::lambda::run_http(app).await
}

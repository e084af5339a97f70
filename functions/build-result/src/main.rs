//! `build-result`: CI build results (`POST /hooks/ci`). See infra/template.yaml.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), slipway::lambda::Error> {
    slipway::telemetry::init_lambda();
    let app = slipway::cloud::app_from_env().await?;
    slipway::lambda::run_http(app).await
}

//! `sweeper`: the schedule: expires approvals, re-sends lost work, fails stuck stages. See infra/template.yaml.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), slipway::lambda::Error> {
    slipway::telemetry::init_lambda();
    let app = slipway::cloud::app_from_env().await?;
    slipway::lambda::run_sweeper(app).await
}

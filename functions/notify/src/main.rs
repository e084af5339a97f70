//! `notify`: the notify queue. See infra/template.yaml.

use slipway::ports::QueueName;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), slipway::lambda::Error> {
    slipway::telemetry::init_lambda();
    let app = slipway::cloud::app_from_env().await?;
    slipway::lambda::run_queue(app, QueueName::Notify).await
}

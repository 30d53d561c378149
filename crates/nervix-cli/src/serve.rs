pub use nervix_server::config::ServeArgs;

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    crate::logging::init(args.log_json);
    Ok(nervix_server::run_from_args(args).await?)
}

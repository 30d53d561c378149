#[derive(clap::Subcommand)]
pub enum BenchCommand {}

pub async fn run(_cmd: BenchCommand) -> anyhow::Result<()> {
    Ok(())
}

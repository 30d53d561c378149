use std::path::PathBuf;

use nervix_server::Config;

/// Storage selection shared by the admin commands: the same flags and variables as `serve`.
#[derive(clap::Args)]
pub struct StoreArgs {
    /// Data folder: SQLite file and token-signing keys.
    #[arg(long, env = "NERVIX_DATA_DIR", default_value = "./nervix-data")]
    data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://...`; default: a SQLite file in the data folder.
    #[arg(long, env = "NERVIX_DATABASE_URL")]
    database_url: Option<String>,
}

impl StoreArgs {
    fn config(&self) -> Config {
        let mut c = Config::for_data_dir(self.data_dir.clone());
        if let Some(url) = &self.database_url {
            c.database_url = url.clone();
        }
        c
    }
}

#[derive(clap::Subcommand)]
pub enum AdminCommand {
    /// Print a 90-day admin token (the last word of the output).
    CreateToken(StoreArgs),
    /// Make a new token-signing key active; tokens signed by older keys stay valid until they expire.
    RotateSigningKey(StoreArgs),
}

pub async fn run(cmd: AdminCommand) -> anyhow::Result<()> {
    match cmd {
        AdminCommand::CreateToken(s) => {
            let token = nervix_server::operator::create_admin_token(&s.config()).await?;
            println!("Admin token (valid 90 days; keep it secret):");
            println!("{token}");
        }
        AdminCommand::RotateSigningKey(s) => {
            let (kid, pruned) = nervix_server::operator::rotate_signing_key(&s.config())?;
            println!(
                "New signing key {kid} is active; running servers pick it up within 10 seconds."
            );
            for old in pruned {
                println!("Deleted signing key {old} (retired longer than the token lifetime).");
            }
        }
    }
    Ok(())
}

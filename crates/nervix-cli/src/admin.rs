use std::path::PathBuf;

use nervix_server::config::MasterKeyArgs;
use nervix_server::Config;

/// Storage selection shared by the admin commands: the same flags and variables as `serve`.
#[derive(clap::Args)]
pub struct StoreArgs {
    /// Data folder: SQLite file (and, before version 0012, token-signing key files).
    #[arg(long, env = "NERVIX_DATA_DIR", default_value = "./nervix-data")]
    data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://...`; default: a SQLite file in the data folder.
    #[arg(long, env = "NERVIX_DATABASE_URL")]
    database_url: Option<String>,
    #[command(flatten)]
    master_key: MasterKeyArgs,
}

impl StoreArgs {
    fn config(&self) -> Config {
        let mut c = Config::for_data_dir(self.data_dir.clone());
        if let Some(url) = &self.database_url {
            c.database_url = url.clone();
        }
        c.master_key = self.master_key.source();
        c
    }
}

#[derive(clap::Subcommand)]
pub enum AdminCommand {
    /// Print a 90-day admin token (the last word of the output).
    CreateToken(StoreArgs),
    /// Make a new token-signing key active on every node (they share the keys through the
    /// database); tokens signed by older keys stay valid until they expire.
    RotateSigningKey(StoreArgs),
    /// Recompute every ledger balance from its entries, check that every transaction balances
    /// and that money is conserved; print a summary and exit non-zero on any mismatch.
    VerifyLedger(StoreArgs),
    /// Copy the embedded database (online: the server may keep running) and the signing keys
    /// into a new folder. On PostgreSQL: copy the key files and print the `pg_dump` route.
    Backup {
        /// A new or empty folder for the copy.
        path: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Put a backup made by `admin backup` into a fresh data folder (no database, no keys
    /// yet), migrated to this version; then start `nervix serve` on it.
    Restore {
        /// The backup folder.
        path: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
}

pub async fn run(cmd: AdminCommand) -> anyhow::Result<()> {
    match cmd {
        AdminCommand::CreateToken(s) => {
            let token = nervix_server::operator::create_admin_token(&s.config()).await?;
            println!("Admin token (valid 90 days; keep it secret):");
            println!("{token}");
        }
        AdminCommand::RotateSigningKey(s) => {
            let (kid, pruned) = nervix_server::operator::rotate_signing_key(&s.config()).await?;
            println!("New signing key {kid} is active; running servers pick it up within seconds.");
            for old in pruned {
                println!("Deleted signing key {old} (retired longer than the token lifetime).");
            }
        }
        AdminCommand::VerifyLedger(s) => {
            let report = nervix_server::operator::verify_ledger(&s.config()).await?;
            print_report(&report);
            let problems = report.problems();
            if !problems.is_empty() {
                for p in &problems {
                    eprintln!("MISMATCH: {p}");
                }
                anyhow::bail!("the ledger has {} problem(s)", problems.len());
            }
            println!("ledger OK");
        }
        AdminCommand::Backup { path, store } => {
            match nervix_server::operator::backup(&store.config(), &path).await? {
                nervix_server::operator::Backup::Copied {
                    database,
                    key_files,
                } => {
                    println!("Database copied to {}", database.display());
                    println!(
                        "{key_files} signing key file(s) copied to {}",
                        path.join("keys").display()
                    );
                    println!(
                        "Restore with: nervix admin restore {} --data-dir <fresh folder>",
                        path.display()
                    );
                }
                nervix_server::operator::Backup::Postgres { key_files, how } => {
                    println!("{how}");
                    // No database was copied: a script must not take this for a full backup.
                    anyhow::bail!(
                        "the PostgreSQL database was not copied ({key_files} key file(s) were); run pg_dump as shown"
                    );
                }
            }
        }
        AdminCommand::Restore { path, store } => {
            let restored = nervix_server::operator::restore(&store.config(), &path).await?;
            println!(
                "Restored the database to {} and {} signing key file(s); start nervix serve on it.",
                restored.database.display(),
                restored.key_files
            );
        }
    }
    Ok(())
}

fn print_report(r: &nervix_store::LedgerReport) {
    use nervix_core::Money;
    println!(
        "accounts: {}  entries: {}  transactions: {}",
        r.accounts, r.entries, r.transactions
    );
    println!("{:<20} {:>9} {:>16}", "account kind", "accounts", "balance");
    for k in &r.per_kind {
        println!(
            "{:<20} {:>9} {:>16}",
            k.kind,
            k.accounts,
            Money::from_cents(k.balance).to_string()
        );
    }
    println!(
        "agents hold {}; the operator put in {}",
        Money::from_cents(r.agents_total),
        Money::from_cents(r.operator_put_in)
    );
}

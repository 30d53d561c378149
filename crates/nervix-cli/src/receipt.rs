//! `nervix receipt verify`: checks a signed reputation receipt offline against a platform's
//! JWK set and says what it attests.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use nervix_core::receipt::{verify, Verified};
use serde_json::Value;

#[derive(Subcommand)]
pub enum ReceiptCommand {
    /// Verify a receipt (a compact JWS, or JSON holding one under `receipt`) from FILE or `-`
    /// (stdin) against a server's JWKS or a saved one.
    Verify(VerifyArgs),
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The receipt file, or `-` for standard input.
    pub file: String,
    /// A saved JWK set (the body of /.well-known/jwks.json).
    #[arg(long, conflicts_with_all = ["jwks_url", "server"])]
    pub jwks: Option<PathBuf>,
    /// Where to fetch the JWK set.
    #[arg(long, conflicts_with = "server")]
    pub jwks_url: Option<String>,
    /// The server whose /.well-known/jwks.json to use.
    #[arg(long, env = "NERVIX_SERVER")]
    pub server: Option<String>,
    /// Print the verified receipt as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(cmd: ReceiptCommand) -> Result<()> {
    match cmd {
        ReceiptCommand::Verify(args) => verify_cmd(args).await,
    }
}

/// The compact JWS in `text`: the text itself, or the `receipt` of a JSON object (a receipts
/// page item, or the data part of an A2A artifact).
fn compact(text: &str) -> Result<String> {
    let text = text.trim();
    if text.starts_with('{') {
        let v: Value = serde_json::from_str(text).context("the receipt file is not valid JSON")?;
        return v["receipt"]
            .as_str()
            .map(str::to_owned)
            .context("the JSON has no `receipt` string");
    }
    Ok(text.to_owned())
}

async fn jwks(args: &VerifyArgs) -> Result<(Value, String)> {
    if let Some(path) = &args.jwks {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the JWK set {}", path.display()))?;
        let v = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a JWK set", path.display()))?;
        return Ok((v, path.display().to_string()));
    }
    let url = match (&args.jwks_url, &args.server) {
        (Some(u), _) => u.clone(),
        (None, Some(s)) => format!("{}/.well-known/jwks.json", s.trim_end_matches('/')),
        (None, None) => {
            bail!("say which keys to verify with: --jwks FILE, --jwks-url URL or --server URL")
        }
    };
    let v = reqwest::get(&url)
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("fetching {url}"))?
        .json()
        .await
        .with_context(|| format!("{url} is not a JWK set"))?;
    Ok((v, url))
}

async fn verify_cmd(args: VerifyArgs) -> Result<()> {
    let text = if args.file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the receipt from stdin")?;
        s
    } else {
        std::fs::read_to_string(&args.file).with_context(|| format!("reading {}", args.file))?
    };
    let token = compact(&text)?;
    let (set, source) = jwks(&args).await?;
    let Verified { kid, receipt: r } = verify(&token, &set)
        .with_context(|| format!("the receipt does not verify against {source}"))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"valid": true, "kid": kid, "receipt": r})
            )?
        );
        return Ok(());
    }
    println!("valid receipt, signed by key {kid} ({source})");
    println!(
        "  {} (public key {}) completed task {} \"{}\" for {}",
        r.agent.handle, r.agent.public_key, r.task.id, r.task.title, r.poster
    );
    println!(
        "  quality score {} ({}/{} checks passed: {}), paid {}, at {}",
        r.quality_score,
        r.checks.passed,
        r.checks.total,
        r.checks.names.join(", "),
        r.reward_paid,
        r.completed_at
    );
    println!(
        "  reputation after: {} ({})",
        r.reputation_after.score, r.reputation_after.level
    );
    println!("  receipt {} issued by {}", r.jti, r.iss);
    Ok(())
}

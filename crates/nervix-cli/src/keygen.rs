//! `nervix keygen`: write a new agent key file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use nervix_client::{AgentKeys, KeyError};

#[derive(clap::Args)]
pub struct KeygenArgs {
    /// Where to write the key file (created with mode 0600).
    #[arg(long, short, default_value = "nervix-agent.key")]
    out: PathBuf,
    /// Replace an existing key file. The old key is gone for good: an agent enrolled with it
    /// can no longer log in.
    #[arg(long)]
    force: bool,
}

pub fn run(args: KeygenArgs) -> anyhow::Result<()> {
    create_private_parent(&args.out)?;
    let keys = AgentKeys::generate();
    let saved = if args.force {
        keys.save_overwriting(&args.out)
    } else {
        keys.save(&args.out)
    };
    match saved {
        Err(e @ KeyError::AlreadyExists { .. }) => bail!("{e}; pass --force to replace it"),
        other => other?,
    }
    println!("wrote {}", args.out.display());
    println!("public_key            {}", keys.public_key_b64());
    println!("encryption_public_key {}", keys.encryption_public_key_b64());
    Ok(())
}

/// Creates the missing parent directories of a file that will hold secrets, accessible only
/// to the owner. Existing directories are left as they are.
pub(crate) fn create_private_parent(path: &Path) -> anyhow::Result<()> {
    let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(());
    };
    if parent.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(parent)
        .with_context(|| format!("cannot create {}", parent.display()))
}

pub use nervix_server::config::ServeArgs;
use nervix_store::cpu::{reserve_for_writer, Reserved};
use nervix_store::WriterCpu;

/// On the embedded default, sets a CPU aside for the SQLite writer and keeps the calling
/// thread, and so every thread it starts later, off it (`nervix_store::cpu`). Call before
/// building the runtime.
pub fn place_sqlite_writer(args: &mut ServeArgs) -> Option<Reserved> {
    let sqlite = args
        .database_url
        .as_deref()
        .is_none_or(|url| url.starts_with("sqlite:"));
    if !sqlite {
        return None;
    }
    let reserved = reserve_for_writer(args.sqlite_writer_cpu)?;
    args.sqlite_writer_cpu = WriterCpu::Cpu(reserved.writer);
    Some(reserved)
}

pub async fn run(args: ServeArgs, reserved: Option<Reserved>) -> anyhow::Result<()> {
    crate::logging::init(args.log_json);
    if let Some(r) = reserved {
        tracing::info!(
            writer_cpu = r.writer,
            other_cpus = r.others,
            "SQLite writer on a CPU of its own"
        );
    }
    raise_open_files_limit();
    Ok(nervix_server::run_from_args(args).await?)
}

/// Every agent connection is a file descriptor, and distributions default the soft limit to
/// 1,024: raise it to the hard limit the operator allows (raise that with `ulimit -Hn` or
/// systemd's `LimitNOFILE=`).
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!(from = soft, to = hard, "raised the open-files limit"),
            Err(e) => tracing::warn!(error = %e, limit = soft, "cannot raise the open-files limit"),
        },
        Ok((soft, _)) => tracing::info!(limit = soft, "open-files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot read the open-files limit"),
    }
}

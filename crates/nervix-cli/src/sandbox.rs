//! The sandbox `nervix agent run` runs its command in: the command works on content written
//! by strangers, so by default it gets the least the work needs.
//!
//! On Linux, for each task:
//! - a fresh working directory (also `$HOME` and `$TMPDIR`), deleted afterwards;
//! - Landlock: the file system is closed except that folder (read and write), the system's
//!   read-only paths a program needs to run ([`SYSTEM_READ`], `/dev/null`), and what
//!   `--allow-read` / `--allow-write` name. The agent's key and profile are out of reach;
//! - rlimits: CPU time (`SIGXCPU`, then `SIGKILL`), address space (allocations fail) and the
//!   size of any file written (`SIGXFSZ`); no core dumps;
//! - a cleared environment: `PATH`, `HOME`, `TMPDIR`, `LANG` and `NERVIX_TASK_ID` only, so no
//!   token or key path is inherited;
//! - no network unless `--allow-net`: a new network namespace (only a loopback that is down),
//!   entered through a new user namespace, which also takes away every privilege the runner
//!   had (root included) outside it: the limits cannot be raised again. Where user namespaces
//!   are not available, Landlock's TCP rules (ABI 4, Linux 6.7) refuse TCP connections and
//!   binds instead, which leaves UDP open: the runner says so when it starts.
//!
//! The restrictions are applied in the child between `fork` and `exec` (`pre_exec`). A forked
//! child of a multi-threaded program may only make async-signal-safe calls, so everything
//! that allocates (paths, the Landlock ruleset and its rules, the environment) is prepared in
//! the parent; the child makes system calls only: `setrlimit`, `unshare`, `prctl` and
//! `landlock_restrict_self`.
//!
//! Where the kernel has no Landlock the runner refuses to start unless `--no-sandbox`.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use tokio::process::Command;

/// Read-only (and executable) for every command: enough for a shell, the usual tools and
/// interpreters installed by the system's package manager. `/etc` for the loader cache, name
/// resolution, certificates and locales; `/proc` for the programs that read their own state
/// there (a user namespace keeps the runner's own entries, such as its environment, closed).
pub const SYSTEM_READ: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc",
    "/proc",
    "/dev/zero",
    "/dev/random",
    "/dev/urandom",
];

/// Writable besides the working folder: the data sink every shell script redirects to.
const SYSTEM_WRITE: &[&str] = &["/dev/null"];

/// How `agent run` confines its command.
#[derive(clap::Args, Clone, Debug)]
pub struct SandboxArgs {
    /// Run the command without any sandbox: with the runner's own files, network and
    /// environment (its token, its key). Only for commands you trust completely.
    #[arg(long)]
    pub no_sandbox: bool,
    /// Let the command read (and run programs) under this path too. Repeatable.
    #[arg(long, value_name = "PATH")]
    pub allow_read: Vec<PathBuf>,
    /// Let the command read and write under this path too. Repeatable.
    #[arg(long, value_name = "PATH")]
    pub allow_write: Vec<PathBuf>,
    /// Let the command use the network.
    #[arg(long)]
    pub allow_net: bool,
    /// CPU seconds the command may use (RLIMIT_CPU; past it, SIGXCPU).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_cpu_seconds: u64,
    /// Memory the command may map, in MiB (RLIMIT_AS: address space, not resident memory;
    /// runtimes that reserve large heaps up front need more).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(16..))]
    pub max_memory_mb: u64,
    /// Largest file the command may write, in MiB (RLIMIT_FSIZE; past it, SIGXFSZ).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_file_size_mb: u64,
}

/// How the command's network is cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NetworkCut {
    /// `--allow-net`.
    Allowed,
    /// A new user and network namespace: no interface but a loopback that is down.
    Namespace,
    /// Landlock refuses TCP connect and bind; UDP stays open.
    LandlockTcp,
}

/// The confinement of every task's command, decided once when the runner starts.
#[derive(Debug)]
pub struct Sandbox {
    policy: Option<Policy>,
}

#[derive(Debug, Clone)]
struct Policy {
    read: Vec<PathBuf>,
    write: Vec<PathBuf>,
    network: NetworkCut,
    cpu_seconds: u64,
    memory_bytes: u64,
    file_bytes: u64,
}

/// A prepared command and the folder it works in (removed when this is dropped).
pub struct Prepared {
    pub command: Command,
    pub workdir: tempfile::TempDir,
}

impl Sandbox {
    /// Checks what the kernel offers and settles the policy; refuses when the sandbox cannot
    /// be had, unless `--no-sandbox`.
    pub fn new(args: &SandboxArgs) -> anyhow::Result<Sandbox> {
        if args.no_sandbox {
            return Ok(Sandbox { policy: None });
        }
        let policy = Policy {
            read: absolute_all(&args.allow_read)?,
            write: absolute_all(&args.allow_write)?,
            network: NetworkCut::Allowed,
            cpu_seconds: args.max_cpu_seconds,
            memory_bytes: args.max_memory_mb.saturating_mul(1 << 20),
            file_bytes: args.max_file_size_mb.saturating_mul(1 << 20),
        };
        imp::check(policy, args.allow_net).map(|policy| Sandbox {
            policy: Some(policy),
        })
    }

    /// What the runner tells at start.
    pub fn describe(&self) -> String {
        let Some(p) = &self.policy else {
            return "no sandbox (--no-sandbox): the command runs with this user's full rights"
                .to_owned();
        };
        let network = match p.network {
            NetworkCut::Allowed => "network allowed",
            NetworkCut::Namespace => "no network",
            NetworkCut::LandlockTcp => {
                "no TCP (Landlock; no user namespaces here, so UDP is not cut off)"
            }
        };
        format!(
            "sandboxed: a fresh folder per task, Landlock file access, {network}, CPU {} s, memory {} MiB, files {} MiB",
            p.cpu_seconds,
            p.memory_bytes >> 20,
            p.file_bytes >> 20
        )
    }

    /// `sh -c exec` for one task: in a fresh folder, with a cleared environment, and confined.
    pub fn command(&self, exec: &str, task_id: &str) -> anyhow::Result<Prepared> {
        let workdir = tempfile::Builder::new()
            .prefix("nervix-task-")
            .tempdir()
            .context("cannot create the task's working folder")?;
        let mut command = Command::new("/bin/sh");
        command.arg("-c").arg(exec).current_dir(workdir.path());
        // Its own process group, so that a timeout stops everything it started.
        command.process_group(0);
        match &self.policy {
            None => {
                command.env("NERVIX_TASK_ID", task_id);
            }
            Some(policy) => {
                command.env_clear();
                let path = std::env::var_os("PATH")
                    .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
                command
                    .env("PATH", path)
                    .env("HOME", workdir.path())
                    .env("TMPDIR", workdir.path())
                    .env("NERVIX_TASK_ID", task_id);
                if let Some(lang) = std::env::var_os("LANG") {
                    command.env("LANG", lang);
                }
                imp::confine(&mut command, policy, workdir.path())?;
            }
        }
        Ok(Prepared { command, workdir })
    }
}

fn absolute_all(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    paths
        .iter()
        .map(|p| {
            if !p.exists() {
                bail!("{} does not exist", p.display());
            }
            std::path::absolute(p).with_context(|| format!("cannot resolve {}", p.display()))
        })
        .collect()
}

/// Why a command stopped, for people: the signals the limits send are named, also when a
/// shell reports them for the program it ran (as exit status 128 + the signal).
pub fn describe_exit(status: std::process::ExitStatus) -> String {
    use nix::sys::signal::Signal;
    use std::os::unix::process::ExitStatusExt as _;

    let signal = status
        .signal()
        .or_else(|| status.code().filter(|c| *c > 128).map(|c| c - 128));
    match signal {
        Some(s) if s == Signal::SIGXCPU as i32 => {
            format!("it went over its CPU time limit (SIGXCPU; {status})")
        }
        Some(s) if s == Signal::SIGXFSZ as i32 => {
            format!("it went over its file size limit (SIGXFSZ; {status})")
        }
        _ => format!("the command failed ({status})"),
    }
}

/// Stops a command's whole process group (what it started too).
pub fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use std::io;
    use std::path::Path;

    use anyhow::{bail, Context as _};
    use landlock::{
        path_beneath_rules, Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset,
        RulesetAttr, RulesetCreated, RulesetCreatedAttr, Scope, ABI,
    };
    use nix::sched::CloneFlags;
    use nix::sys::resource::Resource;
    use tokio::process::Command;

    use super::{NetworkCut, Policy, SYSTEM_READ, SYSTEM_WRITE};

    /// The newest ABI whose rights are asked for; an older kernel enforces what it knows.
    const ABI_WANTED: ABI = ABI::V6;

    pub(super) fn check(mut policy: Policy, allow_net: bool) -> anyhow::Result<Policy> {
        let abi = landlock_abi();
        if abi < 1 {
            bail!(
                "this kernel has no Landlock (Linux 5.13 or later with Landlock enabled), so \
                 `agent run` cannot confine its command; pass --no-sandbox to run it with this \
                 user's full rights"
            );
        }
        policy.network = if allow_net {
            NetworkCut::Allowed
        } else if user_namespaces_work() {
            NetworkCut::Namespace
        } else if abi >= 4 {
            NetworkCut::LandlockTcp
        } else {
            bail!(
                "cannot cut the command off the network: no user namespaces here and Landlock \
                 ABI {abi} has no network rules (Linux 6.7); pass --allow-net to run it with \
                 network access"
            );
        };
        Ok(policy)
    }

    /// The kernel's Landlock ABI version, 0 or less without Landlock.
    fn landlock_abi() -> i32 {
        // Creating a ruleset with nothing to handle fails exactly when Landlock is missing.
        let probe = Ruleset::default()
            .set_compatibility(CompatLevel::HardRequirement)
            .handle_access(AccessFs::from_all(ABI::V1))
            .and_then(Ruleset::create);
        if probe.is_err() {
            return 0;
        }
        for (abi, n) in [
            (ABI::V6, 6),
            (ABI::V5, 5),
            (ABI::V4, 4),
            (ABI::V3, 3),
            (ABI::V2, 2),
        ] {
            let full = Ruleset::default()
                .set_compatibility(CompatLevel::HardRequirement)
                .handle_access(AccessFs::from_all(abi))
                .and_then(Ruleset::create);
            if full.is_ok() {
                return n;
            }
        }
        1
    }

    /// Whether this process may create a user namespace (some distributions and containers
    /// forbid it): tried in a throwaway child, never in the runner itself.
    fn user_namespaces_work() -> bool {
        let mut probe = std::process::Command::new("/bin/sh");
        probe.args(["-c", "exit 0"]);
        probe.stdin(std::process::Stdio::null());
        probe.stdout(std::process::Stdio::null());
        probe.stderr(std::process::Stdio::null());
        // SAFETY: see `confine`; `unshare` is a plain system call.
        #[allow(unsafe_code)]
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut probe, || {
                nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET)
                    .map_err(io::Error::from)
            });
        }
        probe.status().is_ok_and(|s| s.success())
    }

    fn ruleset(policy: &Policy, workdir: &Path) -> anyhow::Result<RulesetCreated> {
        let read = AccessFs::from_read(ABI_WANTED);
        let all = AccessFs::from_all(ABI_WANTED);
        let mut ruleset = Ruleset::default()
            .handle_access(all)?
            // Signals and abstract Unix sockets stay inside the command's own processes.
            .scope(Scope::from_all(ABI_WANTED))?;
        if policy.network == NetworkCut::LandlockTcp {
            // Required here: this is all that cuts the network off.
            ruleset = ruleset
                .set_compatibility(CompatLevel::HardRequirement)
                .handle_access(AccessNet::from_all(ABI::V4))?
                .set_compatibility(CompatLevel::BestEffort);
        }
        let writable = [workdir.to_path_buf()]
            .into_iter()
            .chain(policy.write.iter().cloned())
            .chain(SYSTEM_WRITE.iter().map(Into::into));
        let readable = SYSTEM_READ
            .iter()
            .map(Into::into)
            .chain(policy.read.iter().cloned());
        let created = ruleset
            .create()?
            .add_rules(path_beneath_rules(
                readable.collect::<Vec<std::path::PathBuf>>(),
                read,
            ))?
            .add_rules(path_beneath_rules(
                writable.collect::<Vec<std::path::PathBuf>>(),
                all,
            ))?;
        Ok(created)
    }

    pub(super) fn confine(
        command: &mut Command,
        policy: &Policy,
        workdir: &Path,
    ) -> anyhow::Result<()> {
        // Built here, in the parent: opening the paths and building the rules allocate.
        let mut ruleset =
            Some(ruleset(policy, workdir).context("cannot build the Landlock rules")?);
        // Never above the runner's own hard limits: raising one is refused to non-root users.
        let cap = |resource: Resource, wanted: u64| {
            nix::sys::resource::getrlimit(resource).map_or(wanted, |(_, hard)| wanted.min(hard))
        };
        let cpu = cap(Resource::RLIMIT_CPU, policy.cpu_seconds);
        let memory = cap(Resource::RLIMIT_AS, policy.memory_bytes);
        let file = cap(Resource::RLIMIT_FSIZE, policy.file_bytes);
        let cpu_ceiling =
            nix::sys::resource::getrlimit(Resource::RLIMIT_CPU).map_or(u64::MAX, |(_, hard)| hard);
        let unshare = policy.network == NetworkCut::Namespace;
        let hook = move || -> io::Result<()> {
            // Only system calls from here on: no allocation, no lock (see the module's doc).
            // The hard CPU limit one second later turns an ignored SIGXCPU into SIGKILL.
            let cpu_hard = cpu.saturating_add(1).min(cpu_ceiling);
            nix::sys::resource::setrlimit(Resource::RLIMIT_CPU, cpu, cpu_hard)?;
            nix::sys::resource::setrlimit(Resource::RLIMIT_AS, memory, memory)?;
            nix::sys::resource::setrlimit(Resource::RLIMIT_FSIZE, file, file)?;
            nix::sys::resource::setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
            if unshare {
                nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET)?;
            }
            let Some(ruleset) = ruleset.take() else {
                return Err(io::ErrorKind::InvalidInput.into());
            };
            // Sets no_new_privs, then enforces the rules on this process and what it runs.
            // Its error carries the system call's errno; `last_os_error` reads it back without
            // allocating (a boxed error would).
            ruleset
                .restrict_self()
                .map_err(|_| io::Error::last_os_error())?;
            Ok(())
        };
        // SAFETY: the hook runs in the forked child before exec. It only makes system calls
        // (setrlimit, unshare, prctl, landlock_restrict_self) on values moved into it, never
        // allocates or takes a lock, so it is async-signal-safe even though the runner is
        // multi-threaded. Dropping the ruleset closes its file descriptor (close(2)).
        #[allow(unsafe_code)]
        unsafe {
            command.pre_exec(hook);
        }
        Ok(())
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::path::Path;

    use anyhow::bail;
    use tokio::process::Command;

    use super::Policy;

    pub(super) fn check(_: Policy, _: bool) -> anyhow::Result<Policy> {
        bail!(
            "the sandbox of `agent run` needs Linux (Landlock); pass --no-sandbox to run the \
             command with this user's full rights"
        )
    }

    pub(super) fn confine(_: &mut Command, _: &Policy, _: &Path) -> anyhow::Result<()> {
        bail!("no sandbox on this system")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_by_a_limit_are_named() {
        use std::os::unix::process::ExitStatusExt as _;
        let xcpu = std::process::ExitStatus::from_raw(nix::sys::signal::Signal::SIGXCPU as i32);
        assert!(describe_exit(xcpu).contains("CPU time limit"));
        let xfsz = std::process::ExitStatus::from_raw(nix::sys::signal::Signal::SIGXFSZ as i32);
        assert!(describe_exit(xfsz).contains("file size limit"));
        let exit3 = std::process::ExitStatus::from_raw(3 << 8);
        assert_eq!(describe_exit(exit3), "the command failed (exit status: 3)");
        // What `sh -c` reports when the program it ran was stopped by SIGXCPU (24).
        let shell = std::process::ExitStatus::from_raw((128 + 24) << 8);
        assert!(describe_exit(shell).contains("CPU time limit"));
    }

    #[test]
    fn named_paths_must_exist() {
        let err = absolute_all(&[PathBuf::from("/no/such/place")]).unwrap_err();
        assert!(err.to_string().contains("does not exist"));
        assert!(absolute_all(&[PathBuf::from(".")]).unwrap()[0].is_absolute());
    }
}

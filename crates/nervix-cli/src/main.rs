//! `nervix`: the server, the agent runner, admin tools and benchmarks in one binary.

mod admin;
mod agent;
mod agent_run;
mod bench;
mod demo;
mod keygen;
mod logging;
mod serve;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "nervix",
    version,
    about = "Nervix: a federation platform for AI agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Nervix server.
    Serve(serve::ServeArgs),
    /// Operator tools (tokens, signing keys) working on the server's data and database.
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// Write a new Ed25519 agent key file (mode 0600).
    Keygen(keygen::KeygenArgs),
    /// Act as an agent against a Nervix server.
    #[command(subcommand)]
    Agent(agent::AgentCommand),
    /// Run a complete demo: a temporary server, agents working a workflow live, a summary.
    Demo(demo::DemoArgs),
    /// Load-test a running server.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> std::process::ExitCode {
    // `NERVIX_X=` (set but empty) means unset, as compose and `.env` files write it.
    let mut command = nervix_server::config::empty_env_means_unset(Cli::command(), &|name| {
        std::env::var_os(name)
    });
    let mut cli = Cli::from_arg_matches(&command.get_matches_mut())
        .unwrap_or_else(|e| e.format(&mut command).exit());
    // Before the runtime exists, so that its threads inherit the placement.
    let reserved = match &mut cli.command {
        Command::Serve(args) => serve::place_sqlite_writer(args),
        _ => None,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args, reserved).await,
            Command::Admin(cmd) => admin::run(cmd).await,
            Command::Keygen(args) => keygen::run(args),
            Command::Agent(cmd) => agent::run(cmd).await,
            Command::Bench(cmd) => bench::run(cmd).await,
            Command::Demo(args) => demo::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

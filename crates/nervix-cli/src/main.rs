//! `nervix`: the server, the agent and task tools, admin tools and benchmarks in one binary.

mod admin;
mod agent;
mod agent_run;
mod bench;
mod demo;
mod keygen;
mod logging;
mod mcp;
mod message;
mod output;
mod profile;
mod receipt;
mod sandbox;
mod serve;
mod task;
mod workflow;

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
    /// Post, list, show and cancel tasks.
    Task(task::TaskArgs),
    /// Post a workflow (a DAG of tasks) from a YAML file and follow it.
    Workflow(workflow::WorkflowArgs),
    /// Send and read end-to-end encrypted messages.
    Message(message::MessageArgs),
    /// Signed reputation receipts.
    #[command(subcommand)]
    Receipt(receipt::ReceiptCommand),
    /// Load-test a running server.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Serve the saved agent to an MCP client (an AI assistant) over stdio.
    Mcp(mcp::McpArgs),
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
            Command::Task(args) => task::run(args).await,
            Command::Workflow(args) => workflow::run(args).await,
            Command::Message(args) => message::run(args).await,
            Command::Bench(cmd) => bench::run(cmd).await,
            Command::Receipt(cmd) => receipt::run(cmd).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Mcp(args) => mcp::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprint!("{}", report(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// An error as people read it: what was being done, then for an API error its problem
/// document laid out (title, code, detail, each invalid field) and a hint where one helps.
fn report(e: &anyhow::Error) -> String {
    use std::fmt::Write as _;

    let api = e.chain().find_map(|cause| match cause.downcast_ref() {
        Some(nervix_client::ClientError::Api { status, problem }) => Some((*status, problem)),
        _ => None,
    });
    let Some((status, problem)) = api else {
        return format!("error: {e:#}\n");
    };
    let context: Vec<String> = e
        .chain()
        .take_while(|cause| cause.downcast_ref::<nervix_client::ClientError>().is_none())
        .map(ToString::to_string)
        .collect();
    let mut out = String::from("error: ");
    if !context.is_empty() {
        let _ = write!(out, "{}: ", context.join(": "));
    }
    let title = if problem.title.is_empty() {
        "request refused"
    } else {
        problem.title.as_str()
    };
    let _ = write!(out, "{title} (HTTP {status}");
    if let Some(code) = &problem.code {
        let _ = write!(out, ", {code}");
    }
    out.push_str(")\n");
    if let Some(detail) = problem.detail.as_deref().filter(|d| !d.is_empty()) {
        let _ = writeln!(out, "  {detail}");
    }
    for field in &problem.errors {
        let _ = writeln!(out, "  - {}: {}", field.field, field.message);
    }
    if let Some(wait) = problem.retry_after {
        let _ = writeln!(out, "  retry after {} s", wait.as_secs());
    }
    if status == 401 {
        out.push_str(
            "  hint: the token was refused (expired or revoked?): run `nervix agent login`, or set NERVIX_TOKEN\n",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn api_errors_read_well() {
        let problem = nervix_client::Problem {
            title: "Unprocessable Entity".into(),
            status: Some(422),
            detail: Some("the task is not valid".into()),
            code: Some("validation_failed".into()),
            errors: vec![nervix_client::FieldError {
                field: "deadline".into(),
                message: "must be in the future".into(),
            }],
            ..Default::default()
        };
        let e = anyhow::Error::new(nervix_client::ClientError::Api {
            status: 422,
            problem: Box::new(problem),
        })
        .context("posting the task failed");
        assert_eq!(
            report(&e),
            "error: posting the task failed: Unprocessable Entity (HTTP 422, validation_failed)\n  the task is not valid\n  - deadline: must be in the future\n"
        );
        assert_eq!(report(&anyhow::anyhow!("plain")), "error: plain\n");
    }
}

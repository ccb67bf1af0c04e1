//! `nvr`: see `supervisor::cli`.

use std::process::ExitCode;

use clap::Parser;
use supervisor::cli::{Cli, Command, DEFAULT_DATA_DIR};
use supervisor::commands;
use syncer::layout::DataDir;

fn main() -> ExitCode {
    syncer::layout::set_private_umask();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let given = cli.data_dir.clone().map(DataDir::new);
    let named = given
        .clone()
        .unwrap_or_else(|| DataDir::new(DEFAULT_DATA_DIR));
    // `demo` makes a data dir of its own when none is given.
    let d = match (&cli.command, &given) {
        (Command::Demo(_), None) => named,
        _ => match supervisor::identity::resolve_for_root(&named) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("nvr: {}: {e}", named.root.display());
                return ExitCode::FAILURE;
            }
        },
    };
    // On a data dir another user owns, commands that may write in it act as that user
    // (`supervisor::identity`); `run` stays root to start ingests under their own uids, and
    // `export` writes where its caller may.
    let acts_as_owner = matches!(
        cli.command,
        Command::Camera { .. }
            | Command::Status { .. }
            | Command::Recordings { .. }
            | Command::Check { .. }
    );
    if acts_as_owner && let Err(e) = supervisor::identity::act_as_owner(&d) {
        eprintln!("nvr: {}: {e}", d.root.display());
        return ExitCode::FAILURE;
    }
    let (name, result) = match cli.command {
        Command::Init { user } => ("init", commands::init::run(&d, user.as_deref())),
        Command::Camera { command } => ("camera", commands::camera::run(&d, command)),
        Command::Run(args) => ("run", commands::run::run(&d, args)),
        Command::Status { json } => ("status", commands::status::status(&d, json)),
        Command::Recordings { camera, json } => (
            "recordings",
            commands::status::recordings(&d, camera.as_deref(), json),
        ),
        Command::Check { hash, repair, json } => {
            ("check", commands::check::run(&d, hash, repair, json))
        }
        Command::Demo(args) => (
            "demo",
            commands::demo::run(given.is_some().then(|| d.clone()), args),
        ),
        Command::Export(args) => ("export", commands::export::run(&d, &args)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nvr {name}: {}: {e}", d.root.display());
            ExitCode::FAILURE
        }
    }
}

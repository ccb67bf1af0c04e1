//! One module per subcommand.

pub type CmdResult = Result<std::process::ExitCode, Box<dyn std::error::Error>>;
pub mod access;
pub mod camera;
pub mod check;
pub mod demo;
pub mod export;
pub mod init;
pub mod run;
pub mod status;
pub mod table;

//! How a command's outcome maps to the process exit code.

use std::process::ExitCode;

use igw_core::ConfigError;

/// A command's failure: bad configuration (exit 2) or a runtime failure (exit 1).
#[derive(Debug)]
pub enum CliError {
    Config(ConfigError),
    Runtime(anyhow::Error),
}

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> Self {
        CliError::Config(e)
    }
}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> Self {
        CliError::Runtime(e)
    }
}

pub fn report(r: Result<(), CliError>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Config(e)) => {
            eprintln!("{e}");
            eprintln!("igw: invalid configuration; nothing was changed");
            ExitCode::from(2)
        }
        Err(CliError::Runtime(e)) => {
            eprintln!("igw: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

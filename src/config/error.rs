//! Errors from reading and validating the configuration file.

use std::path::PathBuf;

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Occurs when the file cannot be read.
    #[error("failed to read config file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Occurs when the file is not valid TOML or does not match the expected shape; the
    /// message starts with `line:column`.
    #[error("{path}:{message}")]
    Parse { path: PathBuf, message: String },
    /// Occurs when values parse but make no sense together; every problem is listed.
    #[error("{path}: invalid configuration:\n  - {}", problems.join("\n  - "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

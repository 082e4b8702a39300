//! Command-line arguments. Flags are the top configuration layer; the `VALV_*`
//! environment layer is applied by [`crate::config`] (not by clap) so that the file →
//! env → flags order holds for every setting, including those without a flag.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Overrides;

#[derive(Debug, Parser)]
#[command(
    name = "valv",
    version,
    about = "An OCI registry whose storage is envelope-encrypted under a customer-managed key"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the registry.
    Serve(ServeArgs),
}

/// Each flag can also be set with the environment variable named in its help, or in
/// the config file; docs/OPERATIONS.md lists every setting.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Address to listen on, host:port [env: VALV_LISTEN] [default: 127.0.0.1:5000]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Data directory for the local KEK and the default filesystem storage
    /// [env: VALV_DATA_DIR] [default: ./valv-data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Key-encryption key id, file:///<dir>/<name>[/<version>]
    /// [env: VALV_KEY_ID] [default: a local development key under <data-dir>/keys]
    #[arg(long, value_name = "ID")]
    pub key_id: Option<String>,
    /// TOML configuration file [env: VALV_CONFIG]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Object storage URL, file:///<dir> or memory:// [env: VALV_STORAGE]
    /// [default: <data-dir>/store]
    #[arg(long, value_name = "URL")]
    pub storage: Option<String>,
}

impl ServeArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            config: self.config.clone(),
            listen: self.listen.clone(),
            data_dir: self.data_dir.clone(),
            key_id: self.key_id.clone(),
            storage: self.storage.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_flags_parse() {
        let cli = Cli::try_parse_from([
            "valv",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "/d",
            "--storage",
            "memory://",
        ])
        .expect("parse");
        let Command::Serve(args) = cli.command;
        let o = args.overrides();
        assert_eq!(o.listen.as_deref(), Some("127.0.0.1:0"));
        assert_eq!(o.data_dir, Some(PathBuf::from("/d")));
        assert_eq!(o.storage.as_deref(), Some("memory://"));
        assert_eq!(o.key_id, None);
    }

    #[test]
    fn unknown_flag_is_rejected() {
        assert!(Cli::try_parse_from(["valv", "serve", "--listn", "x"]).is_err());
    }
}

//! The command line (clap derive). `main.rs` parses it and hands it to `run::main`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "blebatt",
    version,
    about = "JBD BMS and Thornwave PowerMon over Bluetooth LE, as Influx line protocol for Telegraf's inputs.execd",
    after_help = "Lines go to stdout; logs go to stderr with Telegraf's E!/W!/I!/D! prefixes.\nQuick try without hardware: blebatt once --demo"
)]
pub struct Cli {
    /// More logging (-v: debug; -vv: also btleplug's).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Connect, poll every device once, print the lines, disconnect and exit.
    Once(DeviceArgs),
    /// The Telegraf inputs.execd mode: poll on every stdin line (signal = "STDIN") or on
    /// --interval (signal = "none"); exit cleanly on stdin EOF, SIGTERM or SIGINT.
    Run(RunArgs),
    /// List nearby Bluetooth LE devices and which kind each looks like.
    Scan(ScanArgs),
    /// Decode captured bytes (hex) without any radio.
    Decode {
        #[command(subcommand)]
        what: DecodeCommand,
    },
    /// Configuration file tools.
    Config {
        #[command(subcommand)]
        what: ConfigCommand,
    },
}

#[derive(Debug, Args, Clone, Default)]
pub struct DeviceArgs {
    /// TOML configuration file with [[device]] tables.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A JBD BMS to poll, NAME=MAC (repeatable).
    #[arg(long, value_name = "NAME=MAC")]
    pub jbd: Vec<String>,
    /// A Thornwave PowerMon to poll, NAME=MAC (repeatable).
    #[arg(long, value_name = "NAME=MAC")]
    pub powermon: Vec<String>,
    /// Use the built-in simulated devices instead of the radio.
    #[arg(long)]
    pub demo: bool,
    /// Bound on each reply and each Bluetooth call (e.g. 5s, 800ms; 100ms to 10m).
    #[arg(long, value_parser = crate::config::parse_timeout_flag, value_name = "DURATION")]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub devices: DeviceArgs,
    /// Poll on this interval instead of on stdin lines (for signal = "none"; up to 24h).
    #[arg(long, value_parser = crate::config::parse_interval_flag, value_name = "DURATION")]
    pub interval: Option<Duration>,
}

#[derive(Debug, Args, Clone)]
pub struct ScanArgs {
    /// How long to scan.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
}

#[derive(Debug, Subcommand)]
pub enum DecodeCommand {
    /// Notifications or whole frames of a JBD BMS (0x03, 0x04, optionally 0x05), in the order
    /// received; prints one jbd_bms line.
    Jbd {
        #[arg(required = true, value_name = "HEX")]
        hex: Vec<String>,
    },
    /// One PowerMon record (52 bytes, or 54 COBS-framed); prints one powermon line.
    Powermon {
        #[arg(value_name = "HEX")]
        hex: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file without connecting to anything.
    Check { file: PathBuf },
}

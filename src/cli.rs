//! The command line (clap derive). `main.rs` parses it and hands it to `run::main`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgMatches, Args, FromArgMatches, Parser, Subcommand};

use crate::devices::{self, Kind};

#[derive(Debug, Parser)]
#[command(
    name = "blebatt",
    version,
    about = "JBD and JK BMSes, Thornwave PowerMon and Victron instant readout over Bluetooth LE, as Influx line protocol for Telegraf's inputs.execd",
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
    /// Pair once with a device whose firmware requires Bluetooth pairing with a passkey
    /// (newer JBD dongles echo every request until paired). BlueZ keeps the bond; polling
    /// needs nothing more.
    Pair(PairArgs),
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
    #[arg(long, value_name = "KIND:NAME=MAC", help = device_flag_help())]
    pub device: Vec<String>,
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
    /// Where the energy counters' state is kept across restarts (default: state_dir in the
    /// config, else $STATE_DIRECTORY, else /var/lib/blebatt when writable, else
    /// $XDG_STATE_HOME/blebatt). With --demo, only when given.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct ScanArgs {
    /// How long to scan.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
}

/// The help of `--device`, naming every registered kind.
fn device_flag_help() -> String {
    let kinds: Vec<String> = devices::KINDS
        .iter()
        .map(|k| format!("{} ({})", k.name, k.title))
        .collect();
    format!(
        "A device of any kind, KIND:NAME=MAC (repeatable); KIND is one of: {}",
        kinds.join(", ")
    )
}

/// `blebatt decode <KIND> HEX...`: one subcommand per registered kind (see
/// [`crate::devices::Decoder`]).
#[derive(Debug)]
pub struct DecodeCommand {
    pub kind: &'static Kind,
    pub hex: Vec<String>,
    /// `--key`, for kinds whose bytes are encrypted.
    pub key: Option<String>,
}

const HEX_ARG: &str = "hex";
const KEY_ARG: &str = "key";

impl FromArgMatches for DecodeCommand {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let missing = || clap::Error::new(clap::error::ErrorKind::MissingSubcommand);
        let (name, sub) = matches.subcommand().ok_or_else(missing)?;
        let kind = devices::by_name(name)
            .ok_or_else(|| clap::Error::new(clap::error::ErrorKind::InvalidSubcommand))?;
        let hex = sub
            .get_many::<String>(HEX_ARG)
            .map(|v| v.cloned().collect())
            .unwrap_or_default();
        let key = if kind.decode.key {
            sub.get_one::<String>(KEY_ARG).cloned()
        } else {
            None
        };
        Ok(DecodeCommand { kind, hex, key })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Subcommand for DecodeCommand {
    fn augment_subcommands(cmd: clap::Command) -> clap::Command {
        devices::KINDS.iter().fold(cmd, |cmd, kind| {
            let hex = clap::Arg::new(HEX_ARG).value_name("HEX").required(true);
            let hex = if kind.decode.many {
                hex.action(clap::ArgAction::Append)
            } else {
                hex.action(clap::ArgAction::Set)
            };
            let examples: Vec<String> = kind
                .decode
                .examples
                .iter()
                .map(|e| format!("{}:\n  blebatt decode {}", e.what, example_args(kind, e)))
                .collect();
            let sub = clap::Command::new(kind.name)
                .about(kind.decode.about)
                .after_help(format!("Examples, real captures:\n{}", examples.join("\n")))
                .arg(hex);
            cmd.subcommand(if kind.decode.key {
                sub.arg(
                    clap::Arg::new(KEY_ARG)
                        .long(KEY_ARG)
                        .value_name("KEY")
                        .required(true)
                        .help("The device's key (32 hex digits). Given here, other users of the machine can see it while decode runs"),
                )
            } else {
                sub
            })
        })
    }

    fn augment_subcommands_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_subcommands(cmd)
    }

    fn has_subcommand(name: &str) -> bool {
        devices::by_name(name).is_some()
    }
}

/// An example's arguments as a user types them after `blebatt decode`.
pub fn example_args(kind: &Kind, e: &devices::Example) -> String {
    let mut args = vec![kind.name.to_string()];
    if let Some(key) = e.key {
        args.push(format!("--key {key}"));
    }
    args.extend(e.hex.iter().map(|a| format!("'{a}'")));
    args.join(" ")
}

#[derive(Debug, Args)]
pub struct PairArgs {
    /// A device's name in --config, or its Bluetooth address (AA:BB:CC:DD:EE:FF).
    #[arg(value_name = "NAME|MAC")]
    pub device: String,
    /// The configuration file that names the device (its `passkey` and `adapter` are used).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The passkey, six digits (for a JBD: its Bluetooth password, often 123456). Without
    /// it: the device's `passkey` in --config, else it is asked on the terminal. (Given here,
    /// other users of the machine can see it while `pair` runs.)
    #[arg(long, value_name = "DIGITS", value_parser = crate::secret::Passkey::parse)]
    pub passkey: Option<crate::secret::Passkey>,
    /// The BlueZ adapter (hci0, hci1 ...) to pair through; default: the device's `adapter` in
    /// --config, else the first.
    #[arg(long, value_name = "HCI", value_parser = parse_adapter)]
    pub adapter: Option<String>,
}

fn parse_adapter(text: &str) -> Result<String, String> {
    crate::config::check_adapter(text).map(|()| text.to_string())
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file without connecting to anything.
    Check { file: PathBuf },
}

//! The Telegraf contract and the other commands: what runs when, and in which order things
//! stop. `main.rs` calls [`main`] and turns its result into an exit code.

mod decode;
mod execd;
mod pair;
mod printer;
mod stop;

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use futures::future::join_all;

use crate::cli::{Cli, Command, ConfigCommand, DeviceArgs};
use crate::config::{self, Config, ConfigError, DeviceFlag, Sources};
use crate::demo::DemoLink;
use crate::device::{self, DeviceHandle, DeviceSpec};
use crate::devices;
use crate::output;
use crate::transport::Failure;

/// Exit codes.
pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

/// An error that maps to "bad usage or configuration" (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl From<ConfigError> for UsageError {
    fn from(e: ConfigError) -> Self {
        UsageError(format!("configuration error: {e}"))
    }
}

/// Runs the parsed command; returns the process exit code.
pub fn main(cli: Cli) -> i32 {
    let result = match cli.command {
        Command::Decode { what } => return decode::main(what),
        Command::Config {
            what: ConfigCommand::Check { file },
        } => {
            return match config::check_file(&file) {
                Ok(cfg) => {
                    log::info!(
                        "{}: OK, {} device(s){}",
                        file.display(),
                        cfg.devices.len(),
                        cfg.interval
                            .map(|i| format!(", interval {i:?}"))
                            .unwrap_or_default()
                    );
                    EXIT_OK
                }
                Err(e) => {
                    log::error!("configuration error: {e}");
                    EXIT_USAGE
                }
            };
        }
        Command::Once(args) => on_runtime(once(args)),
        Command::Run(args) => on_runtime(execd::run(args)),
        Command::Scan(args) => on_runtime(scan(args.seconds)),
        Command::Pair(args) => on_runtime(pair::main(args)),
    };
    match result {
        Ok(code) => code,
        Err(e) if e.downcast_ref::<UsageError>().is_some() => {
            log::error!("{e:#}");
            EXIT_USAGE
        }
        Err(e) => {
            log::error!("{e:#}");
            EXIT_FAILURE
        }
    }
}

/// How long the runtime may take to wind down once a command is done (a library's blocking
/// task must not hold the exit up).
const RUNTIME_WIND_DOWN: Duration = Duration::from_millis(100);

fn on_runtime(command: impl Future<Output = anyhow::Result<i32>>) -> anyhow::Result<i32> {
    // One thread: a handful of devices spend their time waiting on the radio, a Pi Zero has
    // one core, and cross-thread wake-ups were the largest CPU cost measured (bench/README.md).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime");
    let result = rt.block_on(command);
    rt.shutdown_timeout(RUNTIME_WIND_DOWN);
    result
}

/// Resolves the devices from config file, flags or `--demo`.
pub(crate) fn resolve(args: &DeviceArgs) -> Result<Config, UsageError> {
    // The kinds' own flags first, then `--device`, each in the order given.
    let own = [("jbd", &args.jbd), ("powermon", &args.powermon)];
    let devices = own
        .into_iter()
        .flat_map(|(kind, args)| args.iter().map(move |a| DeviceFlag::of_kind(kind, a)))
        .chain(args.device.iter().map(|a| DeviceFlag::generic(a)))
        .collect();
    let cfg = config::resolve(&Sources {
        config: args.config.clone(),
        devices,
        timeout: args.timeout,
    })?;
    if args.demo {
        if !cfg.devices.is_empty() {
            return Err(UsageError(
                "--demo uses the built-in devices; remove --jbd/--powermon/--device/--config or --demo"
                    .into(),
            ));
        }
        let timeout = args.timeout.unwrap_or(config::DEFAULT_TIMEOUT);
        let devices = demo_devices(timeout).into_iter().map(|(s, _)| s).collect();
        return Ok(Config {
            devices,
            interval: cfg.interval,
            state_dir: cfg.state_dir,
        });
    }
    if cfg.devices.is_empty() {
        return Err(UsageError(
            "no devices: give --jbd NAME=MAC / --powermon NAME=MAC / --device KIND:NAME=MAC, a --config file, or --demo to try the built-in simulated devices".into(),
        ));
    }
    Ok(cfg)
}

/// The built-in demo devices of every kind, in registry order, each over the demo transport.
pub fn demo_devices(timeout: Duration) -> Vec<(DeviceSpec, DemoLink)> {
    devices::KINDS
        .iter()
        .flat_map(|&kind| {
            (kind.demo)().into_iter().map(move |d| {
                let spec = DeviceSpec {
                    name: d.name.into(),
                    kind,
                    address: d.address.into(),
                    timeout,
                    adapter: None,
                    password: d.password.map(crate::secret::Secret::new),
                    passkey: None,
                    key: d.key.map(crate::secret::Secret::new),
                };
                (spec, DemoLink::new(d.peripheral))
            })
        })
        .collect()
}

/// The running devices, and the transport's "cannot recover" signal.
pub(crate) struct Started {
    pub handles: Vec<DeviceHandle>,
    pub failure: Failure,
    /// Keeps the Bluetooth session (and its background tasks) alive.
    _bt: Option<crate::ble::Bluetooth>,
}

/// Where a device task's energy counters live: in memory (`once`), or continued from and
/// saved to a state directory (`run`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Metering {
    pub state_dir: Option<std::path::PathBuf>,
    pub interval: Option<Duration>,
}

impl Metering {
    fn meter(&self, spec: &DeviceSpec) -> crate::energy::Meter {
        match &self.state_dir {
            Some(dir) => crate::energy::Meter::persistent(
                &spec.name,
                &spec.address,
                dir,
                self.interval,
                crate::reading::now_ns(),
            ),
            None => crate::energy::Meter::volatile(&spec.name, &spec.address),
        }
    }
}

/// Starts one task per device, over the demo links or Bluetooth.
pub(crate) async fn start_devices(
    cfg: &Config,
    demo: bool,
    metering: &Metering,
) -> anyhow::Result<Started> {
    if demo {
        let timeout = cfg
            .devices
            .first()
            .map(|d| d.timeout)
            .unwrap_or(config::DEFAULT_TIMEOUT);
        return Ok(Started {
            handles: demo_devices(timeout)
                .into_iter()
                .map(|(spec, link)| {
                    let meter = metering.meter(&spec);
                    device::spawn_metered(spec, link, meter)
                })
                .collect(),
            failure: Failure::never(),
            _bt: None,
        });
    }
    let bt = crate::ble::Bluetooth::open()
        .await
        .context("cannot reach Bluetooth")?;
    // Every link first: a bad adapter name fails before any device task connects.
    let mut links = Vec::new();
    for spec in &cfg.devices {
        links.push(bt.link(spec).await?);
    }
    bt.watch(&cfg.devices);
    let handles = cfg
        .devices
        .iter()
        .zip(links)
        .map(|(spec, link)| device::spawn_metered(spec.clone(), link, metering.meter(spec)))
        .collect();
    Ok(Started {
        handles,
        failure: bt.failure(),
        _bt: Some(bt),
    })
}

/// Disconnects every device (concurrently, each bounded). Returns true when every one of them
/// is known to be disconnected, and logs the outcome.
pub(crate) async fn shutdown(handles: Vec<DeviceHandle>) -> bool {
    let total = handles.len();
    let done = join_all(handles.into_iter().map(DeviceHandle::shutdown)).await;
    let confirmed = done.iter().filter(|&&d| d).count();
    if confirmed == total {
        log::info!("all devices disconnected");
        true
    } else {
        log::warn!(
            "{} of {total} device(s) could not be confirmed disconnected",
            total - confirmed
        );
        false
    }
}

/// `blebatt once`: poll each device once, print in configuration order, disconnect.
/// A first SIGTERM/SIGINT ends it early: every device is disconnected, nothing is printed,
/// exit 1. A second exits at once.
async fn once(args: DeviceArgs) -> anyhow::Result<i32> {
    let cfg = resolve(&args)?;
    let (stopper, mut stop) = stop::channel();
    stop::spawn_signal_watcher(stopper)?;
    // `once` keeps its counters in memory: it must not move the counters `run` keeps.
    let once_metering = Metering::default();
    let Started {
        handles,
        mut failure,
        _bt,
    } = tokio::select! {
        started = start_devices(&cfg, args.demo, &once_metering) => started?,
        why = stop.wait() => anyhow::bail!("{why}: interrupted before any device was started"),
    };
    let results = tokio::select! {
        r = join_all(handles.iter().map(|h| h.poll())) => r,
        reason = failure.wait() => {
            shutdown(handles).await;
            anyhow::bail!("{reason}");
        }
        why = stop.wait() => {
            log::info!("{why}: interrupted, disconnecting");
            shutdown(handles).await;
            anyhow::bail!("{why}: interrupted before every device answered; nothing printed");
        }
    };
    let mut buf = Vec::new();
    let mut all_answered = true;
    for r in &results {
        match r {
            Ok(reading) => output::write_line(&mut buf, reading),
            Err(e) => {
                all_answered = false;
                log::error!("{e}");
            }
        }
    }
    shutdown(handles).await;
    print_all(&buf)?;
    Ok(if all_answered { EXIT_OK } else { EXIT_FAILURE })
}

/// `blebatt scan`: lists nearby devices and what kind each looks like.
async fn scan(seconds: u64) -> anyhow::Result<i32> {
    let mut rows = crate::ble::scan(seconds).await?;
    let mut out = Vec::new();
    write_scan_table(&mut out, &mut rows)?;
    print_all(&out)?;
    Ok(EXIT_OK)
}

/// The `scan` table: recognised kinds first, then the strongest signal first.
fn write_scan_table(out: &mut impl Write, rows: &mut [crate::ble::ScanRow]) -> std::io::Result<()> {
    rows.sort_by_key(|r| {
        (
            r.kind.is_none(),
            std::cmp::Reverse(r.rssi.unwrap_or(i16::MIN)),
        )
    });
    writeln!(out, "{:<17}  {:>4}  {:<8}  NAME", "ADDRESS", "RSSI", "KIND")?;
    for r in rows.iter() {
        let rssi = r.rssi.map_or_else(|| "-".to_string(), |v| v.to_string());
        let kind = r.kind.map_or("unknown", |k| k.name);
        writeln!(
            out,
            "{:<17}  {:>4}  {:<8}  {}",
            r.address, rssi, kind, r.name
        )?;
    }
    Ok(())
}

/// Writes `bytes` to stdout and flushes; a closed stdout is a normal end (see
/// [`ignore_broken_pipe`]). For the commands that print once, at their end.
pub(crate) fn print_all(bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .or_else(ignore_broken_pipe)
}

/// A closed stdout (e.g. `| head`) is a normal end, not an error.
pub(crate) fn ignore_broken_pipe(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(e)
    }
}

/// How long `run` waits for in-flight polls after a stop request before disconnecting.
pub(crate) const STOP_GRACE: Duration = Duration::from_millis(300);

#[cfg(test)]
mod tests {
    use std::io::{Error, ErrorKind};

    use super::ignore_broken_pipe;

    #[test]
    fn the_scan_table_lists_known_kinds_first_then_by_signal() {
        use crate::devices::{jbd, powermon};
        let row = |address: &str, rssi, kind, name: &str| crate::ble::ScanRow {
            address: address.into(),
            rssi,
            kind,
            name: name.into(),
        };
        let mut rows = [
            row("AA:00:00:00:00:01", Some(-40), None, "tv"),
            row("AA:00:00:00:00:02", None, Some(&jbd::KIND), "SP04S034"),
            row(
                "AA:00:00:00:00:03",
                Some(-70),
                Some(&powermon::KIND),
                "PowerMon",
            ),
            row(
                "AA:00:00:00:00:04",
                Some(-55),
                Some(&jbd::KIND),
                "xiaoxiang",
            ),
        ];
        let mut out = Vec::new();
        super::write_scan_table(&mut out, &mut rows).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ADDRESS            RSSI  KIND      NAME\n\
             AA:00:00:00:00:04   -55  jbd       xiaoxiang\n\
             AA:00:00:00:00:03   -70  powermon  PowerMon\n\
             AA:00:00:00:00:02     -  jbd       SP04S034\n\
             AA:00:00:00:00:01   -40  unknown   tv\n"
        );
    }

    #[test]
    fn only_a_closed_stdout_is_a_normal_end() {
        assert!(ignore_broken_pipe(Error::from(ErrorKind::BrokenPipe)).is_ok());
        let full = ignore_broken_pipe(Error::from(ErrorKind::StorageFull)).unwrap_err();
        assert_eq!(full.kind(), ErrorKind::StorageFull);
    }
}

//! Standalone mock BlueZ with simulated JBD and PowerMon devices, for benchmarks and manual
//! runs of blebatt with no Bluetooth hardware.
//!
//! ```text
//! cargo run --example mock_bluez -- [--bus-address ADDR | --socket PATH] \
//!     --jbd4 AA:BB:CC:DD:EE:01 --jbd16 AA:BB:CC:DD:EE:02 --powermon AA:BB:CC:DD:EE:03 \
//!     [--powermon-new MAC] [--drop-every N-polls] [--chunk-gap-ms MS]
//! ```
//!
//! With `--bus-address` it serves `org.bluez` on an existing bus (e.g. a private
//! `dbus-daemon --session --address=unix:path=...`); otherwise it starts its own busd bus on
//! `--socket` (default: a socket in a new temporary directory). Once ready it prints exactly one
//! line on stdout, `DBUS_SYSTEM_BUS_ADDRESS=<address>`, and runs until stdin is closed (unless
//! `--ignore-stdin`), or SIGTERM/SIGINT. A per-device summary goes to stderr at exit.
//!
//! Devices: `--jbd4` a 4-cell 12 V LiFePO4 pack (13.28 V, -1.50 A, 2 NTCs, cells ~3320 mV),
//! `--jbd16` a 16-cell 48 V pack (53.12 V, +12.34 A, 3 NTCs), both answering registers 0x03,
//! 0x04 and 0x05; `--powermon` a PowerMon with old firmware (52-byte record), `--powermon-new`
//! one with new firmware (54-byte COBS frame). Each option may be repeated.

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    io::{Read, Write},
    path::PathBuf,
    sync::mpsc,
    time::Duration,
};

use clap::Parser;
use support::{
    bus::PrivateBus,
    fixtures::{pack_4s, pack_16s, powermon_new_sample, powermon_old_sample},
    mock_bluez::{EventKind, Faults, MockBluez, MockDevice, PowerMonFirmware},
};

#[derive(Parser, Debug)]
#[command(about = "Mock BlueZ with simulated JBD BMS and Thornwave PowerMon devices")]
struct Args {
    /// Serve org.bluez on this existing bus instead of starting one.
    #[arg(long, conflicts_with = "socket")]
    bus_address: Option<String>,
    /// Start a busd bus on this unix socket path (default: in a new temporary directory).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// A 4-cell 12 V JBD pack at this MAC (repeatable).
    #[arg(long, value_name = "MAC")]
    jbd4: Vec<String>,
    /// A 16-cell 48 V JBD pack at this MAC (repeatable).
    #[arg(long, value_name = "MAC")]
    jbd16: Vec<String>,
    /// A PowerMon, old firmware layout, at this MAC (repeatable).
    #[arg(long, value_name = "MAC")]
    powermon: Vec<String>,
    /// A PowerMon, new firmware (COBS) layout, at this MAC (repeatable).
    #[arg(long, value_name = "MAC")]
    powermon_new: Vec<String>,
    /// Drop each device's link on every Nth poll (JBD: a 0x03 request, after the first
    /// notification of the reply; PowerMon: a read, instead of answering). "N" or "N-polls".
    #[arg(long, value_name = "N-polls", value_parser = parse_polls)]
    drop_every: Option<u32>,
    /// Wait between notifications of a reply, like a BLE connection interval.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    chunk_gap_ms: u64,
    /// Devices are not cached: they appear only once a client scans.
    #[arg(long)]
    scan_only: bool,
    /// Run until SIGTERM/SIGINT only (for when stdin is /dev/null, as in background jobs).
    #[arg(long)]
    ignore_stdin: bool,
}

fn parse_polls(s: &str) -> Result<u32, String> {
    let n = s.strip_suffix("-polls").unwrap_or(s);
    match n.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("expected a positive number of polls, got `{s}`")),
    }
}

fn main() {
    let args = Args::parse();

    let faults = Faults {
        drop_link_every_polls: args.drop_every,
        chunk_gap: Duration::from_millis(args.chunk_gap_ms),
        ..Faults::default()
    };
    let mut devices = Vec::new();
    for mac in &args.jbd4 {
        devices.push(MockDevice::jbd(mac, "SP04S034-L4S-100A").with_replies(pack_4s().replies()));
    }
    for mac in &args.jbd16 {
        devices.push(MockDevice::jbd(mac, "xiaoxiang BMS").with_replies(pack_16s().replies()));
    }
    for mac in &args.powermon {
        devices.push(MockDevice::powermon(
            mac,
            "PowerMon",
            PowerMonFirmware::Old,
            powermon_old_sample().encode(),
        ));
    }
    for mac in &args.powermon_new {
        devices.push(MockDevice::powermon(
            mac,
            "PowerMon-5S",
            PowerMonFirmware::New,
            powermon_new_sample().encode(),
        ));
    }
    let devices: Vec<MockDevice> = devices
        .into_iter()
        .map(|d| {
            let d = d.with_faults(faults.clone());
            if args.scan_only {
                d.appears_on_scan()
            } else {
                d
            }
        })
        .collect();
    if devices.is_empty() {
        eprintln!("mock_bluez: no devices given (--jbd4/--jbd16/--powermon/--powermon-new)");
    }
    let macs: Vec<String> = devices.iter().map(|d| d.mac.clone()).collect();

    let bus = match &args.bus_address {
        Some(_) => None,
        None => Some(match &args.socket {
            Some(path) => PrivateBus::start_at(path),
            None => PrivateBus::start(),
        }),
    };
    let address = match (&args.bus_address, &bus) {
        (Some(a), _) => a.clone(),
        (None, Some(b)) => b.address(),
        (None, None) => unreachable!(),
    };
    let mock = MockBluez::start_with(&address, devices);

    let mut out = std::io::stdout().lock();
    writeln!(out, "DBUS_SYSTEM_BUS_ADDRESS={address}").expect("stdout");
    out.flush().expect("stdout");
    drop(out);

    let (tx, rx) = mpsc::channel::<&'static str>();
    {
        let tx = tx.clone();
        let mut signals = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
        ])
        .expect("signal handlers");
        std::thread::spawn(move || {
            if signals.forever().next().is_some() {
                let _ = tx.send("signal");
            }
        });
    }
    if !args.ignore_stdin {
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
            let _ = tx.send("stdin closed");
        });
    }
    let why = rx.recv().unwrap_or("channel closed");

    let events = mock.events();
    eprintln!("mock_bluez: stopping ({why})");
    for mac in &macs {
        let n = |f: &dyn Fn(&EventKind) -> bool| {
            events
                .iter()
                .filter(|e| e.is_for(mac) && f(&e.kind))
                .count()
        };
        eprintln!(
            "mock_bluez: {mac}: connects {} refused {} disconnects {} link drops {} \
             writes {} reads {} notifications {}",
            n(&|k| matches!(k, EventKind::Connect { .. })),
            n(&|k| matches!(k, EventKind::ConnectRefused { .. })),
            n(&|k| matches!(k, EventKind::Disconnect { .. })),
            n(&|k| matches!(k, EventKind::LinkDropped { .. })),
            n(&|k| matches!(k, EventKind::Write { .. })),
            n(&|k| matches!(k, EventKind::Read { .. })),
            n(&|k| matches!(k, EventKind::Notify { .. })),
        );
    }
    drop(mock);
    drop(bus);
}

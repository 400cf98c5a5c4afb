//! `blebatt pair NAME --config FILE` or `blebatt pair MAC`: one BLE passkey pairing through
//! BlueZ (`ble/pair.rs`), then exit: 0 paired (or already), 1 the pairing failed (the message
//! says why and what to do), 2 a usage or configuration error.

use std::io::IsTerminal;

use super::{EXIT_FAILURE, EXIT_OK, UsageError};
use crate::ble::pair::{Paired, pair};
use crate::cli::PairArgs;
use crate::config::{self, normalize_mac};
use crate::secret::Passkey;

/// What to pair: a label for messages, the address, the adapter and a configured passkey.
struct Target {
    label: String,
    address: String,
    adapter: Option<String>,
    passkey: Option<Passkey>,
}

fn target(args: &PairArgs) -> Result<Target, UsageError> {
    let cfg = match &args.config {
        Some(path) => Some(config::load_file(path)?),
        None => None,
    };
    let devices = cfg.as_ref().map_or(&[][..], |c| &c.devices[..]);
    let found = match normalize_mac(&args.device) {
        Some(mac) => devices.iter().find(|d| d.address == mac),
        None => devices.iter().find(|d| d.name == args.device.trim()),
    };
    let t = match (found, normalize_mac(&args.device)) {
        (Some(d), _) => Target {
            label: d.name.clone(),
            address: d.address.clone(),
            adapter: d.adapter.clone(),
            passkey: d.passkey,
        },
        (None, Some(mac)) => Target {
            label: mac.clone(),
            address: mac,
            adapter: None,
            passkey: None,
        },
        (None, None) => {
            let names: Vec<&str> = devices.iter().map(|d| d.name.as_str()).collect();
            return Err(UsageError(match &args.config {
                None => format!(
                    "{:?} is not a Bluetooth address (fix: give its address, e.g. blebatt pair A4:C1:38:12:34:56, or its name with --config FILE)",
                    args.device
                ),
                Some(path) => format!(
                    "no device named {:?} in {} (its devices: {})",
                    args.device,
                    path.display(),
                    names.join(", ")
                ),
            }));
        }
    };
    Ok(Target {
        adapter: args.adapter.clone().or(t.adapter),
        passkey: args.passkey.or(t.passkey),
        ..t
    })
}

/// Asks for the passkey on the terminal (stdin and stderr), without a runtime thread blocked.
async fn ask(label: String) -> Result<Passkey, UsageError> {
    let line = tokio::task::spawn_blocking(move || {
        eprint!("Passkey for {label} (six digits; for a JBD its Bluetooth password): ");
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await
    .map_err(|e| UsageError(format!("cannot read the passkey: {e}")))?
    .map_err(|e| UsageError(format!("cannot read the passkey: {e}")))?;
    Passkey::parse(&line).map_err(|e| UsageError(format!("passkey: {e}")))
}

pub async fn main(args: PairArgs) -> anyhow::Result<i32> {
    let t = target(&args)?;
    let passkey = match t.passkey {
        Some(p) => p,
        None if std::io::stdin().is_terminal() => ask(t.label.clone()).await?,
        None => {
            return Err(UsageError(
                "no passkey (fix: set passkey in the device's [[device]] and give --config, give --passkey, or run blebatt pair in a terminal to be asked)".into(),
            )
            .into());
        }
    };
    let address = &t.address;
    let who = if t.label == t.address {
        t.address.clone()
    } else {
        format!("{} ({address})", t.label)
    };
    log::info!("{who}: pairing (it may take up to a minute)");
    Ok(match pair(address, t.adapter.as_deref(), passkey).await {
        Ok(Paired::Now) => {
            log::info!("{who}: paired; BlueZ keeps the bond, and blebatt polls it from now on");
            EXIT_OK
        }
        Ok(Paired::Already) => {
            log::info!(
                "{who}: already paired, nothing done (to pair again: `bluetoothctl remove {address}`, then blebatt pair)"
            );
            EXIT_OK
        }
        Err(e) => {
            log::error!("{who}: pairing failed: {e}");
            EXIT_FAILURE
        }
    })
}

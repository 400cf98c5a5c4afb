//! `blebatt decode`: captured bytes in, one line out, no radio. Bad input: one `E!` line on
//! stderr, nothing on stdout, exit code 2. A value left out as implausible, or a pack voltage
//! far from its cells, is a `W!` line each.

use std::sync::Arc;

use crate::cli::DecodeCommand;
use crate::output;
use crate::reading::{Reading, now_ns};

use super::{EXIT_OK, EXIT_USAGE, print_all};

/// The `device` tag of decoded lines.
const DECODED_DEVICE: &str = "decoded";

pub fn main(what: DecodeCommand) -> i32 {
    let values = (what.kind.decode.run)(crate::devices::DecodeInput {
        hex: &what.hex,
        key: what.key.as_deref(),
    });
    match values {
        Ok(values) => {
            // Asked to decode these bytes: say what was left out, and why.
            for o in values.omitted() {
                log::warn!("{o} (not printed)");
            }
            if let Some(c) = values.caution() {
                log::warn!("{}", c.message);
            }
            let reading = Reading {
                derived: None,
                device: DECODED_DEVICE.into(),
                address: String::new(),
                time_ns: now_ns(),
                values: Arc::from(values),
            };
            let line = output::line(&reading);
            match print_all(line.as_bytes()) {
                Ok(()) => EXIT_OK,
                Err(e) => {
                    log::error!("cannot write to stdout: {e}");
                    super::EXIT_FAILURE
                }
            }
        }
        Err(e) => {
            log::error!("{e}");
            EXIT_USAGE
        }
    }
}

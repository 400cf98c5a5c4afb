//! `blebatt decode`: captured bytes in, one line out, no radio. Bad input: one `E!` line on
//! stderr, nothing on stdout, exit code 2. A value left out as implausible, or a pack voltage
//! far from its cells, is a `W!` line each.

use crate::cli::DecodeCommand;
use crate::output;
use crate::protocol::jbd::{
    self, BasicInfo, CellVoltages, Frame, JbdReading, Reassembler, Register,
};
use crate::protocol::parse_hex;
use crate::protocol::powermon::PowermonReading;
use crate::reading::{Reading, Values, now_ns};

use super::{EXIT_OK, EXIT_USAGE, print_all};

/// The `device` tag of decoded lines.
const DECODED_DEVICE: &str = "decoded";

pub fn main(what: DecodeCommand) -> i32 {
    let values = match what {
        DecodeCommand::Jbd { hex } => decode_jbd(&hex).map(Values::Jbd),
        DecodeCommand::Powermon { hex } => decode_powermon(&hex).map(Values::Powermon),
    };
    match values {
        Ok(values) => {
            // Asked to decode these bytes: say what was left out, and why.
            for o in values.omitted() {
                log::warn!("{o} (not printed)");
            }
            if let Some(m) = values.pack_mismatch() {
                log::warn!("{m}");
            }
            let reading = Reading {
                device: DECODED_DEVICE.into(),
                address: String::new(),
                time_ns: now_ns(),
                values,
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

/// Feeds every argument, in order, to one reassembler, as the notifications would arrive.
pub fn decode_jbd(hex: &[String]) -> Result<JbdReading, String> {
    let mut r = Reassembler::new();
    let mut frames: Vec<Frame> = Vec::new();
    for h in hex {
        let bytes = parse_hex(h)?;
        for item in r.push(&bytes) {
            frames.push(item.map_err(|e| e.to_string())?);
        }
    }
    if r.pending() > 0 {
        return Err(format!(
            "incomplete frame at the end of the input ({} bytes left over): a notification is missing",
            r.pending()
        ));
    }
    let find = |reg: Register| frames.iter().rev().find(|f| f.register == reg.code());
    let info = find(Register::BasicInfo).ok_or("no 0x03 (basic info) reply in the input")?;
    let cells = find(Register::CellVoltages).ok_or("no 0x04 (cell voltages) reply in the input")?;
    // Clones without 0x05 answer status 0x80: that is not an error, just no model.
    let model = find(Register::DeviceName).and_then(|f| jbd::parse_device_name(f).ok());
    Ok(JbdReading {
        info: BasicInfo::parse(info).map_err(|e| e.to_string())?,
        cells: CellVoltages::parse(cells).map_err(|e| e.to_string())?,
        model,
    })
}

pub fn decode_powermon(hex: &str) -> Result<PowermonReading, String> {
    PowermonReading::parse(&parse_hex(hex)?).map_err(|e| e.to_string())
}

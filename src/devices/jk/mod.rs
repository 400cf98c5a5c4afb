//! JK BMS (JK02 protocol, 24S and 32S layouts): subscribe to `ffe1`, ask for device info and
//! cell info; the BMS streams cell info records by itself.
//!
//! The newer module has TWO `ffe1` characteristics (one write-only, one notify); the
//! session writes and subscribes `ffe1` as for the older one, and the BLE transport reaches
//! the twin btleplug cannot (`ble/twins.rs`).

pub mod demo;
pub mod fields;
pub mod protocol;
pub mod session;

use std::any::Any;

use protocol::{CellInfo, DeviceInfo, Reassembler, Record};

use super::{Advertised, Decoder, Example, Fields, Kind, Omitted, PollError, Values};
use crate::devices::protocol::parse_hex;

pub static KIND: Kind = Kind {
    name: "jk",
    title: "JK BMS",
    measurement: fields::MEASUREMENT,
    tags: &[fields::MODEL_TAG],
    schema: fields::schema,
    session: |spec| Box::new(session::JkSession::new(spec.timeout)),
    password: None,
    pairing: false,
    key: None,
    passive: false,
    looks_like,
    decode: Decoder {
        about: "Notifications or whole records of a JK BMS, in the order received: its device \
                info record (0x03, it names the layout) and a cell info record (0x02); prints \
                one jk_bms line",
        many: true,
        key: false,
        examples: &[Example {
            what: "a JK-B2A20S20P (software 10.08, 24S layout): device info and cell info records (patman15/aiobmsble tests)",
            key: None,
            hex: &[EXAMPLE_DEVICE_INFO_24S, EXAMPLE_CELL_INFO_24S],
        }],
        run: |input| decode(input.hex).map(|r| Box::new(r) as _),
    },
    demo: demo::devices,
    hint,
};

/// Advertised names of JK BMSes (lower case): `JK-B2A24S15P`, `JK_B2A8S20P`, `JK-BMS`.
const NAME_PREFIXES: [&str; 2] = ["jk-", "jk_"];

/// By its name, or by its manufacturer data (the name is the owner's to change). The `ffe0`
/// service alone is not enough: it is the generic one of HM-10 style serial modules.
fn looks_like(adv: &Advertised<'_>) -> bool {
    NAME_PREFIXES.iter().any(|p| adv.name.starts_with(p))
        || adv
            .manufacturers
            .iter()
            .any(|m| protocol::MANUFACTURER_IDS.contains(m))
}

const NO_STREAM: &str = ". Hint: a JK BMS streams its cell info once asked; one that stays silent often needs a reconnect (blebatt does that after 2 misses in a row). Is the phone app connected to it?";

fn hint(err: &PollError) -> Option<&'static str> {
    match err {
        PollError::NoReply { .. } => Some(NO_STREAM),
        _ => None,
    }
}

/// A JK reading: the cell info record decoded, and the model from the device info.
#[derive(Debug, Clone, PartialEq)]
pub struct JkReading {
    pub info: CellInfo,
    pub model: Option<String>,
}

/// Feeds every argument, in order, to one reassembler; the device info gives the layout.
pub fn decode(hex: &[String]) -> Result<JkReading, String> {
    let mut r = Reassembler::new();
    let mut records: Vec<Record> = Vec::new();
    for h in hex {
        let bytes = parse_hex(h)?;
        for item in r.push(&bytes) {
            records.push(item.map_err(|e| e.to_string())?);
        }
    }
    if r.pending() > 0 {
        return Err(format!(
            "incomplete record at the end of the input ({} of {} bytes): a notification is missing",
            r.pending(),
            protocol::RECORD_LEN
        ));
    }
    let find = |kind: u8| records.iter().rev().find(|f| f.kind() == kind);
    let device = find(protocol::RECORD_DEVICE_INFO).ok_or(
        "no device info record (type 0x03) in the input: it names the cell layout; give it first",
    )?;
    let device = DeviceInfo::parse(device).map_err(|e| e.to_string())?;
    let cells =
        find(protocol::RECORD_CELL_INFO).ok_or("no cell info record (type 0x02) in the input")?;
    Ok(JkReading {
        info: CellInfo::parse(cells, device.layout).map_err(|e| e.to_string())?,
        model: Some(device.model).filter(|m| !m.is_empty()),
    })
}

impl Values for JkReading {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn tags(&self, tag: &mut dyn FnMut(&'static str, &str)) {
        if let Some(model) = &self.model {
            tag(fields::MODEL_TAG, model);
        }
    }

    fn fields(&self, out: &mut dyn Fields) {
        fields::write(&self.info, out);
    }

    fn omitted(&self) -> &[Omitted] {
        &self.info.omitted
    }

    fn battery(&self) -> Option<crate::energy::Battery> {
        let i = &self.info;
        Some(crate::energy::Battery {
            voltage_v: i.voltage_v,
            current_a: i.current_a,
            remaining_ah: Some(i.remaining_capacity_ah),
            full_ah: Some(i.nominal_capacity_ah),
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// patman15/aiobmsble tests/bms/test_jikong_bms.py, JK02_24S: device info.
pub(crate) const EXAMPLE_DEVICE_INFO_24S: &str = "\
     55 aa eb 90 03 79 4a 4b 2d 42 32 41 32 30 53 32 30 50 00 00 \
     00 00 31 30 2e 58 47 00 00 00 31 30 2e 30 38 00 00 00 e4 e7 \
     6c 03 11 00 00 00 4a 4b 2d 42 4d 53 2d 41 00 00 00 00 00 00 \
     00 00 31 32 33 34 00 00 00 00 00 00 00 00 00 00 00 00 32 32 \
     30 37 30 31 00 00 32 30 33 32 38 31 36 30 31 32 00 30 30 30 \
     30 00 4d 61 72 69 6f 00 00 00 00 00 00 00 00 61 00 00 31 32 \
     33 34 35 36 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 93";

/// The same, cell info.
pub(crate) const EXAMPLE_CELL_INFO_24S: &str = "\
     55 aa eb 90 02 c8 ee 0c f2 0c f1 0c f0 0c f0 0c ec 0c f0 0c \
     ed 0c ed 0c ed 0c ed 0c f0 0c f1 0c ed 0c ee 0c ed 0c 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 ff ff 00 00 ef 0c \
     05 00 01 09 36 00 37 00 39 00 38 00 37 00 37 00 35 00 41 00 \
     42 00 36 00 37 00 3a 00 38 00 34 00 36 00 37 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 eb ce \
     00 00 c7 0d 02 00 19 09 00 00 b5 00 ba 00 e4 00 00 00 02 00 \
     00 38 5d ba 01 00 10 15 03 00 3c 00 00 00 a4 65 b9 00 64 00 \
     d9 02 8b e8 6c 03 01 01 b3 06 00 00 00 00 00 00 00 00 00 00 \
     00 00 07 00 01 00 00 00 23 04 0b 00 00 00 9f 19 40 40 00 00 \
     00 00 e2 04 00 00 00 00 00 01 00 03 00 00 83 d5 37 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 bd";

#[cfg(test)]
mod tests {
    use super::*;

    fn looks(name: &str, services: &[uuid::Uuid], manufacturers: &[u16]) -> bool {
        looks_like(&Advertised {
            name,
            services,
            manufacturers,
        })
    }

    #[test]
    fn a_jk_is_recognised_by_its_name_or_its_manufacturer_data_not_by_ffe0_alone() {
        let ffe0 = [protocol::SERVICE_UUID];
        assert!(looks("jk-b2a24s15p", &[], &[]));
        assert!(looks("jk_b2a8s20p", &ffe0, &[]));
        // Renamed by its owner: its manufacturer data still says JK.
        assert!(looks("12v420a", &ffe0, &[0x0B65]));
        assert!(looks("", &[], &[0x4B4A]));
        // An HM-10 style module has the same service.
        assert!(!looks("hmsoft", &ffe0, &[]));
        assert!(!looks("", &ffe0, &[0x02E1]));
    }
}

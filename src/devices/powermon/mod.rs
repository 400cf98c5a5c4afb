//! Thornwave PowerMon battery monitors: one GATT read of a record per poll.

pub mod demo;
pub mod fields;
pub mod protocol;
pub mod session;

use std::any::Any;

use protocol::PowermonReading;

use super::{Advertised, Decoder, Fields, Kind, Omitted, PollError, Values};
use crate::devices::protocol::parse_hex;

pub static KIND: Kind = Kind {
    name: "powermon",
    title: "Thornwave PowerMon",
    measurement: fields::MEASUREMENT,
    tags: &[],
    schema: fields::schema,
    session: || Box::new(session::PowermonSession::default()),
    looks_like,
    decode: Decoder {
        about: "One PowerMon record (52 bytes, or 54 COBS-framed); prints one powermon line",
        many: false,
        run: |hex| decode(hex).map(|r| Box::new(r) as _),
    },
    demo: demo::devices,
    hint,
};

fn looks_like(adv: &Advertised<'_>) -> bool {
    adv.services.contains(&protocol::NEW_SERVICE_UUID)
        || adv.services.contains(&protocol::OLD_SERVICE_UUID)
        || adv.name.contains("powermon")
}

/// Nothing a PowerMon makes likely beyond the generic hints.
fn hint(_: &PollError) -> Option<&'static str> {
    None
}

/// One record, as one hex argument.
pub fn decode(hex: &[String]) -> Result<PowermonReading, String> {
    let [hex] = hex else {
        return Err("give exactly one PowerMon record".into());
    };
    PowermonReading::parse(&parse_hex(hex)?).map_err(|e| e.to_string())
}

impl Values for PowermonReading {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn tags(&self, _: &mut dyn FnMut(&'static str, &str)) {}

    fn fields(&self, out: &mut dyn Fields) {
        fields::write(self, out);
    }

    fn omitted(&self) -> &[Omitted] {
        &self.omitted
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

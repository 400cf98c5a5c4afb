//! Thornwave PowerMon battery monitors: one GATT read of a record per poll.

pub mod demo;
pub mod fields;
pub mod protocol;
pub mod session;

use std::any::Any;

use protocol::PowermonReading;

use super::{Advertised, Decoder, Example, Fields, Kind, Omitted, PollError, Values};
use crate::devices::protocol::parse_hex;

pub static KIND: Kind = Kind {
    name: "powermon",
    title: "Thornwave PowerMon",
    measurement: fields::MEASUREMENT,
    tags: &[],
    schema: fields::schema,
    session: |_| Box::new(session::PowermonSession::default()),
    password: None,
    pairing: false,
    key: None,
    passive: false,
    looks_like,
    decode: Decoder {
        about: "One PowerMon record (52 bytes, or 54 COBS-framed); prints one powermon line",
        many: false,
        key: false,
        examples: &[
            Example {
                what: "firmware 2.03 or older, a raw 52-byte record (mkjanke/ThornwavePy DCPMRead.py history)",
                key: None,
                hex: &[
                    "e0 ff 0f c8 47 04 4e 41 b7 09 dd 3c 97 ca 4e 3f 7a 6a 26 41 7c 01 0e 42 6c 7b 0f 00 00 00 00 00 6d 2e 01 00 00 00 00 00 ff 89 06 00 14 c1 e4 15 59 57 0b 42",
                ],
            },
            Example {
                what: "firmware 2.31, a COBS-framed 54-byte value (mkjanke/ThornwavePy)",
                key: None,
                hex: &[
                    "00 08 31 02 23 bb 78 ad 63 01 01 01 25 40 6b 57 41 17 52 57 41 73 12 d8 be 04 d2 b5 c0 8f fe ff ff ff ff ff ff a5 ec ff ff ff ff ff ff 87 dd 95 40 01 01 01 01 00",
                ],
            },
        ],
        run: |input| decode(input.hex).map(|r| Box::new(r) as _),
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

    /// A shunt measures its branch: the counters integrate what flows through it. It reports
    /// no capacity, so no time estimates (its newer firmware reports its own `runtime`).
    fn battery(&self) -> Option<crate::energy::Battery> {
        Some(crate::energy::Battery {
            voltage_v: self.voltage1_v,
            current_a: self.current_a,
            remaining_ah: None,
            full_ah: None,
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn looks(name: &str, services: &[Uuid]) -> bool {
        looks_like(&Advertised {
            name,
            services,
            manufacturers: &[],
        })
    }

    #[test]
    fn a_powermon_is_recognised_by_either_service_or_by_its_name_alone() {
        assert!(looks("", &[protocol::NEW_SERVICE_UUID]));
        assert!(looks("", &[protocol::OLD_SERVICE_UUID]));
        assert!(looks("thornwave powermon-5", &[]));
        assert!(!looks("", &[]));
        assert!(!looks("xiaoxiang", &[Uuid::nil()]));
    }
}

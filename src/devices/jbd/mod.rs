//! JBD / Overkill Solar / Xiaoxiang BMS: a notify + write conversation, register by register.

pub mod auth;
pub mod demo;
pub mod fields;
pub mod protocol;
pub mod session;

use std::any::Any;

use protocol::{BasicInfo, CellVoltages, Frame, JbdReading, Reassembler, Register};

use super::{Advertised, Caution, Decoder, Example, Fields, Kind, Omitted, PollError, Values};
use crate::devices::protocol::parse_hex;
use crate::transport::{Cause, LinkError};

pub static KIND: Kind = Kind {
    name: "jbd",
    title: "JBD BMS",
    measurement: fields::MEASUREMENT,
    tags: &[fields::MODEL_TAG],
    schema: fields::schema,
    session: |spec| Box::new(session::JbdSession::for_device(spec)),
    password: Some(|text| auth::Password::parse(text).map(drop)),
    pairing: true,
    key: None,
    passive: false,
    looks_like,
    decode: Decoder {
        about: "Notifications or whole frames of a JBD BMS (0x03, 0x04, optionally 0x05), in the \
                order received; prints one jbd_bms line",
        many: true,
        key: false,
        examples: &[Example {
            what: "a 4S pack's 0x03 and 0x04 replies as 20-byte notifications (patman15/BMS_BLE-HA tests)",
            key: None,
            hex: &[
                "dd 03 00 1d 06 18 fe e1 01 f2 01 f4 00 2a 2c 7c 00 00 00 00",
                "00 00 80 64 03 04 03 0b 8b 0b 8a 0b 84 f8 84 77",
                "dd 04 00 08 0d 66 0d 61 0d 68 0d 59 fe 3c 77",
            ],
        }],
        run: |input| decode(input.hex).map(|r| Box::new(r) as _),
    },
    demo: demo::devices,
    hint,
};

/// Advertised names of JBD dongles seen in the field (lower case).
const NAME_PREFIXES: [&str; 4] = ["xiaoxiang", "jbd", "sp0", "sp1"];

fn looks_like(adv: &Advertised<'_>) -> bool {
    adv.services.contains(&protocol::SERVICE_UUID)
        || adv.services.contains(&protocol::ALT_SERVICE_UUID)
        || NAME_PREFIXES.iter().any(|p| adv.name.starts_with(p))
}

/// A JBD BMS accepts one connection: a phone app holding it looks like a device that will not
/// connect.
const PHONE_APP: &str =
    ". Hint: is the phone app connected to this BMS? A JBD BMS accepts one connection";
const NO_REPLY: &str = ". Hint: a JBD BMS that stops answering often needs a reconnect (blebatt does that after 2 misses in a row); one that never answers may want its Bluetooth password: set password = \"...\" on it in the config file";
const WRONG_PASSWORD: &str = ". Fix: set password in its [[device]] to the BMS's Bluetooth password (the one the JBD/Xiaoxiang app asks for, often 123456)";
const PAIRING: &str = ". Fix: pair it once with `blebatt pair` and its address (the passkey is its Bluetooth password, often 123456), or set passkey = 123456 (its password) in its [[device]] so that blebatt pairs by itself";

fn hint(err: &PollError) -> Option<&'static str> {
    match err {
        PollError::Link(e) if e.cause() == Some(Cause::ConnectAborted) => Some(PHONE_APP),
        PollError::Link(LinkError::Timeout {
            what: "connect", ..
        }) => Some(PHONE_APP),
        PollError::NoReply { .. } => Some(NO_REPLY),
        PollError::PairingRequired => Some(PAIRING),
        PollError::Decode(e) => match e.get::<auth::AuthError>() {
            Some(auth::AuthError::WrongPassword) => Some(WRONG_PASSWORD),
            _ => None,
        },
        _ => None,
    }
}

/// Feeds every argument, in order, to one reassembler, as the notifications would arrive.
pub fn decode(hex: &[String]) -> Result<JbdReading, String> {
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
    let model = find(Register::DeviceName).and_then(|f| protocol::parse_device_name(f).ok());
    Ok(JbdReading {
        info: BasicInfo::parse(info).map_err(|e| e.to_string())?,
        cells: CellVoltages::parse(cells).map_err(|e| e.to_string())?,
        model,
    })
}

impl Values for JbdReading {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn tags(&self, tag: &mut dyn FnMut(&'static str, &str)) {
        if let Some(model) = &self.model {
            tag(fields::MODEL_TAG, model);
        }
    }

    fn fields(&self, out: &mut dyn Fields) {
        fields::write(self, out);
    }

    fn omitted(&self) -> &[Omitted] {
        JbdReading::omitted(self)
    }

    fn caution(&self) -> Option<Caution> {
        self.pack_mismatch().map(|m| Caution {
            message: m.to_string(),
            hint: "check the cell count and the voltage calibration in the BMS's app",
        })
    }

    fn battery(&self) -> Option<crate::energy::Battery> {
        let i = &self.info;
        Some(crate::energy::Battery {
            voltage_v: i.voltage_v,
            current_a: i.current_a,
            remaining_ah: Some(i.remaining_capacity_ah),
            // V11 firmware's learned full capacity, else the nominal one.
            full_ah: Some(
                i.v11
                    .full_charge_capacity_ah
                    .unwrap_or(i.nominal_capacity_ah),
            ),
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
    fn a_refused_password_and_an_echo_have_jbd_words_for_their_fix() {
        let wrong = PollError::decode(auth::AuthError::WrongPassword);
        assert!(hint(&wrong).is_some_and(|h| h.contains("set password in its [[device]]")));
        let refused = PollError::decode(auth::AuthError::AppKeyRefused(1));
        assert_eq!(hint(&refused), None);
        assert_eq!(hint(&PollError::decode(protocol::JbdError::NoFrame)), None);
        assert!(hint(&PollError::PairingRequired).is_some_and(|h| h.contains("often 123456")));
        assert!(
            hint(&PollError::NoReply {
                request: "register 0x03",
                after: std::time::Duration::from_secs(5)
            })
            .is_some_and(|h| h.contains("Bluetooth password"))
        );
    }

    #[test]
    fn a_jbd_is_recognised_by_either_service_or_by_a_dongle_name_alone() {
        assert!(looks("", &[protocol::SERVICE_UUID]));
        assert!(looks("", &[protocol::ALT_SERVICE_UUID]));
        for name in ["xiaoxiang bms", "jbd-sp04s034", "sp04s034", "sp15s001"] {
            assert!(looks(name, &[]), "{name}");
        }
        assert!(!looks("", &[]));
        assert!(!looks("powermon", &[Uuid::nil()]));
        assert!(!looks("my sp04", &[]), "a prefix, not anywhere in the name");
    }
}

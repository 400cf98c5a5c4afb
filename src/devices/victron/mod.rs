//! Victron instant readout (SmartShunt, BMV-71x, SmartSolar): passive. The device is never
//! connected; its encrypted advertisements (manufacturer data 0x02E1) are heard by a running
//! scan, and each poll decrypts and decodes the newest one heard since the last poll.

pub mod demo;
pub mod fields;
pub mod protocol;
pub mod session;

use std::any::Any;

use protocol::{Key, Record, VictronError};

use super::{Advertised, DecodeInput, Decoder, Example, Fields, Kind, PollError, Values};
use crate::devices::protocol::parse_hex;

pub static KIND: Kind = Kind {
    name: "victron",
    title: "Victron SmartShunt, BMV or SmartSolar (instant readout)",
    measurement: fields::MEASUREMENT,
    tags: &[fields::PRODUCT_ID_TAG, fields::PRODUCT_TAG],
    schema: fields::schema,
    session: |spec| {
        let key = spec.key.as_ref().and_then(|k| Key::parse(k.expose()).ok());
        Box::new(session::VictronSession::new(key))
    },
    password: None,
    pairing: false,
    key: Some(check_key),
    passive: true,
    looks_like,
    decode: Decoder {
        about: "The manufacturer data (company 0x02E1, the bytes after the company id) of one \
                Victron instant readout advertisement, with the device's key; prints one \
                victron line",
        many: false,
        key: true,
        examples: &[
            Example {
                what: "a SmartShunt 500A/50mV (keshavdv/victron-ble tests)",
                key: Some("aff4d0995b7d1e176c0c33ecb9e70dcd"),
                hex: &["10 02 89 a3 02 b0 40 af 92 5d 09 a4 d8 9a a0 12 8b de f4 8c 62 98 a9"],
            },
            Example {
                what: "a BlueSolar MPPT 75/15 (keshavdv/victron-ble tests)",
                key: Some("adeccb947395801a4dd45a2eaa44bf17"),
                hex: &["10 02 42 a0 01 62 07 ad ce b3 7b 60 5d 7e 0e e2 1b 24 df 5c"],
            },
        ],
        run: |input| decode(input).map(|r| Box::new(r) as _),
    },
    demo: demo::devices,
    hint,
};

fn check_key(text: &str) -> Result<(), String> {
    Key::parse(text).map(drop)
}

/// Advertised names of Victron products (lower case), besides the company id.
const NAME_PREFIXES: [&str; 4] = ["smartshunt", "bmv-", "smartsolar", "bluesolar"];

fn looks_like(adv: &Advertised<'_>) -> bool {
    adv.manufacturers.contains(&protocol::COMPANY_ID)
        || NAME_PREFIXES.iter().any(|p| adv.name.starts_with(p))
}

const WHERE_THE_KEY_IS: &str = ". Fix: set key in its [[device]] to the advertisement key VictronConnect shows (the device's Product info, Instant readout via Bluetooth enabled, Instant readout details, Show); it changes when the device's PIN changes";
const SILENT: &str = ". Hint: is it in range, and is instant readout on (VictronConnect: Product info, Instant readout via Bluetooth)? blebatt keeps listening";

fn hint(err: &PollError) -> Option<&'static str> {
    match err {
        PollError::Misconfigured(e) if e.get::<VictronError>().is_some() => Some(WHERE_THE_KEY_IS),
        PollError::Silent { .. } => Some(SILENT),
        _ => None,
    }
}

/// A Victron reading: the record decoded, and which product sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct VictronReading {
    pub product_id: u16,
    pub record_type: u8,
    pub record: Record,
    /// `product_id` as the tag shows it (`0xA389`).
    product_id_text: String,
}

impl VictronReading {
    /// Decrypts and decodes an advertisement's manufacturer data.
    pub fn decode(data: &[u8], key: &Key) -> Result<Self, VictronError> {
        let (adv, record) = protocol::decode(data, key)?;
        Ok(VictronReading {
            product_id: adv.product_id,
            record_type: adv.record_type,
            record,
            product_id_text: format!("0x{:04X}", adv.product_id),
        })
    }
}

/// `blebatt decode victron --key KEY HEX`.
pub fn decode(input: DecodeInput<'_>) -> Result<VictronReading, String> {
    let key = Key::parse(
        input
            .key
            .ok_or("--key is required: the advertisement is encrypted")?,
    )
    .map_err(|e| format!("--key: {e}"))?;
    let [hex] = input.hex else {
        return Err("one advertisement's manufacturer data, as hex".into());
    };
    let bytes = parse_hex(hex)?;
    VictronReading::decode(&bytes, &key).map_err(|e| match e {
        VictronError::WrongKey { .. } => format!("{e}: is --key this device's key?"),
        e => e.to_string(),
    })
}

impl Values for VictronReading {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn tags(&self, tag: &mut dyn FnMut(&'static str, &str)) {
        tag(fields::PRODUCT_ID_TAG, &self.product_id_text);
        tag(
            fields::PRODUCT_TAG,
            protocol::product_name(self.product_id, self.record_type),
        );
    }

    fn fields(&self, out: &mut dyn Fields) {
        fields::write(&self.record, out);
    }

    /// A battery monitor's and a DC meter's voltage and current feed the energy counters; a
    /// solar charger's do not (it is a source, not a battery).
    fn battery(&self) -> Option<crate::energy::Battery> {
        let (voltage, current) = match &self.record {
            Record::BatteryMonitor(m) => (m.voltage_v, m.current_a),
            Record::DcEnergyMeter(m) => (m.voltage_v, m.current_a),
            Record::SolarCharger(_) => return None,
        };
        Some(crate::energy::Battery {
            voltage_v: voltage?,
            current_a: current?,
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
    use super::*;

    fn looks(name: &str, manufacturers: &[u16]) -> bool {
        looks_like(&Advertised {
            name,
            services: &[],
            manufacturers,
        })
    }

    #[test]
    fn victron_products_are_recognised_by_company_id_or_name() {
        assert!(looks("", &[protocol::COMPANY_ID]));
        assert!(looks("smartshunt hq2136abcde", &[]));
        assert!(looks("bmv-712 smart", &[]));
        assert!(looks("smartsolar hq2033", &[0x004C]));
        assert!(!looks("xiaoxiang bms", &[0x004C]));
        assert!(!looks("", &[]));
    }

    #[test]
    fn a_wrong_key_says_where_the_right_one_is_and_silence_says_what_to_check() {
        let wrong = PollError::misconfigured(VictronError::WrongKey { sent: 0xAF });
        assert!(hint(&wrong).is_some_and(|h| h.contains("Instant readout details")));
        let silent = PollError::Silent {
            after: std::time::Duration::from_secs(30),
        };
        assert!(hint(&silent).is_some_and(|h| h.contains("in range")));
        assert_eq!(hint(&PollError::NothingNew), None);
        assert_eq!(hint(&PollError::decode(VictronError::TooShort(3))), None);
    }

    #[test]
    fn decode_needs_the_key_and_one_hex_argument() {
        let hex = [KIND.decode.examples[0].hex[0].to_string()];
        let key = KIND.decode.examples[0].key;
        let r = decode(DecodeInput { hex: &hex, key }).unwrap();
        assert_eq!((r.product_id, r.record_type), (0xA389, 2));
        let e = decode(DecodeInput {
            hex: &hex,
            key: None,
        })
        .unwrap_err();
        assert!(e.contains("--key is required"), "{e}");
        let other = KIND.decode.examples[1].key;
        let e = decode(DecodeInput {
            hex: &hex,
            key: other,
        })
        .unwrap_err();
        assert!(e.contains("is --key this device's key?"), "{e}");
        let e = decode(DecodeInput { hex: &[], key }).unwrap_err();
        assert!(e.contains("one advertisement"), "{e}");
    }

    #[test]
    fn a_monitor_feeds_the_energy_counters_and_a_charger_does_not() {
        let monitor = |hex: &str, key: &str| {
            VictronReading::decode(&parse_hex(hex).unwrap(), &Key::parse(key).unwrap()).unwrap()
        };
        let e = KIND.decode.examples;
        let shunt = monitor(e[0].hex[0], e[0].key.unwrap());
        let b = shunt.battery().unwrap();
        assert_eq!((b.voltage_v, b.current_a), (12.53, 0.0));
        let mppt = monitor(e[1].hex[0], e[1].key.unwrap());
        assert_eq!(mppt.battery(), None);
    }
}

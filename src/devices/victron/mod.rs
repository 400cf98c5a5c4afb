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

    /// The line blebatt prints for a reading of this advertisement.
    fn line_of(data: &[u8], key: &str) -> String {
        let values = VictronReading::decode(data, &Key::parse(key).unwrap()).unwrap();
        crate::output::line(&crate::reading::Reading {
            derived: None,
            device: "d".into(),
            address: "A".into(),
            time_ns: 1,
            values: std::sync::Arc::new(values),
        })
    }

    fn example_line(i: usize) -> String {
        let e = KIND.decode.examples[i];
        line_of(&parse_hex(e.hex[0]).unwrap(), e.key.unwrap())
    }

    const ALARMS_OFF: &str = "alarm=0i,alarm_low_voltage=false,alarm_high_voltage=false,\
        alarm_low_soc=false,alarm_low_starter_voltage=false,alarm_high_starter_voltage=false,\
        alarm_low_temperature=false,alarm_high_temperature=false,alarm_mid_voltage=false,\
        alarm_overload=false,alarm_dc_ripple=false,alarm_low_ac_out_voltage=false,\
        alarm_high_ac_out_voltage=false,alarm_short_circuit=false,alarm_bms_lockout=false";

    #[test]
    fn the_published_vectors_print_their_values_and_products() {
        assert_eq!(
            example_line(0),
            format!(
                "victron,device=d,address=A,product_id=0xA389,product=SmartShunt\\ 500A/50mV \
                 voltage=12.53,current=0,power=0,soc=50,consumed_capacity=50,{ALARMS_OFF} 1\n"
            )
        );
        assert_eq!(
            example_line(1),
            "victron,device=d,address=A,product_id=0xA042,product=BlueSolar\\ Charger\\ MPPT\\ 75/15 \
             voltage=13.88,current=1.4,power=19.432,charge_state=4i,charger_error=0i,pv_power=19,\
             yield_today=0.03,load_current=0 1\n"
        );
    }

    /// A record's bits, least significant first: (value, width) in order.
    fn bits(fields: &[(i64, usize)]) -> Vec<u8> {
        let (mut v, mut at) = (0u128, 0);
        for &(x, n) in fields {
            v |= ((x as u128) & ((1u128 << n) - 1)) << at;
            at += n;
        }
        v.to_le_bytes()[..at.div_ceil(8)].to_vec()
    }

    #[test]
    fn a_dc_meter_and_the_aux_modes_print_by_their_record() {
        let key = KIND.decode.examples[0].key.unwrap();
        let k = Key::parse(key).unwrap();
        // DC energy meter: mode -9, 24.00 V, alarm low voltage + overload, starter 12.34 V,
        // -2.500 A.
        let plain = bits(&[
            (-9, 16),
            (2400, 16),
            (0x0101, 16),
            (1234, 16),
            (0, 2),
            (-2500, 22),
        ]);
        let data = protocol::seal(0xA389, protocol::RECORD_DC_ENERGY_METER, 7, &k, &plain);
        let line = line_of(&data, key);
        assert!(
            line.contains(
                " voltage=24,current=-2.5,power=-60,starter_voltage=12.34,alarm=257i,\
                 alarm_low_voltage=true,alarm_high_voltage=false"
            ),
            "{line}"
        );
        assert!(line.contains("alarm_overload=true"), "{line}");
        assert!(line.contains(",monitor_mode=-9i 1\n"), "{line}");
        // Battery monitor (2 h to go) with the midpoint, then the temperature on the aux input.
        for (mode, raw, want) in [
            (1, 655, "midpoint_voltage=6.55"),
            (2, 29815, "temperature=25"),
        ] {
            let plain = bits(&[
                (120, 16),
                (1325, 16),
                (0, 16),
                (raw, 16),
                (mode, 2),
                (1500, 22),
                (12, 20),
                (995, 10),
            ]);
            let data = protocol::seal(0xA389, protocol::RECORD_BATTERY_MONITOR, 8, &k, &plain);
            let line = line_of(&data, key);
            assert!(
                line.contains(&format!(
                    " voltage=13.25,current=1.5,power=19.875,soc=99.5,consumed_capacity=1.2,\
                     time_to_go=7200i,{want},alarm=0i"
                )),
                "{line}"
            );
        }
    }

    #[test]
    fn a_key_is_checked_for_32_hex_digits_and_never_echoed() {
        let check = KIND.key.expect("victron devices need a key");
        assert_eq!(check("aff4d0995b7d1e176c0c33ecb9e70dcd"), Ok(()));
        for bad in [
            "aff4",
            "zzf4d0995b7d1e176c0c33ecb9e70dcd",
            "aff4d0995b7d1e176c0c33ecb9e70dcd00",
        ] {
            let e = check(bad).unwrap_err();
            assert!(e.contains("32 hex digits"), "{e}");
            assert!(!e.contains(bad), "the value is never echoed: {e}");
        }
    }

    #[test]
    fn a_misconfiguration_of_another_kind_gets_no_victron_hint() {
        let other = PollError::misconfigured(crate::devices::jbd::auth::AuthError::WrongPassword);
        assert_eq!(hint(&other), None);
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

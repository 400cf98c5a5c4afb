//! The published vectors of keshavdv/victron-ble's tests (shared/notes/next-wave.md 4.2).

use proptest::prelude::*;

use super::*;
use crate::devices::protocol::parse_hex;

const SHUNT_KEY: &str = "aff4d0995b7d1e176c0c33ecb9e70dcd";
const SHUNT_ADV: &str = "10 02 89 a3 02 b0 40 af 92 5d 09 a4 d8 9a a0 12 8b de f4 8c 62 98 a9";
const SHUNT_PLAIN: &str = "ff ff e5 04 00 00 00 00 03 00 00 f4 01 40 df";
const MPPT_KEY: &str = "adeccb947395801a4dd45a2eaa44bf17";
const MPPT_ADV: &str = "10 02 42 a0 01 62 07 ad ce b3 7b 60 5d 7e 0e e2 1b 24 df 5c";
const MPPT_PLAIN: &str = "04 00 6c 05 0e 00 03 00 13 00 00 fe";

fn hex(s: &str) -> Vec<u8> {
    parse_hex(s).unwrap()
}

fn key(s: &str) -> Key {
    Key::parse(s).unwrap()
}

#[test]
fn a_smartshunt_advertisement_decrypts_and_decodes_to_the_published_values() {
    let adv = decrypt(&hex(SHUNT_ADV), &key(SHUNT_KEY)).unwrap();
    assert_eq!(
        (adv.product_id, adv.record_type, adv.nonce),
        (0xA389, RECORD_BATTERY_MONITOR, 0x40B0)
    );
    assert_eq!(adv.plaintext, hex(SHUNT_PLAIN));
    let (_, Record::BatteryMonitor(m)) = decode(&hex(SHUNT_ADV), &key(SHUNT_KEY)).unwrap() else {
        panic!("a battery monitor")
    };
    assert_eq!(m.time_to_go_s, None, "0xFFFF: not available");
    assert_eq!(m.voltage_v, Some(12.53));
    assert_eq!(m.alarm, 0);
    assert_eq!(m.aux, Aux::None);
    assert_eq!(m.current_a, Some(0.0));
    assert_eq!(m.consumed_ah, Some(50.0));
    assert_eq!(m.soc_percent, Some(50.0));
}

#[test]
fn a_solar_charger_advertisement_decodes_to_the_published_values() {
    let (adv, Record::SolarCharger(s)) = decode(&hex(MPPT_ADV), &key(MPPT_KEY)).unwrap() else {
        panic!("a solar charger")
    };
    assert_eq!(adv.plaintext, hex(MPPT_PLAIN));
    assert_eq!(adv.product_id, 0xA042);
    assert_eq!((s.charge_state, s.error), (4, 0));
    assert_eq!(s.voltage_v, Some(13.88));
    assert_eq!(s.current_a, Some(1.4));
    assert_eq!(s.yield_today_kwh, Some(0.03));
    assert_eq!(s.pv_power_w, Some(19));
    assert_eq!(s.load_current_a, Some(0.0));
}

#[test]
fn aux_inputs_decode_by_their_mode() {
    // victron-ble's decrypted-only vectors.
    let m = BatteryMonitor::parse(&hex("ffffe6040000feff010000000080fe0c"));
    assert_eq!(m.aux, Aux::MidpointVoltage(655.34));
    let m = BatteryMonitor::parse(&hex("ffffe6040000feff000000000080feac"));
    assert_eq!(m.aux, Aux::StarterVoltage(-0.02));
    // victron-ble reads aux 0xFFFF in temperature mode as 655.35 K (382.2 degC); here all
    // bits set is "not available", as for every other unsigned field.
    let m = BatteryMonitor::parse(&hex("ffffe6040000ffff020000000080fede"));
    assert_eq!(m.aux, Aux::None);
    // 300.00 K (raw 30000 = 0x7530).
    let m = BatteryMonitor::parse(&hex("ffffe60400003075020000000080fede"));
    let Aux::Temperature(t) = m.aux else {
        panic!("{:?}", m.aux)
    };
    assert!((t - 26.85).abs() < 1e-9, "{t}");
}

#[test]
fn not_available_is_tested_on_the_raw_bits_before_sign_extension() {
    // Current 0x3FFFFF (22 bits) is "not available", not -1 mA; voltage 0x7FFF likewise.
    let mut plain = hex(SHUNT_PLAIN);
    plain[2..4].copy_from_slice(&0x7FFFu16.to_le_bytes());
    // Bits 66..88 hold the current: set all 22.
    for bit in 66..88 {
        plain[bit / 8] |= 1 << (bit % 8);
    }
    let m = BatteryMonitor::parse(&plain);
    assert_eq!((m.voltage_v, m.current_a), (None, None));
    // -1 mA is a value: 0x3FFFFE is -2 mA.
    for bit in 66..88 {
        plain[bit / 8] |= 1 << (bit % 8);
    }
    plain[66 / 8] &= !(1 << (66 % 8));
    assert_eq!(BatteryMonitor::parse(&plain).current_a, Some(-0.002));
}

#[test]
fn a_wrong_key_other_data_and_short_data_are_refused() {
    let mut other = hex(SHUNT_ADV);
    other[7] = 0xBB;
    assert_eq!(
        decrypt(&other, &key(SHUNT_KEY)),
        Err(VictronError::WrongKey { sent: 0xBB })
    );
    assert_eq!(
        decrypt(&hex(SHUNT_ADV), &key(MPPT_KEY)),
        Err(VictronError::WrongKey { sent: 0xAF })
    );
    assert_eq!(
        decrypt(&hex("11 02 89"), &key(SHUNT_KEY)),
        Err(VictronError::NotInstantReadout)
    );
    assert_eq!(
        decrypt(&[], &key(SHUNT_KEY)),
        Err(VictronError::NotInstantReadout)
    );
    assert_eq!(
        decrypt(&hex("10 02 89 a3 02 b0 40 af"), &key(SHUNT_KEY)),
        Err(VictronError::TooShort(8))
    );
    let mut unknown = hex(SHUNT_ADV);
    unknown[4] = 0x05;
    assert_eq!(
        decode(&unknown, &key(SHUNT_KEY)).map(|_| ()),
        Err(VictronError::UnknownRecord(0x05))
    );
}

#[test]
fn keys_are_32_hex_digits_and_never_shown() {
    assert!(Key::parse(SHUNT_KEY).is_ok());
    assert!(Key::parse(&SHUNT_KEY.to_uppercase()).is_ok());
    for bad in [
        "",
        "aff4",
        &SHUNT_KEY[..31],
        &format!("{SHUNT_KEY}00"),
        "zz",
    ] {
        let e = Key::parse(bad).unwrap_err();
        assert!(
            e.contains("32 hex digits") && !e.contains(SHUNT_KEY),
            "{bad}: {e}"
        );
    }
    assert_eq!(format!("{:?}", key(SHUNT_KEY)), "Key(<redacted>)");
}

proptest! {
    #![proptest_config(crate::devices::protocol::proptest_config())]

    #[test]
    fn fuzz_any_manufacturer_data_decodes_or_is_refused(
        data in prop::collection::vec(any::<u8>(), 0..40), first in any::<bool>(),
    ) {
        let k = key(SHUNT_KEY);
        let mut data = data;
        if first && data.len() > 7 {
            data[0] = PRODUCT_ADVERTISEMENT;
            data[7] = 0xAF;
        }
        if let Ok((adv, record)) = decode(&data, &k) {
            prop_assert!(adv.plaintext.len() <= MAX_CIPHERTEXT);
            if let Record::BatteryMonitor(m) = record {
                prop_assert!(m.soc_percent.is_none_or(|s| (0.0..=102.3).contains(&s)));
            }
        }
    }
}

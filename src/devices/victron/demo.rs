//! The simulated SmartShunt and SmartSolar of `--demo`: each advertises its record (battery
//! monitor, solar charger), encrypted with its key, with a new nonce whenever its values
//! change, as the real ones do.

use uuid::Uuid;

use super::protocol::{self as victron, Key};
use crate::demo::{DemoDevice, Peripheral, wave};
use crate::transport::{CharInfo, Notification};

/// What a simulated Victron device advertises: its record, encrypted with its key.
pub trait Readout: Send + 'static {
    /// Its product id.
    const PRODUCT: u16;
    /// Its record type.
    const RECORD: u8;
    fn key(&self) -> &'static str;
    /// The record's plaintext at time `t`.
    fn plaintext(&self, t: f64) -> Vec<u8>;
}

/// A simulated Victron device: never connected (no GATT), it only advertises its readout,
/// with a new nonce every second, as its values change.
pub struct Advertiser<R>(pub R);

impl<R: Readout> Peripheral for Advertiser<R> {
    fn characteristics(&self) -> Vec<CharInfo> {
        Vec::new()
    }

    fn write(&mut self, _: Uuid, _: &[u8], _: f64) -> Vec<Notification> {
        Vec::new()
    }

    fn read(&mut self, _: Uuid, _: f64) -> Option<Vec<u8>> {
        None
    }

    fn advertisement(&mut self, t: f64) -> Option<(u16, Vec<u8>)> {
        let key = Key::parse(self.0.key()).expect("the demo key is valid");
        let nonce = (t as u64 % 65_536) as u16;
        let data = victron::seal(R::PRODUCT, R::RECORD, nonce, &key, &self.0.plaintext(t));
        Some((victron::COMPANY_ID, data))
    }
}

/// The demo shunt's advertisement key (configured on its spec, as a user would).
pub const DEMO_KEY: &str = "0df4d0995b7d1e176c0c33ecb9e70d42";
/// SmartShunt 500A/50mV.
const DEMO_PRODUCT: u16 = 0xA389;

/// The factor on the demo shunt's typical (discharge) current at time `t`: 0.5 to 1.5.
fn load(t: f64) -> f64 {
    1.0 + 0.4 * wave(t, 1800.0, 2.0) + 0.1 * wave(t, 300.0, 0.0)
}

/// A simulated SmartShunt on a 12 V bank.
#[derive(Debug, Clone)]
pub struct ShuntSim {
    pub key: &'static str,
    pub voltage_v: f64,
    /// Typical current, A (negative = discharging).
    pub current_a: f64,
    pub capacity_ah: f64,
}

/// Writes little-endian bit fields, least significant bit first (the records' order).
#[derive(Debug, Default)]
struct BitWriter {
    bytes: Vec<u8>,
    at: usize,
}

impl BitWriter {
    fn put(&mut self, value: u32, n: usize) {
        for i in 0..n {
            if self.at / 8 == self.bytes.len() {
                self.bytes.push(0);
            }
            let bit = ((value >> i) & 1) as u8;
            self.bytes[self.at / 8] |= bit << (self.at % 8);
            self.at += 1;
        }
    }

    /// `value` in `n` bits two's complement.
    fn put_signed(&mut self, value: i32, n: usize) {
        self.put(value as u32 & ((1u64 << n) - 1) as u32, n);
    }
}

impl Readout for ShuntSim {
    const PRODUCT: u16 = DEMO_PRODUCT;
    const RECORD: u8 = victron::RECORD_BATTERY_MONITOR;

    fn key(&self) -> &'static str {
        self.key
    }

    /// The battery monitor record.
    fn plaintext(&self, t: f64) -> Vec<u8> {
        // A house bank in the evening: always discharging, the load coming and going, so
        // the monitor always has a time to go to show.
        let current = self.current_a * load(t);
        let voltage = self.voltage_v + 0.03 * current / self.current_a.abs();
        // (Charging would have no time to go: Victron sends "not available" then.)
        let soc = 70.0 + 20.0 * wave(t, 3600.0, 2.0);
        let consumed = self.capacity_ah * (100.0 - soc) / 100.0;
        let mut w = BitWriter::default();
        // Time to go: only while discharging (else not available).
        let ttg_min = if current < 0.0 {
            (self.capacity_ah * soc / 100.0 / -current * 60.0).min(65_534.0) as u32
        } else {
            0xFFFF
        };
        w.put(ttg_min, 16);
        w.put_signed((voltage * 100.0).round() as i32, 16);
        w.put(0, 16); // no alarm
        w.put((291.15 * 100.0 + 150.0 * wave(t, 1200.0, 0.0)) as u32, 16); // ~18 degC, in 0.01 K
        w.put(2, 2); // aux: temperature
        w.put_signed((current * 1000.0).round() as i32, 22);
        w.put((consumed * 10.0).round() as u32, 20);
        w.put((soc * 10.0).round() as u32, 10);
        w.bytes
    }
}

/// The demo solar charger's advertisement key.
pub const DEMO_SOLAR_KEY: &str = "adeccb947395801a4dd45a2eaa44bf42";
/// SmartSolar Charger MPPT 75/15.
const DEMO_SOLAR_PRODUCT: u16 = 0xA053;

/// A simulated SmartSolar MPPT charging the same 12 V bank.
#[derive(Debug, Clone)]
pub struct SolarSim {
    pub key: &'static str,
    /// Panel power at the top of the (fast) demo day, W.
    pub peak_w: f64,
}

/// Victron's charge states the demo goes through.
const BULK: u32 = 3;
const ABSORPTION: u32 = 4;
const FLOAT: u32 = 5;

impl Readout for SolarSim {
    const PRODUCT: u16 = DEMO_SOLAR_PRODUCT;
    const RECORD: u8 = victron::RECORD_SOLAR_CHARGER;

    fn key(&self) -> &'static str {
        self.key
    }

    /// The solar charger record: a 40-minute "day" of sun.
    fn plaintext(&self, t: f64) -> Vec<u8> {
        let sun = (0.55 + 0.45 * wave(t, 2400.0, 0.0)).max(0.0);
        let pv_w = self.peak_w * sun;
        let voltage = 13.3 + 0.9 * sun;
        let current = pv_w * 0.95 / voltage;
        let state = match sun {
            s if s > 0.8 => ABSORPTION,
            s if s > 0.3 => BULK,
            _ => FLOAT,
        };
        // Today's yield grows through the hour and starts again.
        let yield_kwh = (t % 3600.0) / 3600.0 * self.peak_w * 0.6 / 1000.0;
        let mut w = BitWriter::default();
        w.put(state, 8);
        w.put(0, 8); // no error
        w.put_signed((voltage * 100.0).round() as i32, 16);
        w.put_signed((current * 10.0).round() as i32, 16);
        w.put((yield_kwh * 100.0).round() as u32, 16);
        w.put(pv_w.round() as u32, 16);
        w.put(0x1FF, 9); // no load output: not available
        w.bytes
    }
}

/// The demo's SmartShunt and SmartSolar.
pub fn devices() -> Vec<DemoDevice> {
    vec![
        DemoDevice {
            name: "demo-smartshunt",
            address: "DE:AD:BE:EF:00:05",
            password: None,
            key: Some(DEMO_KEY),
            peripheral: Box::new(Advertiser(ShuntSim {
                key: DEMO_KEY,
                voltage_v: 13.25,
                current_a: -4.2,
                capacity_ah: 200.0,
            })),
        },
        DemoDevice {
            name: "demo-mppt",
            address: "DE:AD:BE:EF:00:06",
            password: None,
            key: Some(DEMO_SOLAR_KEY),
            peripheral: Box::new(Advertiser(SolarSim {
                key: DEMO_SOLAR_KEY,
                peak_w: 220.0,
            })),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::victron::protocol::{Aux, Record, decode};

    #[test]
    fn the_demo_shunt_advertises_a_battery_monitor_record_that_decodes() {
        let mut sim = Advertiser(ShuntSim {
            key: DEMO_KEY,
            voltage_v: 13.25,
            current_a: -4.2,
            capacity_ah: 200.0,
        });
        for t in [0.0, 450.0, 1234.5, 1_800_000_000.0] {
            let (company, data) = sim.advertisement(t).unwrap();
            assert_eq!(company, victron::COMPANY_ID);
            let (adv, Record::BatteryMonitor(m)) =
                decode(&data, &Key::parse(DEMO_KEY).unwrap()).unwrap()
            else {
                panic!("a battery monitor record")
            };
            assert_eq!(adv.product_id, DEMO_PRODUCT);
            let current = -4.2 * load(t);
            assert_eq!(m.current_a, Some((current * 1000.0).round() / 1000.0));
            assert!((-6.3..=-2.1).contains(&current));
            assert!((13.0..13.5).contains(&m.voltage_v.unwrap()));
            assert!((50.0..=90.0).contains(&m.soc_percent.unwrap()));
            assert!(m.time_to_go_s.is_some(), "discharging: a time to go");
            assert!(matches!(m.aux, Aux::Temperature(c) if (16.0..20.0).contains(&c)));
        }
    }

    #[test]
    fn the_demo_solar_charger_advertises_a_solar_record_that_decodes() {
        let mut sim = Advertiser(SolarSim {
            key: DEMO_SOLAR_KEY,
            peak_w: 220.0,
        });
        let mut states = std::collections::BTreeSet::new();
        for t in (0..2400).step_by(60).map(f64::from) {
            let (_, data) = sim.advertisement(t).unwrap();
            let (adv, Record::SolarCharger(c)) =
                decode(&data, &Key::parse(DEMO_SOLAR_KEY).unwrap()).unwrap()
            else {
                panic!("a solar charger record")
            };
            assert_eq!(adv.product_id, DEMO_SOLAR_PRODUCT);
            assert_eq!(c.error, 0);
            assert!((0..=220).contains(&c.pv_power_w.unwrap()));
            assert!((13.3..=14.2).contains(&c.voltage_v.unwrap()));
            assert!(c.yield_today_kwh.unwrap() >= 0.0);
            assert_eq!(c.load_current_a, None, "no load output");
            states.insert(c.charge_state);
        }
        assert_eq!(
            states.len(),
            3,
            "bulk, absorption and float in a demo day: {states:?}"
        );
    }

    #[test]
    fn negative_values_are_written_in_twos_complement() {
        let mut w = BitWriter::default();
        w.put_signed(-2, 22);
        w.put(0b101, 3);
        assert_eq!(w.bytes, [0xFE, 0xFF, 0x7F, 0x01]);
    }
}

//! Victron "instant readout" advertisements (SmartShunt, BMV-71x, SmartSolar ...): the
//! manufacturer data of company 0x02E1, decrypted with the device's advertisement key and
//! decoded. Pure: no I/O, no async, no logging.
//!
//! Facts from Victron's "Extra manufacturer data" (2022-12-14), keshavdv/victron-ble and
//! Fabian-Schmidt/esphome-victron_ble, summarised with test vectors in
//! `shared/notes/next-wave.md` section 4.2.

use aes::Aes128;
use ctr::Ctr128LE;
use ctr::cipher::{KeyIvInit, StreamCipher};

/// Victron Energy's Bluetooth company identifier (the manufacturer data's key).
pub const COMPANY_ID: u16 = 0x02E1;
/// Byte 0 of a product advertisement (others are not instant readout).
pub const PRODUCT_ADVERTISEMENT: u8 = 0x10;
/// Header: kind, length, product id (2), record type, nonce (2), key check.
const HEADER_LEN: usize = 8;
const OFF_PRODUCT_ID: usize = 2;
const OFF_RECORD_TYPE: usize = 4;
const OFF_NONCE: usize = 5;
const OFF_KEY_CHECK: usize = 7;
/// One AES block: the longest ciphertext an advertisement carries.
const MAX_CIPHERTEXT: usize = 16;

/// Record types decoded here.
pub const RECORD_SOLAR_CHARGER: u8 = 0x01;
pub const RECORD_BATTERY_MONITOR: u8 = 0x02;
pub const RECORD_DC_ENERGY_METER: u8 = 0x0D;

/// The 16-byte advertisement key VictronConnect shows. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; 16]);

impl Key {
    /// 32 hex digits, as VictronConnect shows them.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bytes = hex::decode(text.trim())
            .ok()
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .ok_or_else(|| {
                "a Victron advertisement key is 32 hex digits (VictronConnect: the device's Product info, Instant readout details, Show)".to_string()
            })?;
        Ok(Key(bytes))
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VictronError {
    #[error("not a Victron product advertisement")]
    NotInstantReadout,
    #[error("advertisement too short ({0} bytes)")]
    TooShort(usize),
    /// The key's first byte is sent in clear: a mismatch means a wrong or changed key.
    #[error("the advertisement key does not match this device's (its first byte is 0x{sent:02X})")]
    WrongKey { sent: u8 },
    #[error("record type 0x{0:02X} is not decoded")]
    UnknownRecord(u8),
    #[error("no advertisement key configured")]
    NoKey,
}

/// An advertisement's clear header and decrypted payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertisement {
    pub product_id: u16,
    pub record_type: u8,
    /// Changes with every new reading: the same nonce is the same reading.
    pub nonce: u16,
    pub plaintext: Vec<u8>,
}

/// The AES-128-CTR keystream over `bytes`, whose initial counter block is the nonce (LE) and
/// zeros: the same call encrypts and decrypts.
fn apply_keystream(key: &Key, nonce: u16, bytes: &mut [u8]) {
    let mut iv = [0u8; 16];
    iv[..2].copy_from_slice(&nonce.to_le_bytes());
    Ctr128LE::<Aes128>::new(&key.0.into(), &iv.into()).apply_keystream(bytes);
}

/// An advertisement's manufacturer data for this record (what a device sends): header,
/// key check, and the plaintext (at most one block) encrypted. For the demo and the tests.
pub fn seal(product_id: u16, record_type: u8, nonce: u16, key: &Key, plaintext: &[u8]) -> Vec<u8> {
    let mut out = vec![PRODUCT_ADVERTISEMENT, 0x02];
    out.extend(product_id.to_le_bytes());
    out.push(record_type);
    out.extend(nonce.to_le_bytes());
    out.push(key.0[0]);
    let mut body: Vec<u8> = plaintext.iter().take(MAX_CIPHERTEXT).copied().collect();
    apply_keystream(key, nonce, &mut body);
    out.extend(body);
    out
}

/// Checks and decrypts manufacturer data (the bytes after the company id).
pub fn decrypt(data: &[u8], key: &Key) -> Result<Advertisement, VictronError> {
    if data.first() != Some(&PRODUCT_ADVERTISEMENT) {
        return Err(VictronError::NotInstantReadout);
    }
    if data.len() <= HEADER_LEN {
        return Err(VictronError::TooShort(data.len()));
    }
    if data[OFF_KEY_CHECK] != key.0[0] {
        return Err(VictronError::WrongKey {
            sent: data[OFF_KEY_CHECK],
        });
    }
    let nonce = u16::from_le_bytes([data[OFF_NONCE], data[OFF_NONCE + 1]]);
    let mut plaintext: Vec<u8> = data[HEADER_LEN..]
        .iter()
        .take(MAX_CIPHERTEXT)
        .copied()
        .collect();
    apply_keystream(key, nonce, &mut plaintext);
    Ok(Advertisement {
        product_id: u16::from_le_bytes([data[OFF_PRODUCT_ID], data[OFF_PRODUCT_ID + 1]]),
        record_type: data[OFF_RECORD_TYPE],
        nonce,
        plaintext,
    })
}

/// Reads little-endian bit fields, least significant bit first (the record layouts' order).
struct Bits<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Bits<'_> {
    /// The next `n` bits (n <= 32) as unsigned; bits past the end read as 1 (not available).
    fn take(&mut self, n: usize) -> u32 {
        let mut v = 0u32;
        for i in 0..n {
            let bit = self
                .bytes
                .get((self.at + i) / 8)
                .map_or(1, |b| (b >> ((self.at + i) % 8)) & 1);
            v |= u32::from(bit) << i;
        }
        self.at += n;
        v
    }
}

/// `raw` as an `n`-bit two's-complement number.
fn signed(raw: u32, n: usize) -> i32 {
    let shift = 32 - n;
    ((raw << shift) as i32) >> shift
}

/// A signed field: `None` when the raw bits are the field's "not available" pattern, tested
/// before sign extension (the patterns differ: 0x7FFF for a voltage, 0x3FFFFF, all ones, for
/// the 22-bit current, which sign-extends to -1 mA).
fn signed_or_na(raw: u32, n: usize, na: u32) -> Option<i32> {
    (raw != na).then(|| signed(raw, n))
}

/// "Not available" of the 16-bit signed voltages.
const NA_I16: u32 = 0x7FFF;
/// "Not available" of the 22-bit current.
const NA_CURRENT_22: u32 = 0x3F_FFFF;

/// An unsigned field: `None` when all its bits are set.
fn unsigned_or_na(raw: u32, n: usize) -> Option<u32> {
    let all_set = if n >= 32 { u32::MAX } else { (1 << n) - 1 };
    (raw != all_set).then_some(raw)
}

/// What the battery monitor's aux input measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Aux {
    /// Starter battery, V.
    StarterVoltage(f64),
    /// Midpoint, V.
    MidpointVoltage(f64),
    /// degC.
    Temperature(f64),
    None,
}

/// The alarm reason bits of the battery monitor and DC energy meter records (Victron's
/// "Extra manufacturer data"; esphome-victron_ble), as field names.
pub const ALARM_BITS: [(u16, &str); 14] = [
    (0x0001, "alarm_low_voltage"),
    (0x0002, "alarm_high_voltage"),
    (0x0004, "alarm_low_soc"),
    (0x0008, "alarm_low_starter_voltage"),
    (0x0010, "alarm_high_starter_voltage"),
    (0x0020, "alarm_low_temperature"),
    (0x0040, "alarm_high_temperature"),
    (0x0080, "alarm_mid_voltage"),
    (0x0100, "alarm_overload"),
    (0x0200, "alarm_dc_ripple"),
    (0x0400, "alarm_low_ac_out_voltage"),
    (0x0800, "alarm_high_ac_out_voltage"),
    (0x1000, "alarm_short_circuit"),
    (0x2000, "alarm_bms_lockout"),
];

/// Each named alarm bit of `alarm`: (field name, set).
pub fn alarm_flags(alarm: u16) -> impl Iterator<Item = (&'static str, bool)> {
    ALARM_BITS
        .iter()
        .map(move |&(bit, name)| (name, alarm & bit != 0))
}

/// Names of the products most often read this way (victron-ble's product id table); others
/// are named by their record type.
const PRODUCTS: [(u16, &str); 16] = [
    (0xA380, "BMV-710 Smart"),
    (0xA381, "BMV-712 Smart"),
    (0xA382, "BMV-710H Smart"),
    (0xA383, "BMV-712 Smart"),
    (0xA389, "SmartShunt 500A/50mV"),
    (0xA38A, "SmartShunt 1000A/50mV"),
    (0xA38B, "SmartShunt 2000A/50mV"),
    (0xA38C, "SmartShunt IP67 500A/50mV"),
    (0xA38D, "SmartShunt IP67 1000A/50mV"),
    (0xA38E, "SmartShunt IP67 2000A/50mV"),
    (0xC030, "SmartShunt IP65 500A/50mV"),
    (0xC031, "SmartShunt IP65 1000A/50mV"),
    (0xC032, "SmartShunt IP65 2000A/50mV"),
    (0xC034, "BMV-800 Smart"),
    (0xA042, "BlueSolar Charger MPPT 75/15"),
    (0xA053, "SmartSolar Charger MPPT 75/15"),
];

/// What to call a product: its name when known, else what its record says it is.
pub fn product_name(product_id: u16, record_type: u8) -> &'static str {
    PRODUCTS
        .iter()
        .find(|(id, _)| *id == product_id)
        .map(|(_, name)| *name)
        .unwrap_or(match record_type {
            RECORD_SOLAR_CHARGER => "solar charger",
            RECORD_BATTERY_MONITOR => "battery monitor",
            RECORD_DC_ENERGY_METER => "DC energy meter",
            _ => "Victron device",
        })
}

/// Battery monitor (SmartShunt, BMV-71x) record 0x02.
#[derive(Debug, Clone, PartialEq)]
pub struct BatteryMonitor {
    /// Time to go, s.
    pub time_to_go_s: Option<u32>,
    pub voltage_v: Option<f64>,
    pub alarm: u16,
    pub aux: Aux,
    /// Positive: charging.
    pub current_a: Option<f64>,
    /// Ah taken out since full (a positive number).
    pub consumed_ah: Option<f64>,
    pub soc_percent: Option<f64>,
}

/// Kelvin at 0 degC.
const ZERO_C_IN_K: f64 = 273.15;

fn aux(raw: u32, mode: u32) -> Aux {
    match mode {
        0 => signed_or_na(raw, 16, NA_I16)
            .map_or(Aux::None, |v| Aux::StarterVoltage(f64::from(v) / 100.0)),
        1 => unsigned_or_na(raw, 16)
            .map_or(Aux::None, |v| Aux::MidpointVoltage(f64::from(v) / 100.0)),
        2 => unsigned_or_na(raw, 16).map_or(Aux::None, |v| {
            Aux::Temperature(f64::from(v) / 100.0 - ZERO_C_IN_K)
        }),
        _ => Aux::None,
    }
}

impl BatteryMonitor {
    pub fn parse(plain: &[u8]) -> Self {
        let mut b = Bits {
            bytes: plain,
            at: 0,
        };
        let ttg = unsigned_or_na(b.take(16), 16);
        let voltage = signed_or_na(b.take(16), 16, NA_I16);
        let alarm = b.take(16) as u16;
        let aux_raw = b.take(16);
        let aux_mode = b.take(2);
        let current = signed_or_na(b.take(22), 22, NA_CURRENT_22);
        let consumed = unsigned_or_na(b.take(20), 20);
        let soc = unsigned_or_na(b.take(10), 10);
        BatteryMonitor {
            time_to_go_s: ttg.map(|m| m * 60),
            voltage_v: voltage.map(|v| f64::from(v) / 100.0),
            alarm,
            aux: aux(aux_raw, aux_mode),
            current_a: current.map(|i| f64::from(i) / 1000.0),
            consumed_ah: consumed.map(|c| f64::from(c) / 10.0),
            soc_percent: soc.map(|s| f64::from(s) / 10.0),
        }
    }
}

/// Solar charger (SmartSolar, BlueSolar) record 0x01.
#[derive(Debug, Clone, PartialEq)]
pub struct SolarCharger {
    pub charge_state: u8,
    pub error: u8,
    pub voltage_v: Option<f64>,
    pub current_a: Option<f64>,
    pub yield_today_kwh: Option<f64>,
    pub pv_power_w: Option<u32>,
    pub load_current_a: Option<f64>,
}

impl SolarCharger {
    pub fn parse(plain: &[u8]) -> Self {
        let mut b = Bits {
            bytes: plain,
            at: 0,
        };
        let charge_state = b.take(8) as u8;
        let error = b.take(8) as u8;
        let voltage = signed_or_na(b.take(16), 16, NA_I16);
        let current = signed_or_na(b.take(16), 16, NA_I16);
        let yield_today = unsigned_or_na(b.take(16), 16);
        let pv = unsigned_or_na(b.take(16), 16);
        let load = unsigned_or_na(b.take(9), 9);
        SolarCharger {
            charge_state,
            error,
            voltage_v: voltage.map(|v| f64::from(v) / 100.0),
            current_a: current.map(|i| f64::from(i) / 10.0),
            yield_today_kwh: yield_today.map(|y| f64::from(y) / 100.0),
            pv_power_w: pv,
            load_current_a: load.map(|l| f64::from(l) / 10.0),
        }
    }
}

/// DC energy meter (SmartShunt in DC meter mode) record 0x0D.
#[derive(Debug, Clone, PartialEq)]
pub struct DcEnergyMeter {
    pub monitor_mode: i16,
    pub voltage_v: Option<f64>,
    pub alarm: u16,
    pub aux: Aux,
    pub current_a: Option<f64>,
}

impl DcEnergyMeter {
    pub fn parse(plain: &[u8]) -> Self {
        let mut b = Bits {
            bytes: plain,
            at: 0,
        };
        let monitor_mode = signed(b.take(16), 16) as i16;
        let voltage = signed_or_na(b.take(16), 16, NA_I16);
        let alarm = b.take(16) as u16;
        let aux_raw = b.take(16);
        let aux_mode = b.take(2);
        let current = signed_or_na(b.take(22), 22, NA_CURRENT_22);
        DcEnergyMeter {
            monitor_mode,
            voltage_v: voltage.map(|v| f64::from(v) / 100.0),
            alarm,
            aux: aux(aux_raw, aux_mode),
            current_a: current.map(|i| f64::from(i) / 1000.0),
        }
    }
}

/// A decoded record.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    BatteryMonitor(BatteryMonitor),
    SolarCharger(SolarCharger),
    DcEnergyMeter(DcEnergyMeter),
}

/// Decrypts and decodes an advertisement's manufacturer data.
pub fn decode(data: &[u8], key: &Key) -> Result<(Advertisement, Record), VictronError> {
    let adv = decrypt(data, key)?;
    let record = match adv.record_type {
        RECORD_BATTERY_MONITOR => Record::BatteryMonitor(BatteryMonitor::parse(&adv.plaintext)),
        RECORD_SOLAR_CHARGER => Record::SolarCharger(SolarCharger::parse(&adv.plaintext)),
        RECORD_DC_ENERGY_METER => Record::DcEnergyMeter(DcEnergyMeter::parse(&adv.plaintext)),
        other => return Err(VictronError::UnknownRecord(other)),
    };
    Ok((adv, record))
}

#[cfg(test)]
mod tests;

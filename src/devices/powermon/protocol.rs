//! Thornwave PowerMon: the record one GATT read returns, in both firmware layouts.
//!
//! Pure code. Sources: mkjanke/ThornwavePy (README.md, DCPMRead.py and its history, which
//! holds real captured records) and Thornwave's public libpowermon headers (MonitorData field
//! set, COBS framing); summarised in `shared/notes/protocols.md`.

use thiserror::Error;
use uuid::Uuid;

use crate::devices::protocol::Omitted;

/// Firmware 2.03 and older.
pub const OLD_SERVICE_UUID: Uuid = Uuid::from_u128(0x7a95ce00_0ea8_1bcc_71a2_fc7539b81c9c);
pub const OLD_RECORD_UUID: Uuid = Uuid::from_u128(0x7a95ce01_0ea8_1bcc_71a2_fc7539b81c9c);
/// Newer firmware.
pub const NEW_SERVICE_UUID: Uuid = Uuid::from_u128(0xec7c0000_2c7b_1539_172f_29d041beab3e);
pub const NEW_RECORD_UUID: Uuid = Uuid::from_u128(0xec7c0001_2c7b_1539_172f_29d041beab3e);

/// Old firmware: a raw 52-byte little-endian record.
pub const OLD_RECORD_LEN: usize = 52;
/// New firmware: 0x00, COBS-encoded data, 0x00.
pub const NEW_FRAME_LEN: usize = 54;
/// New firmware record after COBS decoding.
pub const NEW_RECORD_LEN: usize = 51;

// Old layout offsets (little-endian).
mod old {
    pub const SOC_HALF_PERCENT: usize = 3; // u8, value / 2 = %
    pub const VOLTAGE1_V: usize = 4; // f32
    pub const VOLTAGE2_V: usize = 8; // f32
    pub const CURRENT_A: usize = 12; // f32, signed
    pub const POWER_W: usize = 16; // f32, signed
    pub const TEMPERATURE_C: usize = 20; // f32
    pub const ENERGY_MWH: usize = 24; // i64
    pub const CHARGE_MAH: usize = 32; // i64
    pub const UPTIME_S: usize = 40; // u32
    pub const PEAK_CURRENT_A: usize = 48; // f32
    /// Raw SoC above 200 (100 %) means the gauge has no value.
    pub const SOC_MAX_RAW: u8 = 200;
}

// New layout offsets, after COBS decoding (little-endian).
mod new {
    pub const FIRMWARE_BCD: usize = 0; // u16 BCD, 0x0231 = 2.31
    pub const HARDWARE_BCD: usize = 2; // u8 BCD
    pub const TIME_LOCAL_S: usize = 3; // u32, seconds since 1970, device local time
    pub const FLAGS: usize = 7; // u32
    pub const VOLTAGE1_V: usize = 11; // f32
    pub const VOLTAGE2_V: usize = 15; // f32
    pub const CURRENT_A: usize = 19; // f32, signed
    pub const POWER_W: usize = 23; // f32, signed
    pub const CHARGE_MAH: usize = 27; // i64
    pub const ENERGY_MWH: usize = 35; // i64
    pub const TEMPERATURE_C: usize = 43; // f32
    pub const POWER_STATUS: usize = 47; // u8
    pub const SOC_PERCENT: usize = 48; // u8; 0xFF disabled, 0xFE unknown
    pub const RUNTIME_MIN: usize = 49; // u16; 0xFFFF disabled, 0xFFFE unknown
    /// Highest state of charge, %.
    pub const SOC_MAX: u8 = 100;
    /// SoC sentinels: fuel gauge disabled, value unknown (no SoC, nothing implausible).
    pub const SOC_SENTINELS: [u8; 2] = [0xFF, 0xFE];
    /// Longest time to go, minutes.
    pub const RUNTIME_MAX_MIN: u16 = 0xFFF0;
    /// Runtime sentinels: disabled, unknown.
    pub const RUNTIME_SENTINELS: [u16; 2] = [0xFFFF, 0xFFFE];
    /// Highest power status: 0 off, 1 on, 2 LVD, 3 OCD, 4 HVD, 5 FGD, 6 NCH, 7 LTD, 8 HTD.
    pub const POWER_STATUS_MAX: u8 = 8;
}

/// Which record layout a value was in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Firmware 2.03 and older, 52 raw bytes.
    Old,
    /// Newer firmware, 54-byte COBS frame.
    New,
}

/// One PowerMon reading, whichever layout it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct PowermonReading {
    pub layout: Layout,
    pub voltage1_v: f64,
    pub voltage2_v: f64,
    /// Signed: positive into the battery, as the shunt is configured.
    pub current_a: f64,
    pub power_w: f64,
    pub temperature_c: f64,
    pub coulomb_meter_ah: f64,
    pub energy_meter_wh: f64,
    /// `None` when the fuel gauge is disabled or has no value.
    pub soc_percent: Option<u8>,
    /// Old layout only.
    pub uptime_s: Option<u32>,
    /// Old layout only.
    pub peak_current_a: Option<f64>,
    /// New layout only: 0 off, 1 on, 2 LVD, 3 OCD, 4 HVD, 5 FGD, 6 NCH, 7 LTD, 8 HTD.
    pub power_status: Option<u8>,
    /// New layout only: time to go, minutes, when known.
    pub runtime_min: Option<u16>,
    /// New layout only: e.g. "2.31"; `None` when the word is not BCD.
    pub firmware_version: Option<String>,
    /// Values left out above because the monitor cannot mean them.
    pub omitted: Vec<Omitted>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PowermonError {
    #[error(
        "PowerMon record has {0} bytes; expected 52 (firmware <= 2.03) or 54 (newer, COBS framed)"
    )]
    BadLength(usize),
    #[error("PowerMon 54-byte value is not a COBS frame (must start and end with 0x00)")]
    NotCobsFramed,
    #[error("PowerMon COBS frame does not decode: {0}")]
    BadCobs(String),
    #[error("PowerMon COBS frame decodes to {0} bytes, expected 51")]
    BadDecodedLength(usize),
    #[error("PowerMon record has a non-finite {field}: the record is corrupt")]
    NonFinite { field: &'static str },
}

/// Reads an f32 and widens it by its shortest decimal form, so 13.4637 stays 13.4637 rather
/// than becoming 13.46368408203125.
fn f32_at(b: &[u8], off: usize) -> f64 {
    let v = f32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]]);
    if v.is_finite() {
        v.to_string().parse().unwrap_or(f64::from(v))
    } else {
        f64::from(v)
    }
}

fn i64_at(b: &[u8], off: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    i64::from_le_bytes(a)
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

/// Milli-units (mAh, mWh) to base units (Ah, Wh).
fn milli(raw: i64) -> f64 {
    raw as f64 / 1000.0
}

/// Largest BCD digit.
const BCD_DIGIT_MAX: u8 = 9;

/// Two BCD digits as a number 0..=99; `None` when a nibble is not a decimal digit.
fn bcd_digit_pair(b: u8) -> Option<u8> {
    let (hi, lo) = (b >> 4, b & 0x0F);
    (hi <= BCD_DIGIT_MAX && lo <= BCD_DIGIT_MAX).then_some(hi * 10 + lo)
}

/// The firmware word as "major.minor" (0x0231 = "2.31"); `None` when it is not BCD.
pub fn firmware_version(bcd: u16) -> Option<String> {
    let [lo, hi] = bcd.to_le_bytes();
    Some(format!(
        "{}.{:02}",
        bcd_digit_pair(hi)?,
        bcd_digit_pair(lo)?
    ))
}

impl PowermonReading {
    /// Decodes a GATT read value, picking the layout from its length.
    pub fn parse(value: &[u8]) -> Result<Self, PowermonError> {
        let reading = match value.len() {
            OLD_RECORD_LEN => Self::parse_old(value),
            NEW_FRAME_LEN => Self::parse_new(&decode_cobs_frame(value)?),
            n => return Err(PowermonError::BadLength(n)),
        };
        reading.check_finite()
    }

    fn parse_old(b: &[u8]) -> Self {
        let soc_raw = b[old::SOC_HALF_PERCENT];
        PowermonReading {
            layout: Layout::Old,
            voltage1_v: f32_at(b, old::VOLTAGE1_V),
            voltage2_v: f32_at(b, old::VOLTAGE2_V),
            current_a: f32_at(b, old::CURRENT_A),
            power_w: f32_at(b, old::POWER_W),
            temperature_c: f32_at(b, old::TEMPERATURE_C),
            coulomb_meter_ah: milli(i64_at(b, old::CHARGE_MAH)),
            energy_meter_wh: milli(i64_at(b, old::ENERGY_MWH)),
            soc_percent: (soc_raw <= old::SOC_MAX_RAW).then_some(soc_raw / 2),
            uptime_s: Some(u32_at(b, old::UPTIME_S)),
            peak_current_a: Some(f32_at(b, old::PEAK_CURRENT_A)),
            power_status: None,
            runtime_min: None,
            firmware_version: None,
            omitted: Vec::new(),
        }
    }

    fn parse_new(b: &[u8]) -> Self {
        let mut omitted = Vec::new();
        let soc = b[new::SOC_PERCENT];
        let soc_percent = (soc <= new::SOC_MAX).then_some(soc);
        if soc_percent.is_none() && !new::SOC_SENTINELS.contains(&soc) {
            omitted.push(Omitted::new(
                "state of charge (%)",
                soc,
                format!("0..={} % or a sentinel (0xFE, 0xFF)", new::SOC_MAX),
            ));
        }
        let runtime = u16_at(b, new::RUNTIME_MIN);
        let runtime_min = (runtime <= new::RUNTIME_MAX_MIN).then_some(runtime);
        if runtime_min.is_none() && !new::RUNTIME_SENTINELS.contains(&runtime) {
            omitted.push(Omitted::new(
                "runtime (min)",
                runtime,
                format!(
                    "0..={} min or a sentinel (0xFFFE, 0xFFFF)",
                    new::RUNTIME_MAX_MIN
                ),
            ));
        }
        let status = b[new::POWER_STATUS];
        let power_status = (status <= new::POWER_STATUS_MAX).then_some(status);
        if power_status.is_none() {
            omitted.push(Omitted::new(
                "power status",
                status,
                format!("0..={}", new::POWER_STATUS_MAX),
            ));
        }
        let fw = u16_at(b, new::FIRMWARE_BCD);
        let firmware = firmware_version(fw);
        if firmware.is_none() {
            omitted.push(Omitted::new(
                "firmware version (BCD)",
                fw,
                "BCD digits 0-9 in every nibble, e.g. 0x0231 = 2.31",
            ));
        }
        PowermonReading {
            layout: Layout::New,
            voltage1_v: f32_at(b, new::VOLTAGE1_V),
            voltage2_v: f32_at(b, new::VOLTAGE2_V),
            current_a: f32_at(b, new::CURRENT_A),
            power_w: f32_at(b, new::POWER_W),
            temperature_c: f32_at(b, new::TEMPERATURE_C),
            coulomb_meter_ah: milli(i64_at(b, new::CHARGE_MAH)),
            energy_meter_wh: milli(i64_at(b, new::ENERGY_MWH)),
            soc_percent,
            uptime_s: None,
            peak_current_a: None,
            power_status,
            runtime_min,
            firmware_version: firmware,
            omitted,
        }
    }

    fn check_finite(self) -> Result<Self, PowermonError> {
        let floats = [
            ("voltage1", self.voltage1_v),
            ("voltage2", self.voltage2_v),
            ("current", self.current_a),
            ("power", self.power_w),
            ("temperature", self.temperature_c),
            ("peak_current", self.peak_current_a.unwrap_or(0.0)),
        ];
        for (field, v) in floats {
            if !v.is_finite() {
                return Err(PowermonError::NonFinite { field });
            }
        }
        Ok(self)
    }
}

/// Strips the 0x00 delimiters of a new-firmware value and COBS-decodes the 51-byte record.
pub fn decode_cobs_frame(value: &[u8]) -> Result<Vec<u8>, PowermonError> {
    let inner = match value {
        [0, inner @ .., 0] => inner,
        _ => return Err(PowermonError::NotCobsFramed),
    };
    let decoded = cobs::decode_vec(inner).map_err(|e| PowermonError::BadCobs(e.to_string()))?;
    if decoded.len() != NEW_RECORD_LEN {
        return Err(PowermonError::BadDecodedLength(decoded.len()));
    }
    Ok(decoded)
}

/// Builds a new-firmware value (0x00, COBS(record), 0x00) from a 51-byte record.
pub fn encode_cobs_frame(record: &[u8; NEW_RECORD_LEN]) -> Vec<u8> {
    let mut out = Vec::with_capacity(NEW_FRAME_LEN);
    out.push(0);
    out.extend_from_slice(&cobs::encode_vec(record));
    out.push(0);
    out
}

/// Field values for building a new-firmware record (used by the demo devices).
#[derive(Debug, Clone, PartialEq)]
pub struct NewRecordFields {
    pub firmware_bcd: u16,
    pub hardware_bcd: u8,
    pub time_local_s: u32,
    pub flags: u32,
    pub voltage1_v: f32,
    pub voltage2_v: f32,
    pub current_a: f32,
    pub power_w: f32,
    pub charge_mah: i64,
    pub energy_mwh: i64,
    pub temperature_c: f32,
    pub power_status: u8,
    pub soc_percent: u8,
    pub runtime_min: u16,
}

impl NewRecordFields {
    /// Encodes the 51-byte record (before COBS).
    pub fn encode(&self) -> [u8; NEW_RECORD_LEN] {
        let mut b = [0u8; NEW_RECORD_LEN];
        let mut put = |off: usize, bytes: &[u8]| b[off..off + bytes.len()].copy_from_slice(bytes);
        put(new::FIRMWARE_BCD, &self.firmware_bcd.to_le_bytes());
        put(new::HARDWARE_BCD, &[self.hardware_bcd]);
        put(new::TIME_LOCAL_S, &self.time_local_s.to_le_bytes());
        put(new::FLAGS, &self.flags.to_le_bytes());
        put(new::VOLTAGE1_V, &self.voltage1_v.to_le_bytes());
        put(new::VOLTAGE2_V, &self.voltage2_v.to_le_bytes());
        put(new::CURRENT_A, &self.current_a.to_le_bytes());
        put(new::POWER_W, &self.power_w.to_le_bytes());
        put(new::CHARGE_MAH, &self.charge_mah.to_le_bytes());
        put(new::ENERGY_MWH, &self.energy_mwh.to_le_bytes());
        put(new::TEMPERATURE_C, &self.temperature_c.to_le_bytes());
        put(new::POWER_STATUS, &[self.power_status]);
        put(new::SOC_PERCENT, &[self.soc_percent]);
        put(new::RUNTIME_MIN, &self.runtime_min.to_le_bytes());
        b
    }
}

#[cfg(test)]
pub(crate) mod tests;

//! JK BMS, JK02 protocol over BLE: command frames, reassembly of the 300-byte records it
//! streams, device info and cell info (24S and 32S layouts). Pure: no I/O, no async, no
//! logging.
//!
//! Facts from syssi/esphome-jk-bms (`docs/protocol-design-ble.md`,
//! `components/jk_bms_ble/jk_bms_ble.cpp`) and patman15/aiobmsble (`bms/jikong_bms.py`, whose
//! test captures are this module's test vectors), summarised in `shared/notes/next-wave.md`
//! section 4.1. Every multi-byte value is little-endian.

use uuid::Uuid;

use crate::devices::protocol::Omitted;

/// GATT service and characteristic (notify and write; the newer module has two `ffe1`s).
pub const SERVICE_UUID: Uuid = Uuid::from_u128(0x0000ffe0_0000_1000_8000_00805f9b34fb);
pub const CHAR_UUID: Uuid = Uuid::from_u128(0x0000ffe1_0000_1000_8000_00805f9b34fb);
/// Company ids of the manufacturer data JK modules advertise (aiobmsble's matchers; a V19
/// unit advertised 0x0B65 with services ffe0 and fee7, aiobmsble #158).
pub const MANUFACTURER_IDS: [u16; 2] = [0x0B65, 0x4B4A];

/// A command frame: `AA 55 90 EB cmd len value[4] 00.. crc`, 20 bytes.
pub const COMMAND_LEN: usize = 20;
const COMMAND_START: [u8; 4] = [0xAA, 0x55, 0x90, 0xEB];
/// Asks for the device info record (type 0x03).
pub const CMD_DEVICE_INFO: u8 = 0x97;
/// Asks for the settings record (0x01), then the BMS streams cell info records (0x02).
pub const CMD_CELL_INFO: u8 = 0x96;

/// Every record starts with these four bytes.
pub const RECORD_START: [u8; 4] = [0x55, 0xAA, 0xEB, 0x90];
/// A record's length, checksum included (some firmware sends more; the rest is ignored).
pub const RECORD_LEN: usize = 300;
/// Record types (byte 4).
pub const RECORD_SETTINGS: u8 = 0x01;
pub const RECORD_CELL_INFO: u8 = 0x02;
pub const RECORD_DEVICE_INFO: u8 = 0x03;

/// The 8-bit sum the protocol uses as its checksum.
pub fn sum8(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
}

/// The 20-byte frame of a read command (value 0, counter 0, as both peers send it).
pub fn command(cmd: u8) -> [u8; COMMAND_LEN] {
    let mut f = [0u8; COMMAND_LEN];
    f[..4].copy_from_slice(&COMMAND_START);
    f[4] = cmd;
    f[COMMAND_LEN - 1] = sum8(&f[..COMMAND_LEN - 1]);
    f
}

/// Why a record was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JkError {
    #[error("JK record checksum mismatch: expected 0x{expected:02X}, got 0x{got:02X}")]
    Checksum { expected: u8, got: u8 },
    #[error("not a JK {what} record (type 0x{got:02X})")]
    WrongType { what: &'static str, got: u8 },
    #[error("JK device info without a software version")]
    NoVersion,
}

/// One whole record, checksum verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub bytes: Vec<u8>,
}

impl Record {
    pub fn kind(&self) -> u8 {
        self.bytes[4]
    }
}

/// Builds records out of notifications, as the BMS sends them: a notification that begins
/// with `55 AA EB 90` begins a record (whatever was pending is dropped: it was cut short);
/// a record is complete at 300 bytes; what follows it in the same notification (a longer
/// record's tail, the module's `AT\r\n`) is dropped unless another record starts there.
#[derive(Debug, Default)]
pub struct Reassembler {
    buf: Vec<u8>,
}

impl Reassembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes held for an incomplete record.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Feeds one notification; returns the records it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Result<Record, JkError>> {
        let mut out = Vec::new();
        let mut rest = chunk;
        if rest.starts_with(&RECORD_START) {
            self.buf.clear();
        }
        while !rest.is_empty() {
            if self.buf.is_empty() {
                // Between records: a record may start further in; anything else is dropped.
                let Some(i) = find(rest, &RECORD_START) else {
                    break;
                };
                rest = &rest[i..];
            }
            let take = (RECORD_LEN - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.buf.len() == RECORD_LEN {
                out.push(verify(std::mem::take(&mut self.buf)));
            }
        }
        out
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn verify(bytes: Vec<u8>) -> Result<Record, JkError> {
    let expected = sum8(&bytes[..RECORD_LEN - 1]);
    let got = bytes[RECORD_LEN - 1];
    if expected != got {
        return Err(JkError::Checksum { expected, got });
    }
    Ok(Record { bytes })
}

fn u16le(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn i16le(b: &[u8], o: usize) -> i16 {
    i16::from_le_bytes([b[o], b[o + 1]])
}

fn u32le(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn i32le(b: &[u8], o: usize) -> i32 {
    i32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// A NUL-padded text field, trimmed; non-ASCII bytes dropped.
fn text(b: &[u8], from: usize, len: usize) -> String {
    b[from..from + len]
        .iter()
        .take_while(|&&c| c != 0)
        .filter(|c| c.is_ascii_graphic() || **c == b' ')
        .map(|&c| char::from(c))
        .collect::<String>()
        .trim()
        .to_string()
}

/// Cell info's two layouts: firmware before 11 has 24 cell slots, from 11 on 32 (and a few
/// fields moved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Cells24,
    Cells32,
}

impl Layout {
    /// From the software version of the device info (`"10.08"` -> 24S, `"11.48"` -> 32S).
    pub fn for_version(software: &str) -> Option<Layout> {
        let major: u32 = software
            .split('.')
            .next()?
            .trim_start_matches(['V', 'v'])
            .parse()
            .ok()?;
        Some(if major < 11 {
            Layout::Cells24
        } else {
            Layout::Cells32
        })
    }

    pub fn slots(self) -> usize {
        match self {
            Layout::Cells24 => 24,
            Layout::Cells32 => 32,
        }
    }

    /// The shift of the block after the cell voltages.
    pub fn o1(self) -> usize {
        match self {
            Layout::Cells24 => 0,
            Layout::Cells32 => 16,
        }
    }

    /// The shift of the block after the cell resistances.
    pub fn o2(self) -> usize {
        2 * self.o1()
    }
}

/// Device info (record 0x03): who the BMS is. Its passcodes are not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub model: String,
    pub hardware_version: String,
    pub software_version: String,
    pub name: String,
    pub serial: String,
    pub layout: Layout,
}

// Device info offsets and lengths.
pub const DI_MODEL: (usize, usize) = (6, 16);
pub const DI_HARDWARE: (usize, usize) = (22, 8);
pub const DI_SOFTWARE: (usize, usize) = (30, 8);
pub const DI_NAME: (usize, usize) = (46, 16);
pub const DI_SERIAL: (usize, usize) = (86, 12);

impl DeviceInfo {
    pub fn parse(r: &Record) -> Result<Self, JkError> {
        if r.kind() != RECORD_DEVICE_INFO {
            return Err(JkError::WrongType {
                what: "device info",
                got: r.kind(),
            });
        }
        let b = &r.bytes;
        let field = |(from, len): (usize, usize)| text(b, from, len);
        let software_version = field(DI_SOFTWARE);
        let layout = Layout::for_version(&software_version).ok_or(JkError::NoVersion)?;
        Ok(DeviceInfo {
            model: field(DI_MODEL),
            hardware_version: field(DI_HARDWARE),
            software_version,
            name: field(DI_NAME),
            serial: field(DI_SERIAL),
            layout,
        })
    }
}

/// The error bits, bit 0 first (esphome-jk-bms `ERRORS_JK02`); `None` for bits with no
/// known meaning. The 24S layout carries bits 0..15 only.
pub const ERROR_BITS: [Option<&str>; 32] = [
    Some("error_wire_resistance"),
    Some("error_mosfet_overtemperature"),
    Some("error_cell_count_mismatch"),
    None,
    Some("error_fully_charged"),
    Some("error_pack_overvoltage"),
    Some("error_charge_overcurrent"),
    Some("error_charge_short_circuit"),
    Some("error_charge_overtemperature"),
    Some("error_charge_undertemperature"),
    Some("error_coprocessor_communication"),
    Some("error_cell_undervoltage"),
    Some("error_pack_undervoltage"),
    Some("error_discharge_overcurrent"),
    Some("error_discharge_short_circuit"),
    Some("error_discharge_overtemperature"),
    Some("error_charge_mosfet_abnormal"),
    Some("error_discharge_mosfet_abnormal"),
    Some("error_gps_disconnected"),
    Some("error_modify_password_in_time"),
    Some("error_discharge_on_failed"),
    Some("error_battery_overtemperature"),
    Some("error_temperature_sensor_anomaly"),
    Some("error_pl_module_anomaly"),
    Some("error_scp_release_failed"),
    Some("error_discharge_ocp_2"),
    Some("error_discharge_ocp_3"),
    Some("error_discharge_undertemperature"),
    Some("error_gps_remote_lock"),
    None,
    None,
    None,
];

/// Cell info (record 0x02), decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct CellInfo {
    pub layout: Layout,
    /// The enabled cells, V, in order.
    pub cells_v: Vec<f64>,
    /// Their wire resistances, ohm.
    pub cell_resistances_ohm: Vec<f64>,
    pub cell_avg_v: f64,
    pub cell_delta_v: f64,
    pub voltage_v: f64,
    /// Positive while charging.
    pub current_a: f64,
    pub mos_temperature_c: Option<f64>,
    /// T1, T2; `None` where the sensor is absent.
    pub temperatures_c: [Option<f64>; 2],
    pub errors: u32,
    pub balance_current_a: f64,
    /// 0 off, 1 charging balance, 2 discharging balance.
    pub balancing: u8,
    pub soc_percent: Option<u8>,
    pub remaining_capacity_ah: f64,
    pub nominal_capacity_ah: f64,
    pub cycles: u32,
    /// Lifetime charge, Ah.
    pub total_cycle_capacity_ah: f64,
    pub soh_percent: Option<u8>,
    pub charge_fet_on: bool,
    pub discharge_fet_on: bool,
    pub omitted: Vec<Omitted>,
}

// Cell info offsets, 24S layout; `+ o1` after the cell voltages, `+ o2` after the
// resistances (see `Layout`).
pub const CI_CELLS: usize = 6;
pub const CI_ENABLED_MASK: usize = 54;
pub const CI_CELL_AVG_MV: usize = 58;
pub const CI_CELL_DELTA_MV: usize = 60;
pub const CI_RESISTANCES_MOHM: usize = 64;
pub const CI_VOLTAGE_MV: usize = 118;
pub const CI_CURRENT_MA: usize = 126;
pub const CI_T1_DECI_C: usize = 130;
pub const CI_T2_DECI_C: usize = 132;
/// MOSFET temperature: here in the 24S layout; at [`CI32_MOS_DECI_C`] in the 32S one.
pub const CI24_MOS_DECI_C: usize = 134;
pub const CI32_MOS_DECI_C: usize = 144;
/// Error bits: u16 here in the 24S layout; u32 at 134 + o2 in the 32S one.
pub const CI24_ERRORS: usize = 136;
pub const CI32_ERRORS: usize = 134;
pub const CI_BALANCE_MA: usize = 138;
pub const CI_BALANCING: usize = 140;
pub const CI_SOC: usize = 141;
pub const CI_REMAINING_MAH: usize = 142;
pub const CI_NOMINAL_MAH: usize = 146;
pub const CI_CYCLES: usize = 150;
pub const CI_CYCLE_CAPACITY_MAH: usize = 154;
pub const CI_SOH: usize = 158;
pub const CI_CHARGE_FET: usize = 166;
pub const CI_DISCHARGE_FET: usize = 167;
/// A temperature of -200.0 degC is "no sensor".
pub const ABSENT_DECI_C: i16 = -2000;
/// Outside this a temperature is a broken sensor, not a reading.
const TEMP_MIN_C: f64 = -40.0;
const TEMP_MAX_C: f64 = 120.0;

impl CellInfo {
    pub fn parse(r: &Record, layout: Layout) -> Result<Self, JkError> {
        if r.kind() != RECORD_CELL_INFO {
            return Err(JkError::WrongType {
                what: "cell info",
                got: r.kind(),
            });
        }
        let b = &r.bytes;
        let (o1, o2) = (layout.o1(), layout.o2());
        let mut omitted = Vec::new();
        let mask = u32le(b, CI_ENABLED_MASK + o1);
        let enabled: Vec<usize> = (0..layout.slots())
            .filter(|i| mask & (1 << i) != 0)
            .collect();
        let milli = |raw: f64| raw / 1000.0;
        let cells_v = enabled
            .iter()
            .map(|&i| milli(f64::from(u16le(b, CI_CELLS + 2 * i))))
            .collect();
        let cell_resistances_ohm = enabled
            .iter()
            .map(|&i| milli(f64::from(u16le(b, CI_RESISTANCES_MOHM + o1 + 2 * i))))
            .collect();
        let mut temp = |field: &'static str, n: Option<usize>, raw: i16| {
            let c = f64::from(raw) / 10.0;
            if raw == ABSENT_DECI_C {
                None
            } else if (TEMP_MIN_C..=TEMP_MAX_C).contains(&c) {
                Some(c)
            } else {
                let o = Omitted::new(
                    field,
                    u32::from(raw as u16),
                    format!("{TEMP_MIN_C}..{TEMP_MAX_C} degC (raw i16, 0.1 degC)"),
                );
                omitted.push(n.map_or(o.clone(), |n| o.nth(n)));
                None
            }
        };
        let (mos_at, errors) = match layout {
            Layout::Cells24 => (CI24_MOS_DECI_C, u32::from(u16le(b, CI24_ERRORS))),
            Layout::Cells32 => (CI32_MOS_DECI_C, u32le(b, CI32_ERRORS + o2)),
        };
        let mos_temperature_c = temp("MOSFET temperature", None, i16le(b, mos_at));
        let temperatures_c = [
            temp("temperature sensor", Some(1), i16le(b, CI_T1_DECI_C + o2)),
            temp("temperature sensor", Some(2), i16le(b, CI_T2_DECI_C + o2)),
        ];
        let percent = |field: &'static str, raw: u8, omitted: &mut Vec<Omitted>| {
            if raw <= 100 {
                Some(raw)
            } else {
                omitted.push(Omitted::new(field, raw, "0..100 %"));
                None
            }
        };
        let soc_percent = percent("state of charge", b[CI_SOC + o2], &mut omitted);
        let soh_percent = percent("state of health", b[CI_SOH + o2], &mut omitted);
        Ok(CellInfo {
            layout,
            cells_v,
            cell_resistances_ohm,
            cell_avg_v: milli(f64::from(u16le(b, CI_CELL_AVG_MV + o1))),
            cell_delta_v: milli(f64::from(u16le(b, CI_CELL_DELTA_MV + o1))),
            voltage_v: milli(f64::from(u32le(b, CI_VOLTAGE_MV + o2))),
            current_a: milli(f64::from(i32le(b, CI_CURRENT_MA + o2))),
            mos_temperature_c,
            temperatures_c,
            errors,
            balance_current_a: milli(f64::from(i16le(b, CI_BALANCE_MA + o2))),
            balancing: b[CI_BALANCING + o2],
            soc_percent,
            remaining_capacity_ah: milli(f64::from(u32le(b, CI_REMAINING_MAH + o2))),
            nominal_capacity_ah: milli(f64::from(u32le(b, CI_NOMINAL_MAH + o2))),
            cycles: u32le(b, CI_CYCLES + o2),
            total_cycle_capacity_ah: milli(f64::from(u32le(b, CI_CYCLE_CAPACITY_MAH + o2))),
            soh_percent,
            charge_fet_on: b[CI_CHARGE_FET + o2] != 0,
            discharge_fet_on: b[CI_DISCHARGE_FET + o2] != 0,
            omitted,
        })
    }

    /// Each named error bit, in [`ERROR_BITS`] order, and whether it is set.
    pub fn error_flags(&self) -> impl Iterator<Item = (&'static str, bool)> + '_ {
        ERROR_BITS
            .iter()
            .enumerate()
            .filter_map(|(bit, name)| name.map(|n| (n, self.errors & (1 << bit) != 0)))
    }
}

#[cfg(test)]
pub(crate) mod tests;

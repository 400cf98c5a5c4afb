//! JBD / Overkill Solar / Xiaoxiang BMS: frames, reassembly and register decoders.
//!
//! Pure code: bytes in, typed values out. No I/O, no async, no logging.
//!
//! Sources for every fact here: the JBD protocol PDFs (V4 and V11, mirrored in
//! syssi/esphome-jbd-bms `docs/` and FurTrader/OverkillSolarBMS
//! `Comm_Protocol_Documentation/`), summarised in `shared/notes/protocols.md`.

use thiserror::Error;
use uuid::Uuid;

use crate::devices::protocol::Omitted;

/// GATT service of the common JBD BLE dongle.
pub const SERVICE_UUID: Uuid = Uuid::from_u128(0x0000ff00_0000_1000_8000_00805f9b34fb);
/// Characteristic the BMS notifies its replies on.
pub const NOTIFY_UUID: Uuid = Uuid::from_u128(0x0000ff01_0000_1000_8000_00805f9b34fb);
/// Characteristic requests are written to.
pub const WRITE_UUID: Uuid = Uuid::from_u128(0x0000ff02_0000_1000_8000_00805f9b34fb);
/// Alternative UUID set used by some dongles (e.g. JBD-DH04SC02).
pub const ALT_SERVICE_UUID: Uuid = Uuid::from_u128(0x0000fff0_0000_1000_8000_00805f9b34fb);
pub const ALT_NOTIFY_UUID: Uuid = Uuid::from_u128(0x0000fff1_0000_1000_8000_00805f9b34fb);
pub const ALT_WRITE_UUID: Uuid = Uuid::from_u128(0x0000fff2_0000_1000_8000_00805f9b34fb);

/// First byte of every frame.
pub const START: u8 = 0xDD;
/// Last byte of every frame.
pub const END: u8 = 0x77;
/// Second byte of a read request.
pub const READ: u8 = 0xA5;
/// Bytes of a frame that are not data: start, register, status, len, chk_hi, chk_lo, end.
pub const FRAME_OVERHEAD: usize = 7;
/// Largest data length we accept. The biggest real reply is 0x04 with 32 cells (64 bytes);
/// 0x03 with 8 NTCs and the V11 trailer is 48. Anything beyond this is garbage.
pub const MAX_DATA_LEN: u8 = 96;
/// Largest cell count a JBD BMS reports.
pub const MAX_CELLS: usize = 32;

/// Kelvin offset of NTC readings, in 0.1 K: degC = (raw - 2731) / 10.
const NTC_OFFSET_DECI_KELVIN: i32 = 2731;
/// Coldest NTC reading a pack can mean, degC: the bottom of a 10 k NTC's table and of any
/// lithium cell's storage range. An open sensor or raw 0 (-273.1 degC) reads far below.
pub const NTC_MIN_C: i16 = -40;
/// Hottest NTC reading a pack can mean, degC: beyond every JBD over-temperature protection
/// (cells and MOSFETs alike are cut off well before); a shorted sensor reads far above.
pub const NTC_MAX_C: i16 = 100;
/// State of charge above this, %, is not a state of charge.
pub const SOC_MAX_PERCENT: u8 = 100;
/// Relative humidity a V11 sensor can report, %: 0 does not occur in air (firmware without the
/// sensor sends 0), above 100 is impossible.
pub const HUMIDITY_MIN_PERCENT: u8 = 1;
/// Highest relative humidity, %.
pub const HUMIDITY_MAX_PERCENT: u8 = 100;
/// Largest difference between the pack voltage (0x03) and the sum of its cells (0x04) that
/// measurement explains, V: the pack voltage's 10 mV resolution, N x 1 mV cell rounding and a
/// few hundred mV across MOSFETs and shunt at 100 A stay below it; one missing or phantom cell
/// (>= 2.5 V for any lithium chemistry) or a mis-scaled voltage exceeds it, whatever the pack
/// size (a relative bound would miss a missing cell in a 24S pack at 5 %).
pub const PACK_VS_CELLS_TOLERANCE_V: f64 = 1.0;

/// The read-only registers blebatt asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Register {
    /// Pack voltage, current, capacity, temperatures, protection, FETs.
    BasicInfo = 0x03,
    /// Cell voltages, 2 bytes each, mV.
    CellVoltages = 0x04,
    /// Hardware / device name, ASCII.
    DeviceName = 0x05,
}

impl Register {
    pub fn code(self) -> u8 {
        self as u8
    }

    /// What a request of it is called in messages.
    pub fn request_name(self) -> &'static str {
        match self {
            Register::BasicInfo => "register 0x03",
            Register::CellVoltages => "register 0x04",
            Register::DeviceName => "register 0x05",
        }
    }
}

/// Reply status byte meanings (JBD protocol V4).
pub fn status_meaning(status: u8) -> &'static str {
    match status {
        0x00 => "ok",
        0x80 => "unknown command",
        0x81 => "not allowed",
        0x82 => "checksum error in request",
        0x83 => "password error",
        _ => "undocumented status",
    }
}

/// Frame checksum: (0x10000 - sum(bytes)) & 0xFFFF, over status/len/data for replies and
/// register/len/data for requests.
pub fn checksum(bytes: &[u8]) -> u16 {
    let sum = bytes.iter().fold(0u32, |acc, &b| acc + u32::from(b));
    (0x1_0000u32.wrapping_sub(sum) & 0xFFFF) as u16
}

/// A read request: `DD A5 <reg> 00 <chk_hi> <chk_lo> 77`.
pub fn read_request(register: Register) -> [u8; 7] {
    let reg = register.code();
    let [hi, lo] = checksum(&[reg, 0]).to_be_bytes();
    [START, READ, reg, 0, hi, lo, END]
}

/// Parses a read request as written to the BMS; `None` if it is not one.
pub fn parse_read_request(bytes: &[u8]) -> Option<u8> {
    match bytes {
        [START, READ, reg, 0, hi, lo, END]
            if checksum(&[*reg, 0]) == u16::from_be_bytes([*hi, *lo]) =>
        {
            Some(*reg)
        }
        _ => None,
    }
}

/// Encodes a reply frame as the BMS would send it (used by the demo devices).
pub fn encode_reply(register: u8, status: u8, data: &[u8]) -> Vec<u8> {
    assert!(
        data.len() <= usize::from(u8::MAX),
        "JBD data is at most 255 bytes"
    );
    let mut frame = Vec::with_capacity(data.len() + FRAME_OVERHEAD);
    frame.extend_from_slice(&[START, register, status, data.len() as u8]);
    frame.extend_from_slice(data);
    let chk = checksum(&frame[2..]);
    frame.extend_from_slice(&chk.to_be_bytes());
    frame.push(END);
    frame
}

/// A complete, checksum-verified reply frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub register: u8,
    pub status: u8,
    pub data: Vec<u8>,
}

impl Frame {
    /// Checks that this is an OK reply for `register`.
    pub fn expect(&self, register: Register) -> Result<&[u8], JbdError> {
        if self.register != register.code() {
            return Err(JbdError::WrongRegister {
                expected: register.code(),
                got: self.register,
            });
        }
        if self.status != 0 {
            return Err(JbdError::Status {
                register: self.register,
                status: self.status,
                meaning: status_meaning(self.status),
            });
        }
        Ok(&self.data)
    }
}

/// Everything that can be wrong with a JBD frame or its contents.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum JbdError {
    #[error(
        "checksum mismatch in 0x{register:02X} reply: expected 0x{expected:04X}, got 0x{actual:04X}"
    )]
    BadChecksum {
        register: u8,
        expected: u16,
        actual: u16,
    },
    #[error("0x{register:02X} reply does not end with 0x77 (got 0x{got:02X}): frame is corrupt")]
    BadEnd { register: u8, got: u8 },
    #[error(
        "0x{register:02X} reply claims {len} data bytes, more than the {max} any JBD register has"
    )]
    Oversize { register: u8, len: u8, max: u8 },
    #[error("BMS answered 0x{register:02X} with status 0x{status:02X} ({meaning})")]
    Status {
        register: u8,
        status: u8,
        meaning: &'static str,
    },
    #[error("0x{register:02X} reply truncated: needs {need} data bytes, has {got}")]
    Truncated {
        register: u8,
        need: usize,
        got: usize,
    },
    #[error("expected a reply to register 0x{expected:02X}, got one for 0x{got:02X}")]
    WrongRegister { expected: u8, got: u8 },
    #[error("0x04 reply has {len} data bytes: cell voltages come in pairs, 1 to 32 cells")]
    BadCellData { len: usize },
    #[error("0x{register:02X} frame cut short: {have} of {need} bytes, then a valid frame started")]
    CutShort {
        register: u8,
        have: usize,
        need: usize,
    },
    #[error("incomplete frame: {have} of {need} bytes received")]
    Incomplete { have: usize, need: usize },
    #[error("no frame start (0xDD) in the input")]
    NoFrame,
}

/// Reassembles notifications into frames by the length byte.
///
/// Push chunks of any size as they arrive. Every 0xDD followed by a plausible status byte is a
/// candidate frame start; the earliest candidate that holds a complete frame with a valid
/// checksum and end byte comes out as a frame, wherever it sits in what is buffered. Candidates
/// before it come out as errors and are skipped: a broken frame (bad checksum or end byte,
/// impossible length) and a truncated one (a new frame started before its length was
/// reached) never swallow or block the real reply behind them. Bytes that start no candidate
/// (e.g. trailing zero padding) are dropped. A trailing 0x77 is never taken as end-of-frame:
/// only the length byte decides.
///
/// The buffer is bounded: it only ever holds the tail of one candidate that is still short of
/// its length, so less than [`MAX_FRAME_LEN`] bytes stay between pushes.
#[derive(Debug, Default, Clone)]
pub struct Reassembler {
    buf: Vec<u8>,
}

/// Header is start, register, status, len.
const HEADER_LEN: usize = 4;
/// Longest frame the reassembler accepts, bytes.
pub const MAX_FRAME_LEN: usize = MAX_DATA_LEN as usize + FRAME_OVERHEAD;

fn plausible_status(status: u8) -> bool {
    status == 0x00 || (0x80..=0x83).contains(&status)
}

/// What the bytes from one 0xDD onwards are.
enum Candidate {
    /// Not a frame start (the status byte is not one a BMS sends).
    NotAStart,
    /// Could still become a frame: `need` bytes in all (0 while the length byte is missing).
    Short { need: usize },
    /// Complete and verified; `len` bytes long.
    Frame { frame: Frame, len: usize },
    /// Cannot be a frame.
    Broken(JbdError),
}

fn candidate(bytes: &[u8]) -> Candidate {
    debug_assert_eq!(bytes.first(), Some(&START));
    if bytes.len() >= 3 && !plausible_status(bytes[2]) {
        return Candidate::NotAStart;
    }
    if bytes.len() < HEADER_LEN {
        return Candidate::Short { need: 0 };
    }
    let (register, len) = (bytes[1], bytes[3]);
    if len > MAX_DATA_LEN {
        return Candidate::Broken(JbdError::Oversize {
            register,
            len,
            max: MAX_DATA_LEN,
        });
    }
    let total = usize::from(len) + FRAME_OVERHEAD;
    if bytes.len() < total {
        return Candidate::Short { need: total };
    }
    match check_frame(&bytes[..total]) {
        Ok(frame) => Candidate::Frame { frame, len: total },
        Err(e) => Candidate::Broken(e),
    }
}

impl Reassembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets any partial frame (e.g. after a timeout or a reconnect).
    pub fn reset(&mut self) {
        self.buf.clear();
    }

    /// Bytes held waiting for the rest of a frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Feeds one notification; returns, in stream order, the frames it completed and the
    /// broken or truncated candidates skipped on the way (as errors).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Result<Frame, JbdError>> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        loop {
            // Candidates before the first complete frame: broken ones, and short ones (each
            // with where it starts and what it needs).
            let mut skipped: Vec<(usize, Result<usize, JbdError>)> = Vec::new();
            let mut found = None;
            for i in (0..self.buf.len()).filter(|&i| self.buf[i] == START) {
                match candidate(&self.buf[i..]) {
                    Candidate::NotAStart => {}
                    Candidate::Short { need } => skipped.push((i, Ok(need))),
                    Candidate::Broken(e) => skipped.push((i, Err(e))),
                    Candidate::Frame { frame, len } => {
                        found = Some((i, frame, len));
                        break;
                    }
                }
            }
            match found {
                Some((at, frame, len)) => {
                    // Everything before the frame is skipped, short candidates included: a
                    // frame that a new one interrupted is cut short.
                    for (i, item) in skipped {
                        out.push(Err(match item {
                            Err(e) => e,
                            Ok(need) => JbdError::CutShort {
                                register: self.buf[i + 1],
                                have: at - i,
                                need,
                            },
                        }));
                    }
                    out.push(Ok(frame));
                    self.buf.drain(..at + len);
                }
                None => {
                    // Keep from the first candidate that may still complete; what is before it
                    // is skipped. Broken candidates after it are looked at again (and reported
                    // once) when it resolves.
                    let keep = skipped
                        .iter()
                        .position(|(_, item)| item.is_ok())
                        .map_or(self.buf.len(), |k| skipped[k].0);
                    for (i, item) in skipped {
                        if i >= keep {
                            break;
                        }
                        if let Err(e) = item {
                            out.push(Err(e));
                        }
                    }
                    self.buf.drain(..keep);
                    debug_assert!(self.buf.len() < MAX_FRAME_LEN);
                    return out;
                }
            }
        }
    }
}

/// Verifies one exact frame (start, end and checksum).
fn check_frame(frame: &[u8]) -> Result<Frame, JbdError> {
    let register = frame[1];
    let status = frame[2];
    let len = usize::from(frame[3]);
    let data_end = HEADER_LEN + len;
    let end = frame[data_end + 2];
    let expected = checksum(&frame[2..data_end]);
    let actual = u16::from_be_bytes([frame[data_end], frame[data_end + 1]]);
    if expected != actual {
        return Err(JbdError::BadChecksum {
            register,
            expected,
            actual,
        });
    }
    if end != END {
        return Err(JbdError::BadEnd { register, got: end });
    }
    Ok(Frame {
        register,
        status,
        data: frame[HEADER_LEN..data_end].to_vec(),
    })
}

/// Parses exactly one frame from a byte string (the whole frame, perhaps with padding after it).
/// Used by `blebatt decode` on captured frames.
pub fn parse_frame(bytes: &[u8]) -> Result<Frame, JbdError> {
    let mut r = Reassembler::new();
    let mut first_err = None;
    for item in r.push(bytes) {
        match item {
            Ok(frame) => return Ok(frame),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    if r.pending() >= HEADER_LEN {
        let need = usize::from(r.buf[3]) + FRAME_OVERHEAD;
        return Err(JbdError::Incomplete {
            have: r.pending(),
            need,
        });
    }
    Err(JbdError::NoFrame)
}

/// Production date as the BMS stores it: year 2000 + bits 15..9, month 8..5, day 4..0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProductionDate {
    pub year: u16,
    pub month: u8,
    pub day: u8,
}

impl ProductionDate {
    /// Months a date can have.
    pub const MONTHS: std::ops::RangeInclusive<u8> = 1..=12;
    /// Days a date can have (the 5-bit field holds at most 31).
    pub const DAYS: std::ops::RangeInclusive<u8> = 1..=31;

    /// `None` when the month is not in [`Self::MONTHS`] or the day not in [`Self::DAYS`]
    /// (e.g. raw 0, `2000-00-00`).
    pub fn from_raw(raw: u16) -> Option<Self> {
        let date = ProductionDate {
            year: 2000 + (raw >> 9),
            month: ((raw >> 5) & 0x0F) as u8,
            day: (raw & 0x1F) as u8,
        };
        (Self::MONTHS.contains(&date.month) && Self::DAYS.contains(&date.day)).then_some(date)
    }
}

impl std::fmt::Display for ProductionDate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// Protection status bits of register 0x03, each with its field key in the `jbd_bms` schema.
/// Bits 0-12 from protocol V4; 13 and 14 added in V11; 15 reserved.
pub const PROTECTION_BITS: [(u8, &str); 15] = [
    (0, "protection_cell_overvoltage"),
    (1, "protection_cell_undervoltage"),
    (2, "protection_pack_overvoltage"),
    (3, "protection_pack_undervoltage"),
    (4, "protection_charge_overtemperature"),
    (5, "protection_charge_undertemperature"),
    (6, "protection_discharge_overtemperature"),
    (7, "protection_discharge_undertemperature"),
    (8, "protection_charge_overcurrent"),
    (9, "protection_discharge_overcurrent"),
    (10, "protection_short_circuit"),
    (11, "protection_frontend_ic_error"),
    (12, "protection_mosfet_software_lock"),
    (13, "protection_charge_mosfet_breakdown"),
    (14, "protection_discharge_mosfet_breakdown"),
];

/// The protection status word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Protection(pub u16);

impl Protection {
    pub fn is_set(self, bit: u8) -> bool {
        self.0 & (1 << bit) != 0
    }

    /// Every named flag with its state.
    pub fn flags(self) -> impl Iterator<Item = (&'static str, bool)> {
        PROTECTION_BITS
            .iter()
            .map(move |&(bit, name)| (name, self.is_set(bit)))
    }

    /// Names of the active protections.
    pub fn active(self) -> Vec<&'static str> {
        self.flags().filter(|&(_, on)| on).map(|(n, _)| n).collect()
    }
}

/// Fields V11 firmware may append after the NTC temperatures; each present only when the
/// reply's length covers it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct V11Extras {
    pub humidity_percent: Option<u8>,
    pub alarm: Option<u16>,
    pub full_charge_capacity_ah: Option<f64>,
    pub remaining_capacity_ah: Option<f64>,
    /// Balance current, raw (the unit is not documented consistently).
    pub balance_current_raw: Option<u16>,
}

/// Register 0x03: basic pack information.
#[derive(Debug, Clone, PartialEq)]
pub struct BasicInfo {
    pub voltage_v: f64,
    /// Positive while charging, negative while discharging.
    pub current_a: f64,
    pub remaining_capacity_ah: f64,
    pub nominal_capacity_ah: f64,
    pub cycles: u16,
    /// `None` when the BMS holds no real date (month or day 0, month > 12).
    pub production_date: Option<ProductionDate>,
    /// Balancing cells: bit 0 = cell 1 ... bit 31 = cell 32.
    pub balancing: u32,
    pub protection: Protection,
    /// Software version byte: 0x80 means "8.0".
    pub software_version: u8,
    /// `None` above 100 %.
    pub soc_percent: Option<u8>,
    pub charge_fet_on: bool,
    pub discharge_fet_on: bool,
    pub cell_count: u8,
    /// One per NTC the BMS reports, in its order; `None` where the reading is outside
    /// [`NTC_MIN_C`]..=[`NTC_MAX_C`].
    pub temperatures_c: Vec<Option<f64>>,
    pub v11: V11Extras,
    /// Values the BMS sent that it cannot mean, left out above.
    pub omitted: Vec<Omitted>,
}

// Register 0x03 data offsets (bytes, big-endian).
const OFF_VOLTAGE_10MV: usize = 0;
const OFF_CURRENT_10MA: usize = 2;
const OFF_REMAINING_10MAH: usize = 4;
const OFF_NOMINAL_10MAH: usize = 6;
const OFF_CYCLES: usize = 8;
const OFF_DATE: usize = 10;
const OFF_BALANCE_LOW: usize = 12;
const OFF_BALANCE_HIGH: usize = 14;
const OFF_PROTECTION: usize = 16;
const OFF_VERSION: usize = 18;
const OFF_RSOC_PERCENT: usize = 19;
const OFF_FET: usize = 20;
const OFF_CELL_COUNT: usize = 21;
const OFF_NTC_COUNT: usize = 22;
const OFF_NTC_FIRST: usize = 23;
const FET_CHARGE_BIT: u8 = 0x01;
const FET_DISCHARGE_BIT: u8 = 0x02;

fn be16(data: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([data[off], data[off + 1]])
}

/// An NTC reading (0.1 K) in degC; `None` outside [`NTC_MIN_C`]..=[`NTC_MAX_C`].
pub fn ntc_celsius(raw_deci_kelvin: u16) -> Option<f64> {
    let deci_c = i32::from(raw_deci_kelvin) - NTC_OFFSET_DECI_KELVIN;
    let window = i32::from(NTC_MIN_C) * 10..=i32::from(NTC_MAX_C) * 10;
    window.contains(&deci_c).then(|| f64::from(deci_c) / 10.0)
}

/// RSOC byte, %; `None` above [`SOC_MAX_PERCENT`].
pub fn soc_percent(raw: u8) -> Option<u8> {
    (raw <= SOC_MAX_PERCENT).then_some(raw)
}

/// V11 humidity byte, %; `None` outside [`HUMIDITY_MIN_PERCENT`]..=[`HUMIDITY_MAX_PERCENT`].
pub fn humidity_percent(raw: u8) -> Option<u8> {
    (HUMIDITY_MIN_PERCENT..=HUMIDITY_MAX_PERCENT)
        .contains(&raw)
        .then_some(raw)
}

/// Bytes after the NTCs that are padding, not V11 fields: all 0x00 or all 0xFF (what dongles
/// and older firmware fill a fixed-size reply with). Real V11 fields are never all zero: the
/// full-charge capacity of a pack is not 0 Ah.
pub fn is_padding(tail: &[u8]) -> bool {
    !tail.is_empty() && (tail.iter().all(|&b| b == 0x00) || tail.iter().all(|&b| b == 0xFF))
}

/// 10 mV / 10 mA / 10 mAh units to V / A / Ah.
fn centi(raw: f64) -> f64 {
    raw / 100.0
}

impl BasicInfo {
    pub fn parse(frame: &Frame) -> Result<Self, JbdError> {
        let data = frame.expect(Register::BasicInfo)?;
        let truncated = |need: usize| JbdError::Truncated {
            register: Register::BasicInfo.code(),
            need,
            got: data.len(),
        };
        if data.len() < OFF_NTC_FIRST {
            return Err(truncated(OFF_NTC_FIRST));
        }
        let ntc_count = usize::from(data[OFF_NTC_COUNT]);
        let ntc_end = OFF_NTC_FIRST + 2 * ntc_count;
        if data.len() < ntc_end {
            return Err(truncated(ntc_end));
        }
        let mut omitted = Vec::new();
        let temperatures_c = (0..ntc_count)
            .map(|i| {
                let raw = be16(data, OFF_NTC_FIRST + 2 * i);
                let t = ntc_celsius(raw);
                if t.is_none() {
                    omitted.push(
                        Omitted::new(
                            "NTC temperature (0.1 K)",
                            raw,
                            format!("{NTC_MIN_C}..={NTC_MAX_C} degC"),
                        )
                        .nth(i + 1),
                    );
                }
                t
            })
            .collect();

        let rsoc = data[OFF_RSOC_PERCENT];
        let soc = soc_percent(rsoc);
        if soc.is_none() {
            omitted.push(Omitted::new(
                "RSOC (%)",
                rsoc,
                format!("0..={SOC_MAX_PERCENT} %"),
            ));
        }
        let date_raw = be16(data, OFF_DATE);
        let production_date = ProductionDate::from_raw(date_raw);
        if production_date.is_none() {
            omitted.push(Omitted::new(
                "production date",
                date_raw,
                format!(
                    "month {:?} and day {:?}",
                    ProductionDate::MONTHS,
                    ProductionDate::DAYS
                ),
            ));
        }

        let v11 = Self::parse_v11(&data[ntc_end..], &mut omitted);
        let fet = data[OFF_FET];
        Ok(BasicInfo {
            voltage_v: centi(f64::from(be16(data, OFF_VOLTAGE_10MV))),
            current_a: centi(f64::from(be16(data, OFF_CURRENT_10MA) as i16)),
            remaining_capacity_ah: centi(f64::from(be16(data, OFF_REMAINING_10MAH))),
            nominal_capacity_ah: centi(f64::from(be16(data, OFF_NOMINAL_10MAH))),
            cycles: be16(data, OFF_CYCLES),
            production_date,
            // Two big-endian words, cells 17..32 in the second: one u32, high word first.
            balancing: u32::from_be_bytes([
                data[OFF_BALANCE_HIGH],
                data[OFF_BALANCE_HIGH + 1],
                data[OFF_BALANCE_LOW],
                data[OFF_BALANCE_LOW + 1],
            ]),
            protection: Protection(be16(data, OFF_PROTECTION)),
            software_version: data[OFF_VERSION],
            soc_percent: soc,
            charge_fet_on: fet & FET_CHARGE_BIT != 0,
            discharge_fet_on: fet & FET_DISCHARGE_BIT != 0,
            cell_count: data[OFF_CELL_COUNT],
            temperatures_c,
            v11,
            omitted,
        })
    }

    /// V11 trailer: humidity u8, alarm u16, full capacity u16, remaining u16, balance u16;
    /// each read only when the length covers it, none when the tail is padding.
    fn parse_v11(tail: &[u8], omitted: &mut Vec<Omitted>) -> V11Extras {
        if is_padding(tail) {
            omitted.push(Omitted::new(
                "V11 fields after the NTCs",
                tail[0],
                format!("V11 data, not {} bytes of padding", tail.len()),
            ));
            return V11Extras::default();
        }
        let u16_at = |off: usize| (tail.len() >= off + 2).then(|| be16(tail, off));
        let humidity = tail.first().copied();
        let humidity_percent = humidity.and_then(humidity_percent);
        if let (Some(raw), None) = (humidity, humidity_percent) {
            omitted.push(Omitted::new(
                "V11 humidity (%)",
                raw,
                format!("{HUMIDITY_MIN_PERCENT}..={HUMIDITY_MAX_PERCENT} %"),
            ));
        }
        let full = u16_at(3);
        if full == Some(0) {
            omitted.push(Omitted::new(
                "V11 full-charge capacity (10 mAh)",
                0u16,
                "more than 0 Ah",
            ));
        }
        V11Extras {
            humidity_percent,
            alarm: u16_at(1),
            full_charge_capacity_ah: full.filter(|&r| r > 0).map(|r| centi(f64::from(r))),
            remaining_capacity_ah: u16_at(5).map(|r| centi(f64::from(r))),
            balance_current_raw: u16_at(7),
        }
    }

    /// "8.0" for 0x80: high nibble major, low nibble minor.
    pub fn software_version_string(&self) -> String {
        format!(
            "{}.{}",
            self.software_version >> 4,
            self.software_version & 0x0F
        )
    }

    /// Pack power, W (positive while charging).
    pub fn power_w(&self) -> f64 {
        self.voltage_v * self.current_a
    }
}

/// A pack voltage farther than [`PACK_VS_CELLS_TOLERANCE_V`] from the sum of its cells.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PackMismatch {
    pub pack_v: f64,
    pub cells_sum_v: f64,
}

impl std::fmt::Display for PackMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pack voltage {:.2} V (register 0x03) is {:.2} V from the sum of its cells, {:.3} V \
             (register 0x04; more than {PACK_VS_CELLS_TOLERANCE_V} V): a cell or the pack voltage is misread",
            self.pack_v,
            (self.pack_v - self.cells_sum_v).abs(),
            self.cells_sum_v
        )
    }
}

/// Checks the pack voltage against the sum of the cells (whatever their number: a cell
/// missing from 0x04 is exactly what this catches).
pub fn pack_vs_cells(info: &BasicInfo, cells: &CellVoltages) -> Option<PackMismatch> {
    let cells_sum_v: f64 = cells.volts.iter().sum();
    ((info.voltage_v - cells_sum_v).abs() > PACK_VS_CELLS_TOLERANCE_V).then_some(PackMismatch {
        pack_v: info.voltage_v,
        cells_sum_v,
    })
}

/// Register 0x04: cell voltages.
#[derive(Debug, Clone, PartialEq)]
pub struct CellVoltages {
    pub volts: Vec<f64>,
}

impl CellVoltages {
    pub fn parse(frame: &Frame) -> Result<Self, JbdError> {
        let data = frame.expect(Register::CellVoltages)?;
        if data.is_empty() || data.len() % 2 != 0 || data.len() / 2 > MAX_CELLS {
            return Err(JbdError::BadCellData { len: data.len() });
        }
        let volts = data
            .chunks_exact(2)
            .map(|c| f64::from(u16::from_be_bytes([c[0], c[1]])) / 1000.0)
            .collect();
        Ok(CellVoltages { volts })
    }

    pub fn min(&self) -> f64 {
        self.volts.iter().copied().fold(f64::INFINITY, f64::min)
    }

    pub fn max(&self) -> f64 {
        self.volts.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }

    pub fn avg(&self) -> f64 {
        self.volts.iter().sum::<f64>() / self.volts.len() as f64
    }

    pub fn delta(&self) -> f64 {
        self.max() - self.min()
    }
}

/// Register 0x05: the device / hardware name.
pub fn parse_device_name(frame: &Frame) -> Result<String, JbdError> {
    let data = frame.expect(Register::DeviceName)?;
    let name: String = String::from_utf8_lossy(data)
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    Ok(name.trim().to_string())
}

/// Everything one JBD poll produced.
#[derive(Debug, Clone, PartialEq)]
pub struct JbdReading {
    pub info: BasicInfo,
    pub cells: CellVoltages,
    /// Name from register 0x05, when the BMS has one.
    pub model: Option<String>,
}

impl JbdReading {
    /// Values left out of the reading because the BMS cannot mean them.
    pub fn omitted(&self) -> &[Omitted] {
        &self.info.omitted
    }

    /// `Some` when the pack voltage disagrees with the sum of the cells: printed as read, but
    /// worth a warning (a cell or the pack voltage is misread).
    pub fn pack_mismatch(&self) -> Option<PackMismatch> {
        pack_vs_cells(&self.info, &self.cells)
    }
}

#[cfg(test)]
pub(crate) mod tests;

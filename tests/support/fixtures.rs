//! Realistic device payloads, built by small encoders of our own (independent of the crate's
//! decoders, so tests compare against values written down here, not against the code under
//! test). Layouts: /work/shared/notes/protocols.md.

#![allow(dead_code)]

use std::collections::BTreeMap;

use super::mock_bluez::jbd_frame;

/// JBD register 0x03 "basic info", in engineering units of the wire (all big-endian).
#[derive(Clone, Debug, PartialEq)]
pub struct JbdBasic {
    /// Pack voltage in 10 mV.
    pub voltage_10mv: u16,
    /// Current in 10 mA, + charging, - discharging.
    pub current_10ma: i16,
    /// Remaining capacity in 10 mAh.
    pub remaining_10mah: u16,
    /// Nominal capacity in 10 mAh.
    pub nominal_10mah: u16,
    pub cycles: u16,
    /// (year, month, day); year >= 2000.
    pub date: (u16, u8, u8),
    /// Balance bits, cells 1-32 (low 16 bits: cells 1-16).
    pub balance: u32,
    pub protection: u16,
    pub version: u8,
    pub rsoc: u8,
    /// bit0 charge MOS, bit1 discharge MOS.
    pub fet: u8,
    pub cells: u8,
    /// NTC readings in 0.1 K (degC = (raw - 2731) / 10).
    pub ntc_raw: Vec<u16>,
    /// Bytes appended after the NTCs (V11 extension fields), if any.
    pub extra: Vec<u8>,
}

impl JbdBasic {
    pub fn date_word(&self) -> u16 {
        let (y, m, d) = self.date;
        ((y - 2000) << 9) | (u16::from(m) << 5) | u16::from(d)
    }

    pub fn data(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(23 + 2 * self.ntc_raw.len() + self.extra.len());
        v.extend_from_slice(&self.voltage_10mv.to_be_bytes());
        v.extend_from_slice(&self.current_10ma.to_be_bytes());
        v.extend_from_slice(&self.remaining_10mah.to_be_bytes());
        v.extend_from_slice(&self.nominal_10mah.to_be_bytes());
        v.extend_from_slice(&self.cycles.to_be_bytes());
        v.extend_from_slice(&self.date_word().to_be_bytes());
        v.extend_from_slice(&((self.balance & 0xFFFF) as u16).to_be_bytes());
        v.extend_from_slice(&((self.balance >> 16) as u16).to_be_bytes());
        v.extend_from_slice(&self.protection.to_be_bytes());
        v.push(self.version);
        v.push(self.rsoc);
        v.push(self.fet);
        v.push(self.cells);
        v.push(self.ntc_raw.len() as u8);
        for t in &self.ntc_raw {
            v.extend_from_slice(&t.to_be_bytes());
        }
        v.extend_from_slice(&self.extra);
        v
    }

    pub fn frame(&self) -> Vec<u8> {
        jbd_frame(0x03, 0x00, &self.data())
    }
}

/// Register 0x04 reply: cell voltages in mV.
pub fn jbd_cells_frame(cells_mv: &[u16]) -> Vec<u8> {
    let data: Vec<u8> = cells_mv.iter().flat_map(|c| c.to_be_bytes()).collect();
    jbd_frame(0x04, 0x00, &data)
}

/// Register 0x05 reply: ASCII device name.
pub fn jbd_name_frame(name: &str) -> Vec<u8> {
    jbd_frame(0x05, 0x00, name.as_bytes())
}

/// A whole simulated JBD pack: what it answers for registers 0x03, 0x04, 0x05.
#[derive(Clone, Debug, PartialEq)]
pub struct JbdPack {
    pub basic: JbdBasic,
    pub cells_mv: Vec<u16>,
    pub name: String,
}

impl JbdPack {
    pub fn replies(&self) -> BTreeMap<u8, Vec<u8>> {
        BTreeMap::from([
            (0x03, self.basic.frame()),
            (0x04, jbd_cells_frame(&self.cells_mv)),
            (0x05, jbd_name_frame(&self.name)),
        ])
    }
}

/// 4-cell 12 V LiFePO4 pack, 100 Ah, discharging at 1.50 A: 13.28 V, 2 NTCs (25.3 and 24.8 degC).
pub fn pack_4s() -> JbdPack {
    let cells_mv = vec![3320, 3322, 3318, 3320];
    JbdPack {
        basic: JbdBasic {
            voltage_10mv: 1328,
            current_10ma: -150,
            remaining_10mah: 7500,
            nominal_10mah: 10000,
            cycles: 42,
            date: (2023, 6, 15),
            balance: 0,
            protection: 0,
            version: 0x10,
            rsoc: 75,
            fet: 0x03,
            cells: 4,
            ntc_raw: vec![2731 + 253, 2731 + 248],
            extra: vec![],
        },
        cells_mv,
        name: "SP04S034-L4S-100A".to_string(),
    }
}

/// 16-cell 48 V LiFePO4 pack, 280 Ah, charging at 12.34 A: 53.12 V, 3 NTCs, cells 3 and 10
/// balancing. Chosen so that the frames hold 0xDD and 0x77 bytes inside their data (cell 5 is
/// 3293 mV = 0x0CDD, the last NTC is 2935 = 0x0B77, the last data byte of the 0x03 reply),
/// which a reassembler that looks for delimiters instead of the length gets wrong.
pub fn pack_16s() -> JbdPack {
    let cells_mv = vec![
        3320, 3321, 3319, 3322, 3293, 3320, 3318, 3321, 3320, 3347, 3319, 3320, 3322, 3318, 3321,
        3319,
    ];
    debug_assert_eq!(cells_mv.iter().map(|&c| u32::from(c)).sum::<u32>(), 53120);
    JbdPack {
        basic: JbdBasic {
            voltage_10mv: 5312,
            current_10ma: 1234,
            remaining_10mah: 18200,
            nominal_10mah: 28000,
            cycles: 318,
            date: (2022, 11, 3),
            balance: (1 << 2) | (1 << 9),
            protection: 0,
            version: 0x22,
            rsoc: 65,
            fet: 0x03,
            cells: 16,
            ntc_raw: vec![2731 + 221, 2731 + 218, 2935],
            extra: vec![],
        },
        cells_mv,
        name: "AP21S002-L16S-280A".to_string(),
    }
}

/// Thornwave PowerMon, firmware 2.03 and older: the 52-byte little-endian record.
#[derive(Clone, Debug, PartialEq)]
pub struct PowerMonOld {
    pub head: [u8; 3],
    /// State of charge in half percent (value / 2 = %).
    pub soc_half: u8,
    pub voltage1: f32,
    pub voltage2: f32,
    pub current: f32,
    pub power: f32,
    pub temperature: f32,
    pub energy_mwh: i64,
    pub charge_mah: i64,
    pub uptime_s: u32,
    /// Packed date: year-2017 bits 26-31, month 22-25, day 17-21, hour 12-16, min 6-11, sec 0-5.
    pub datetime: u32,
    pub peak_current: f32,
}

pub fn powermon_old_datetime(y: u32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> u32 {
    ((y - 2017) << 26) | (mo << 22) | (d << 17) | (h << 12) | (mi << 6) | s
}

impl PowerMonOld {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(52);
        v.extend_from_slice(&self.head);
        v.push(self.soc_half);
        for f in [
            self.voltage1,
            self.voltage2,
            self.current,
            self.power,
            self.temperature,
        ] {
            v.extend_from_slice(&f.to_le_bytes());
        }
        v.extend_from_slice(&self.energy_mwh.to_le_bytes());
        v.extend_from_slice(&self.charge_mah.to_le_bytes());
        v.extend_from_slice(&self.uptime_s.to_le_bytes());
        v.extend_from_slice(&self.datetime.to_le_bytes());
        v.extend_from_slice(&self.peak_current.to_le_bytes());
        assert_eq!(v.len(), 52);
        v
    }
}

/// A house battery at 85 %, 13.31 V, discharging 4.25 A.
pub fn powermon_old_sample() -> PowerMonOld {
    PowerMonOld {
        head: [0x01, 0x00, 0x00],
        soc_half: 170,
        voltage1: 13.31,
        voltage2: 13.30,
        current: -4.25,
        power: -56.57,
        temperature: 21.5,
        energy_mwh: -1_234_567,
        charge_mah: -98_765,
        uptime_s: 3 * 86_400 + 4_321,
        datetime: powermon_old_datetime(2024, 3, 10, 12, 34, 56),
        peak_current: 35.2,
    }
}

/// Thornwave PowerMon, newer firmware: 51 data bytes, little-endian, sent COBS-framed (54 bytes).
#[derive(Clone, Debug, PartialEq)]
pub struct PowerMonNew {
    /// BCD, 0x0231 = 2.31.
    pub firmware: u16,
    /// BCD, 0x23.
    pub hardware: u8,
    /// Seconds since 1970, device local time.
    pub time: u32,
    pub flags: u32,
    pub voltage1: f32,
    pub voltage2: f32,
    pub current: f32,
    pub power: f32,
    pub coulomb_mah: i64,
    pub energy_mwh: i64,
    pub temperature: f32,
    pub power_status: u8,
    /// %, 0xFF fuel gauge disabled, 0xFE unknown.
    pub soc: u8,
    /// Minutes, 0xFFFF disabled, 0xFFFE unknown.
    pub runtime_min: u16,
}

impl PowerMonNew {
    /// The 51 data bytes, before COBS.
    pub fn data(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(51);
        v.extend_from_slice(&self.firmware.to_le_bytes());
        v.push(self.hardware);
        v.extend_from_slice(&self.time.to_le_bytes());
        v.extend_from_slice(&self.flags.to_le_bytes());
        for f in [self.voltage1, self.voltage2, self.current, self.power] {
            v.extend_from_slice(&f.to_le_bytes());
        }
        v.extend_from_slice(&self.coulomb_mah.to_le_bytes());
        v.extend_from_slice(&self.energy_mwh.to_le_bytes());
        v.extend_from_slice(&self.temperature.to_le_bytes());
        v.push(self.power_status);
        v.push(self.soc);
        v.extend_from_slice(&self.runtime_min.to_le_bytes());
        assert_eq!(v.len(), 51);
        v
    }

    /// The 54-byte characteristic value: 0x00, COBS(data), 0x00.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![0x00];
        v.extend(cobs_encode(&self.data()));
        v.push(0x00);
        v
    }
}

/// A 12 V system at 92 %, 13.42 V, charging 8.5 A, firmware 2.31.
pub fn powermon_new_sample() -> PowerMonNew {
    PowerMonNew {
        firmware: 0x0231,
        hardware: 0x23,
        time: 1_710_074_096,
        flags: 0,
        voltage1: 13.42,
        voltage2: 0.0,
        current: 8.5,
        power: 114.07,
        coulomb_mah: 12_345,
        energy_mwh: 165_432,
        temperature: 19.75,
        power_status: 1,
        soc: 92,
        runtime_min: 0xFFFF,
    }
}

/// Consistent Overhead Byte Stuffing, without the trailing delimiter.
pub fn cobs_encode(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 254 + 1);
    let mut code_pos = 0;
    out.push(0);
    let mut code: u8 = 1;
    for &b in data {
        if b == 0 {
            out[code_pos] = code;
            code_pos = out.len();
            out.push(0);
            code = 1;
        } else {
            out.push(b);
            code += 1;
            if code == 0xFF {
                out[code_pos] = code;
                code_pos = out.len();
                out.push(0);
                code = 1;
            }
        }
    }
    out[code_pos] = code;
    out
}

/// Inverse of [`cobs_encode`]; `None` on malformed input.
pub fn cobs_decode(enc: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(enc.len());
    let mut i = 0;
    while i < enc.len() {
        let code = enc[i] as usize;
        if code == 0 || i + code > enc.len() {
            return None;
        }
        out.extend_from_slice(&enc[i + 1..i + code]);
        i += code;
        if code < 0xFF && i < enc.len() {
            out.push(0);
        }
    }
    Some(out)
}

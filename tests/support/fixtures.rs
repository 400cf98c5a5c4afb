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

// JK02 records captured by patman15/aiobmsble (tests/bms/test_jikong_bms.py): the mock's
// own copies, so that a product-side typo fails a test instead of being mirrored.

pub const JK_DEVICE_INFO_24S: &str = "\
     55 aa eb 90 03 79 4a 4b 2d 42 32 41 32 30 53 32 30 50 00 00 \
     00 00 31 30 2e 58 47 00 00 00 31 30 2e 30 38 00 00 00 e4 e7 \
     6c 03 11 00 00 00 4a 4b 2d 42 4d 53 2d 41 00 00 00 00 00 00 \
     00 00 31 32 33 34 00 00 00 00 00 00 00 00 00 00 00 00 32 32 \
     30 37 30 31 00 00 32 30 33 32 38 31 36 30 31 32 00 30 30 30 \
     30 00 4d 61 72 69 6f 00 00 00 00 00 00 00 00 61 00 00 31 32 \
     33 34 35 36 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 93";

pub const JK_CELL_INFO_24S: &str = "\
     55 aa eb 90 02 c8 ee 0c f2 0c f1 0c f0 0c f0 0c ec 0c f0 0c \
     ed 0c ed 0c ed 0c ed 0c f0 0c f1 0c ed 0c ee 0c ed 0c 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 ff ff 00 00 ef 0c \
     05 00 01 09 36 00 37 00 39 00 38 00 37 00 37 00 35 00 41 00 \
     42 00 36 00 37 00 3a 00 38 00 34 00 36 00 37 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 eb ce \
     00 00 c7 0d 02 00 19 09 00 00 b5 00 ba 00 e4 00 00 00 02 00 \
     00 38 5d ba 01 00 10 15 03 00 3c 00 00 00 a4 65 b9 00 64 00 \
     d9 02 8b e8 6c 03 01 01 b3 06 00 00 00 00 00 00 00 00 00 00 \
     00 00 07 00 01 00 00 00 23 04 0b 00 00 00 9f 19 40 40 00 00 \
     00 00 e2 04 00 00 00 00 00 01 00 03 00 00 83 d5 37 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 bd";

pub const JK_DEVICE_INFO_32S: &str = "\
     55 aa eb 90 03 a3 4a 4b 5f 42 32 41 38 53 32 30 50 00 00 00 \
     00 00 31 31 2e 58 41 00 00 00 31 31 2e 34 38 00 00 00 e4 a7 \
     46 00 07 00 00 00 31 32 76 34 32 30 61 00 00 00 00 00 00 00 \
     00 00 31 32 33 34 00 00 00 00 00 00 00 00 00 00 00 00 32 34 \
     30 37 30 34 00 00 34 30 34 30 39 32 43 32 32 36 32 00 30 30 \
     30 00 49 6e 70 75 74 20 55 73 65 72 64 61 74 61 00 00 31 34 \
     30 37 30 33 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 fe f9 ff ff 1f 2d 00 02 00 00 \
     00 00 90 1f 00 00 00 00 c0 d8 e7 32 00 00 00 01 00 00 00 00 \
     00 00 00 00 00 00 07 04 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 41 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 09 00 00 00 64 00 \
     00 00 5f 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 fe bf 21 06 00 00 00 00 00 00 00 00 d8";

pub const JK_CELL_INFO_32S: &str = "\
     55 aa eb 90 02 ad f3 0c f3 0c f3 0c f0 0c f1 0c f0 0c f1 0c \
     f1 0c 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 ff 00 00 00 f2 0c 03 00 00 07 \
     38 00 37 00 36 00 37 00 36 00 37 00 36 00 37 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 36 01 00 00 00 00 8d 67 00 00 60 db 02 00 69 e4 \
     ff ff 1c 01 24 01 00 00 00 00 00 00 00 44 80 2c 02 00 50 34 \
     03 00 15 00 00 00 bc 62 44 00 64 00 00 00 1e f3 68 00 01 01 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 ff 00 01 00 00 00 \
     f1 03 00 00 23 00 29 b4 3f 40 00 00 00 00 5a 0a 00 00 00 01 \
     00 01 00 06 00 00 ef 3d 08 04 00 00 00 00 36 01 00 00 00 00 \
     f1 03 64 39 67 00 1a 00 00 00 80 51 01 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 01 fe ff 7f dc 0f 01 00 80 03 00 00 00 b4";

pub const JK_CELL_INFO_32S_V15: &str = "\
     55 aa eb 90 02 ac 05 0d fe 0c fe 0c 01 0d 01 0d fd 0c fb 0c \
     01 0d fc 0c fb 0c fe 0c fb 0c f8 0c fb 0c fb 0c 09 0d 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 ff ff 00 00 ff 0c 10 00 0f 0c \
     40 00 3d 00 40 00 3d 00 41 00 3f 00 41 00 3e 00 41 00 3e 00 \
     41 00 3d 00 40 00 3e 00 41 00 3f 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
     00 00 00 00 81 00 00 00 00 00 e8 cf 00 00 4a e4 19 00 89 7c \
     00 00 86 00 80 00 00 00 00 00 00 00 00 19 86 c0 00 00 40 0d \
     03 00 09 00 00 00 b1 5f 1c 00 64 00 00 00 8c 4c 76 01 01 01 \
     00 00 00 00 00 00 00 00 00 00 00 00 00 00 ff 00 01 00 00 00 \
     05 04 52 00 00 00 d4 4e 40 40 00 00 00 00 ca 14 00 00 00 01 \
     01 01 00 06 00 00 ea 67 00 00 00 00 00 00 cd 00 c3 00 bf 00 \
     bd 03 28 7f 03 0a 1d 00 00 00 80 51 01 00 00 00 01 00 a5 02 \
     02 00 00 00 00 00 00 fe ff 7f dc 2f 01 01 b0 cf 07 00 00 bb";

pub fn jk_record(hex: &str) -> Vec<u8> {
    hex.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

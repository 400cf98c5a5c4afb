//! The simulated JK BMS of `--demo`: an 8-cell pack on 11.x firmware (the 32S layout). It
//! answers 0x97 with its device info record and 0x96 with a settings record and a cell info
//! record, each in 20-byte notifications, as the BMS does; the real one then keeps streaming,
//! the demo waits to be asked again (the session's re-request path).

use uuid::Uuid;

use super::protocol::{self as jk, Layout};
use crate::demo::{DemoDevice, NOTIFICATION_BYTES, Peripheral, swing, wave};
use crate::transport::{CharInfo, Notification};

/// A simulated JK pack.
#[derive(Debug, Clone)]
pub struct JkSim {
    pub cells: usize,
    pub nominal_ah: f64,
    pub model: &'static str,
    pub software: &'static str,
    /// Mean cell voltage, mV.
    pub cell_mv: f64,
    /// Typical current, A (negative = discharging).
    pub current_a: f64,
}

fn put_u16(b: &mut [u8], o: usize, v: u16) {
    b[o..o + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_text(b: &mut [u8], (o, len): (usize, usize), s: &str) {
    let bytes = s.as_bytes();
    b[o..o + bytes.len().min(len)].copy_from_slice(&bytes[..bytes.len().min(len)]);
}

/// A whole record of `kind` with this body (bytes 6.. filled by `fill`), checksum set.
fn record(kind: u8, fill: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let mut b = vec![0u8; jk::RECORD_LEN];
    b[..4].copy_from_slice(&jk::RECORD_START);
    b[4] = kind;
    fill(&mut b);
    b[jk::RECORD_LEN - 1] = jk::sum8(&b[..jk::RECORD_LEN - 1]);
    b
}

impl JkSim {
    pub fn layout(&self) -> Layout {
        Layout::for_version(self.software).expect("a demo version")
    }

    pub fn device_info(&self) -> Vec<u8> {
        record(jk::RECORD_DEVICE_INFO, |b| {
            put_text(b, jk::DI_MODEL, self.model);
            put_text(b, jk::DI_HARDWARE, "11.XA");
            put_text(b, jk::DI_SOFTWARE, self.software);
            put_text(b, jk::DI_NAME, "demo");
            put_text(b, jk::DI_SERIAL, "DEMO0001");
        })
    }

    /// The cell info record at time `t` (Unix s).
    pub fn cell_info(&self, t: f64) -> Vec<u8> {
        let layout = self.layout();
        let (o1, o2) = (layout.o1(), layout.o2());
        let cells: Vec<u16> = (0..self.cells)
            .map(|i| (self.cell_mv + 4.0 * wave(t, 97.0, i as f64)).round() as u16)
            .collect();
        let current_ma = (self.current_a * swing(t, 2.0) * 1000.0).round() as i32;
        let soc = (55.0 + 20.0 * wave(t, 3600.0, 1.5)).round();
        record(jk::RECORD_CELL_INFO, |b| {
            let mut mask = 0u32;
            for (i, mv) in cells.iter().enumerate() {
                put_u16(b, jk::CI_CELLS + 2 * i, *mv);
                put_u16(b, jk::CI_RESISTANCES_MOHM + o1 + 2 * i, 55 + i as u16 % 4);
                mask |= 1 << i;
            }
            put_u32(b, jk::CI_ENABLED_MASK + o1, mask);
            let sum: u32 = cells.iter().map(|&c| u32::from(c)).sum();
            let avg = sum / cells.len() as u32;
            let spread = cells.iter().max().unwrap() - cells.iter().min().unwrap();
            put_u16(b, jk::CI_CELL_AVG_MV + o1, avg as u16);
            put_u16(b, jk::CI_CELL_DELTA_MV + o1, spread);
            put_u32(b, jk::CI_VOLTAGE_MV + o2, sum);
            b[jk::CI_CURRENT_MA + o2..jk::CI_CURRENT_MA + o2 + 4]
                .copy_from_slice(&current_ma.to_le_bytes());
            let t1 = (215.0 + 20.0 * wave(t, 1800.0, 0.2)) as i16;
            b[jk::CI_T1_DECI_C + o2..jk::CI_T1_DECI_C + o2 + 2].copy_from_slice(&t1.to_le_bytes());
            b[jk::CI_T2_DECI_C + o2..jk::CI_T2_DECI_C + o2 + 2]
                .copy_from_slice(&(t1 + 6).to_le_bytes());
            let mos = match layout {
                Layout::Cells24 => jk::CI24_MOS_DECI_C,
                Layout::Cells32 => jk::CI32_MOS_DECI_C,
            };
            b[mos..mos + 2].copy_from_slice(&(t1 + 40).to_le_bytes());
            b[jk::CI_SOC + o2] = soc as u8;
            b[jk::CI_SOH + o2] = 100;
            let nominal_mah = (self.nominal_ah * 1000.0) as u32;
            put_u32(
                b,
                jk::CI_REMAINING_MAH + o2,
                (f64::from(nominal_mah) * soc / 100.0) as u32,
            );
            put_u32(b, jk::CI_NOMINAL_MAH + o2, nominal_mah);
            put_u32(b, jk::CI_CYCLES + o2, 37);
            put_u32(b, jk::CI_CYCLE_CAPACITY_MAH + o2, 37 * nominal_mah);
            b[jk::CI_CHARGE_FET + o2] = 1;
            b[jk::CI_DISCHARGE_FET + o2] = 1;
        })
    }

    fn notifications(record: &[u8]) -> impl Iterator<Item = Notification> + '_ {
        record.chunks(NOTIFICATION_BYTES).map(|c| Notification {
            characteristic: jk::CHAR_UUID,
            value: c.to_vec(),
        })
    }
}

impl Peripheral for JkSim {
    fn characteristics(&self) -> Vec<CharInfo> {
        vec![CharInfo {
            uuid: jk::CHAR_UUID,
            service: jk::SERVICE_UUID,
            write_without_response: true,
        }]
    }

    fn write(&mut self, characteristic: Uuid, data: &[u8], t: f64) -> Vec<Notification> {
        if characteristic != jk::CHAR_UUID {
            return Vec::new();
        }
        if data == jk::command(jk::CMD_DEVICE_INFO) {
            Self::notifications(&self.device_info()).collect()
        } else if data == jk::command(jk::CMD_CELL_INFO) {
            let settings = record(jk::RECORD_SETTINGS, |_| {});
            Self::notifications(&settings)
                .chain(Self::notifications(&self.cell_info(t)))
                .collect()
        } else {
            Vec::new()
        }
    }

    fn read(&mut self, _: Uuid, _: f64) -> Option<Vec<u8>> {
        None
    }

    /// JK's company id, as real modules advertise it; what they put after it is not known
    /// (and read by no one), so nothing.
    fn advertisement(&mut self, _: f64) -> Option<(u16, Vec<u8>)> {
        Some((jk::MANUFACTURER_IDS[0], Vec::new()))
    }
}

/// The demo's JK pack: 8 cells, 280 Ah, 11.x firmware.
pub fn pack() -> JkSim {
    JkSim {
        cells: 8,
        nominal_ah: 280.0,
        model: "JK_B2A8S20P",
        software: "11.48",
        cell_mv: 3312.0,
        current_a: 8.0,
    }
}

pub fn devices() -> Vec<DemoDevice> {
    vec![DemoDevice {
        name: "demo-jk",
        address: "DE:AD:BE:EF:00:04",
        password: None,
        key: None,
        peripheral: Box::new(pack()),
    }]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::jk::protocol::{CellInfo, DeviceInfo, Reassembler};

    #[test]
    fn demo_records_decode_and_are_plausible() {
        let sim = pack();
        let mut r = Reassembler::new();
        let info = r.push(&sim.device_info()).remove(0).unwrap();
        let info = DeviceInfo::parse(&info).unwrap();
        assert_eq!(
            (info.model.as_str(), info.layout),
            ("JK_B2A8S20P", Layout::Cells32)
        );
        for t in [0.0, 1234.5, 1.7e9] {
            let rec = r.push(&sim.cell_info(t)).remove(0).unwrap();
            let c = CellInfo::parse(&rec, info.layout).unwrap();
            assert_eq!(c.cells_v.len(), 8);
            let sum: f64 = c.cells_v.iter().sum();
            assert!((c.voltage_v - sum).abs() < 1e-9, "{} vs {sum}", c.voltage_v);
            assert!((26.0..27.0).contains(&c.voltage_v));
            assert!(c.omitted.is_empty(), "{:?}", c.omitted);
            assert!(c.temperatures_c.iter().all(Option::is_some));
            assert!(c.mos_temperature_c.is_some());
        }
    }
}

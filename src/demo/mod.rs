//! Built-in simulated devices for `--demo`: they ENCODE raw frames exactly as the radio would
//! deliver them (JBD replies in 20-byte notifications, a COBS-framed PowerMon record) so the
//! demo runs the real reassembly and decoding path behind the same [`Link`] seam as BLE.
//! Values vary slowly with the wall clock, like a pack on a quiet afternoon.

use std::collections::VecDeque;
use std::time::Duration;

use crate::device::{DeviceSpec, Link, LinkError};
use crate::protocol::jbd;
use crate::protocol::powermon::{self, NewRecordFields};
use crate::reading::DeviceKind;

/// BLE notifications carry 20 bytes with the default ATT MTU of 23.
pub const NOTIFICATION_BYTES: usize = 20;

/// A simulated JBD pack.
#[derive(Debug, Clone)]
pub struct JbdSim {
    pub cells: usize,
    pub nominal_ah: f64,
    pub name: &'static str,
    /// Mean cell voltage, mV.
    pub cell_mv: f64,
    /// Mean current, A (negative = discharging).
    pub current_a: f64,
    pub ntc_count: usize,
}

/// A simulated PowerMon (new firmware).
#[derive(Debug, Clone)]
pub struct PowermonSim {
    pub voltage_v: f64,
    pub current_a: f64,
}

#[derive(Debug, Clone)]
pub enum Sim {
    Jbd(JbdSim),
    Powermon(PowermonSim),
}

/// Seconds since the Unix epoch, as f64: the demo's clock.
fn clock_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// A slow wave in [-1, 1] with the given period and phase.
fn wave(t: f64, period_s: f64, phase: f64) -> f64 {
    (t / period_s * std::f64::consts::TAU + phase).sin()
}

impl JbdSim {
    /// Register 0x03 data at time `t`.
    pub fn basic_info_data(&self, t: f64) -> Vec<u8> {
        let cells = self.cell_mv_at(t);
        let pack_mv: f64 = cells.iter().map(|&c| f64::from(c)).sum();
        let current_a = self.current_a * (1.0 + 0.3 * wave(t, 300.0, 0.0));
        let soc = (62.0 + 20.0 * wave(t, 3600.0, 0.5)).round();
        let nominal_10mah = (self.nominal_ah * 100.0).round() as u16;
        let remaining_10mah = (f64::from(nominal_10mah) * soc / 100.0).round() as u16;
        let date: u16 = (24 << 9) | (5 << 5) | 17; // 2024-05-17
        let balancing: u16 = if wave(t, 120.0, 0.0) > 0.6 { 0b0010 } else { 0 };
        let mut d = Vec::with_capacity(23 + 2 * self.ntc_count);
        d.extend(((pack_mv / 10.0).round() as u16).to_be_bytes());
        d.extend(((current_a * 100.0).round() as i16).to_be_bytes());
        d.extend(remaining_10mah.to_be_bytes());
        d.extend(nominal_10mah.to_be_bytes());
        d.extend(37u16.to_be_bytes()); // cycles
        d.extend(date.to_be_bytes());
        d.extend(balancing.to_be_bytes());
        d.extend(0u16.to_be_bytes()); // balance, cells 17-32
        d.extend(0u16.to_be_bytes()); // protection
        d.push(0x80); // software 8.0
        d.push(soc as u8);
        d.push(0b11); // both FETs on
        d.push(self.cells as u8);
        d.push(self.ntc_count as u8);
        for i in 0..self.ntc_count {
            let deci_c = 215.0 + 15.0 * wave(t, 900.0, i as f64);
            d.extend(((2731.0 + deci_c).round() as u16).to_be_bytes());
        }
        d
    }

    fn cell_mv_at(&self, t: f64) -> Vec<u16> {
        (0..self.cells)
            .map(|i| {
                let spread = 6.0 * wave(t, 600.0, i as f64 * 1.3);
                (self.cell_mv + 8.0 * wave(t, 1800.0, 0.0) + spread).round() as u16
            })
            .collect()
    }

    /// Register 0x04 data at time `t`.
    pub fn cell_data(&self, t: f64) -> Vec<u8> {
        self.cell_mv_at(t)
            .iter()
            .flat_map(|mv| mv.to_be_bytes())
            .collect()
    }

    /// The complete reply to a read of `register`, as the BMS sends it.
    pub fn reply(&self, register: u8, t: f64) -> Vec<u8> {
        match register {
            0x03 => jbd::encode_reply(register, 0, &self.basic_info_data(t)),
            0x04 => jbd::encode_reply(register, 0, &self.cell_data(t)),
            0x05 => jbd::encode_reply(register, 0, self.name.as_bytes()),
            _ => jbd::encode_reply(register, 0x80, &[]),
        }
    }
}

impl PowermonSim {
    /// The 54-byte new-firmware value at time `t`.
    pub fn record(&self, t: f64) -> Vec<u8> {
        let current = self.current_a * (1.0 + 0.5 * wave(t, 240.0, 1.0));
        let voltage = self.voltage_v + 0.05 * wave(t, 600.0, 0.0);
        let fields = NewRecordFields {
            firmware_bcd: 0x0231,
            hardware_bcd: 0x23,
            time_local_s: t as u32,
            flags: 0,
            voltage1_v: voltage as f32,
            voltage2_v: (voltage - 0.02) as f32,
            current_a: current as f32,
            power_w: (voltage * current) as f32,
            charge_mah: (-25_000.0 + 2_000.0 * wave(t, 3600.0, 0.0)) as i64,
            energy_mwh: (-320_000.0 + 25_000.0 * wave(t, 3600.0, 0.0)) as i64,
            temperature_c: (19.0 + 2.0 * wave(t, 1200.0, 0.0)) as f32,
            power_status: 1,
            soc_percent: (75.0 + 10.0 * wave(t, 3600.0, 0.0)).round() as u8,
            runtime_min: 540,
        };
        powermon::encode_cobs_frame(&fields.encode())
    }
}

/// A demo device behind the [`Link`] seam.
pub struct DemoLink {
    sim: Sim,
    connected: bool,
    queue: VecDeque<Vec<u8>>,
}

impl DemoLink {
    pub fn new(sim: Sim) -> Self {
        DemoLink {
            sim,
            connected: false,
            queue: VecDeque::new(),
        }
    }
}

impl Link for DemoLink {
    async fn connect(&mut self) -> Result<(), LinkError> {
        self.connected = true;
        Ok(())
    }

    async fn disconnect(&mut self) -> bool {
        self.connected = false;
        self.queue.clear();
        true
    }

    async fn write(&mut self, data: &[u8]) -> Result<(), LinkError> {
        if !self.connected {
            return Err(LinkError::NotConnected);
        }
        let Sim::Jbd(sim) = &self.sim else {
            return Err(LinkError::MissingCharacteristic("JBD write"));
        };
        // Like the BMS: answer read requests, ignore anything else.
        if let Some(register) = jbd::parse_read_request(data) {
            let reply = sim.reply(register, clock_s());
            self.queue
                .extend(reply.chunks(NOTIFICATION_BYTES).map(<[u8]>::to_vec));
        }
        Ok(())
    }

    async fn notification(&mut self) -> Result<Vec<u8>, LinkError> {
        if !self.connected {
            return Err(LinkError::NotConnected);
        }
        match self.queue.pop_front() {
            Some(chunk) => Ok(chunk),
            // Nothing was asked: a real device stays silent, so do we.
            None => std::future::pending().await,
        }
    }

    fn drain(&mut self) -> usize {
        let n = self.queue.len();
        self.queue.clear();
        n
    }

    async fn lost(&mut self) {
        // A simulated link never drops.
        std::future::pending().await
    }

    async fn read(&mut self) -> Result<Vec<u8>, LinkError> {
        if !self.connected {
            return Err(LinkError::NotConnected);
        }
        match &self.sim {
            Sim::Powermon(sim) => Ok(sim.record(clock_s())),
            Sim::Jbd(_) => Err(LinkError::MissingCharacteristic("PowerMon record")),
        }
    }
}

/// The built-in demo devices: a 4-cell 12 V LiFePO4 pack, a 16-cell 48 V pack, a shunt.
pub fn devices(timeout: Duration) -> Vec<(DeviceSpec, DemoLink)> {
    let spec = |name: &str, kind, address: &str| DeviceSpec {
        name: name.into(),
        kind,
        address: address.into(),
        timeout,
        adapter: None,
    };
    vec![
        (
            spec("demo-12v", DeviceKind::Jbd, "DE:AD:BE:EF:00:01"),
            DemoLink::new(Sim::Jbd(JbdSim {
                cells: 4,
                nominal_ah: 100.0,
                name: "DEMO-SP04S034-100A",
                cell_mv: 3320.0,
                current_a: -4.2,
                ntc_count: 2,
            })),
        ),
        (
            spec("demo-48v", DeviceKind::Jbd, "DE:AD:BE:EF:00:02"),
            DemoLink::new(Sim::Jbd(JbdSim {
                cells: 16,
                nominal_ah: 280.0,
                name: "DEMO-SP16S020-280A",
                cell_mv: 3305.0,
                current_a: 12.5,
                ntc_count: 4,
            })),
        ),
        (
            spec("demo-shunt", DeviceKind::Powermon, "DE:AD:BE:EF:00:03"),
            DemoLink::new(Sim::Powermon(PowermonSim {
                voltage_v: 13.28,
                current_a: -3.1,
            })),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::jbd::{BasicInfo, CellVoltages, Reassembler};
    use crate::protocol::powermon::PowermonReading;

    #[test]
    fn demo_frames_decode_and_are_plausible() {
        let sim = JbdSim {
            cells: 16,
            nominal_ah: 280.0,
            name: "X",
            cell_mv: 3305.0,
            current_a: 12.5,
            ntc_count: 4,
        };
        for t in [0.0, 1234.5, 1.7e9] {
            let mut r = Reassembler::new();
            let frames: Vec<_> = sim
                .reply(3, t)
                .chunks(NOTIFICATION_BYTES)
                .flat_map(|c| r.push(c))
                .collect();
            let info = BasicInfo::parse(frames[0].as_ref().unwrap()).unwrap();
            assert!((45.0..58.0).contains(&info.voltage_v), "{}", info.voltage_v);
            assert!(info.soc_percent.is_some_and(|s| (20..=100).contains(&s)));
            assert!(info.omitted.is_empty(), "{:?}", info.omitted);
            assert_eq!(info.temperatures_c.len(), 4);
            let cells = CellVoltages::parse(&jbd::parse_frame(&sim.reply(4, t)).unwrap()).unwrap();
            assert_eq!(cells.volts.len(), 16);
            assert!(cells.delta() < 0.05);
            // Pack voltage is the sum of the cells it reports (within rounding to 10 mV).
            let sum: f64 = cells.volts.iter().sum();
            assert!(
                (sum - info.voltage_v).abs() < 0.011,
                "{sum} vs {}",
                info.voltage_v
            );
        }
        assert_eq!(
            jbd::parse_frame(&sim.reply(0x42, 0.0)).unwrap().status,
            0x80
        );
    }

    #[test]
    fn demo_powermon_record_is_cobs_framed_and_decodes() {
        let sim = PowermonSim {
            voltage_v: 13.28,
            current_a: -3.1,
        };
        let raw = sim.record(1.7e9);
        assert_eq!(raw.len(), powermon::NEW_FRAME_LEN);
        let r = PowermonReading::parse(&raw).unwrap();
        assert!((13.0..13.5).contains(&r.voltage1_v));
        assert!(r.soc_percent.is_some());
        assert_eq!(r.omitted, vec![], "the demo sends nothing implausible");
    }
}

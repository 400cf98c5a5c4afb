//! The simulated PowerMon of `--demo` (new firmware): its record characteristic reads as a
//! COBS-framed 54-byte value.

use uuid::Uuid;

use super::protocol::{self, NewRecordFields};
use crate::demo::{DemoDevice, Peripheral, swing, wave};
use crate::transport::{CharInfo, Notification};

/// A simulated PowerMon (new firmware).
#[derive(Debug, Clone)]
pub struct PowermonSim {
    pub voltage_v: f64,
    pub current_a: f64,
}

impl PowermonSim {
    /// The 54-byte new-firmware value at time `t`.
    pub fn record(&self, t: f64) -> Vec<u8> {
        let current = self.current_a * swing(t, 1.0);
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
        protocol::encode_cobs_frame(&fields.encode())
    }
}

impl Peripheral for PowermonSim {
    fn characteristics(&self) -> Vec<CharInfo> {
        vec![CharInfo {
            uuid: protocol::NEW_RECORD_UUID,
            service: protocol::NEW_SERVICE_UUID,
            write_without_response: false,
        }]
    }

    fn write(&mut self, _: Uuid, _: &[u8], _: f64) -> Vec<Notification> {
        Vec::new()
    }

    fn read(&mut self, characteristic: Uuid, t: f64) -> Option<Vec<u8>> {
        (characteristic == protocol::NEW_RECORD_UUID).then(|| self.record(t))
    }
}

/// The demo's shunt.
pub fn devices() -> Vec<DemoDevice> {
    vec![DemoDevice {
        password: None,
        key: None,
        name: "demo-shunt",
        address: "DE:AD:BE:EF:00:03",
        peripheral: Box::new(PowermonSim {
            voltage_v: 13.28,
            current_a: -3.1,
        }),
    }]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::powermon::protocol::{self as powermon, PowermonReading};

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

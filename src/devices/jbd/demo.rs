//! The simulated JBD BMS of `--demo`: answers read requests on ff02 with the reply frames a
//! real BMS sends, in 20-byte notifications on ff01. One of the demo packs has a dongle that
//! wants its app password (the `FF AA` handshake) before it answers, as many sold since 2023.

use uuid::Uuid;

use super::auth::{self, Command, Password};
use super::protocol;
use crate::demo::{DemoDevice, NOTIFICATION_BYTES, Peripheral, swing, wave};
use crate::transport::{CharInfo, Notification};

/// A simulated JBD pack.
#[derive(Debug, Clone)]
pub struct JbdSim {
    pub cells: usize,
    pub nominal_ah: f64,
    pub name: &'static str,
    /// Mean cell voltage, mV.
    pub cell_mv: f64,
    /// Typical current, A (negative = discharging); it swings through zero (see [`swing`]).
    pub current_a: f64,
    pub ntc_count: usize,
    /// A dongle that wants its app password before it answers.
    pub lock: Option<PasswordLock>,
}

/// The dongle side of the `FF AA` handshake: answers read requests only once the password
/// (encrypted with its address and the random byte it gave) and the root password arrived,
/// on this connection.
#[derive(Debug, Clone)]
pub struct PasswordLock {
    pub mac: [u8; 6],
    pub password: &'static str,
    /// The last random byte handed out.
    random: u8,
    user_ok: bool,
    unlocked: bool,
}

impl PasswordLock {
    pub fn new(mac: [u8; 6], password: &'static str) -> Self {
        PasswordLock {
            mac,
            password,
            random: 0x5C,
            user_ok: false,
            unlocked: false,
        }
    }

    /// The answer to a handshake frame (`None`: not one).
    fn answer(&mut self, frame: &[u8], t: f64) -> Option<Vec<u8>> {
        let answer = |command, value| Some(auth::encode(command, &[value]));
        match frame {
            [0xFF, 0xAA, 0x15, ..] if frame == auth::app_key_frame() => {
                answer(Command::AppKey, auth::ACK)
            }
            [0xFF, 0xAA, 0x17, ..] => {
                self.random = self.random.wrapping_mul(31).wrapping_add((t * 1e3) as u8);
                answer(Command::Random, self.random)
            }
            [0xFF, 0xAA, 0x18, ..] => {
                let password = Password::parse(self.password).ok()?;
                self.user_ok = frame == auth::user_password_frame(self.mac, self.random, &password);
                answer(
                    Command::UserPassword,
                    if self.user_ok { auth::ACK } else { auth::NACK },
                )
            }
            [0xFF, 0xAA, 0x1D, ..] => {
                let ok = frame == auth::root_password_frame(self.mac, self.random);
                self.unlocked = self.user_ok && ok;
                answer(
                    Command::RootPassword,
                    if ok { auth::ACK } else { auth::NACK },
                )
            }
            _ => None,
        }
    }
}

impl JbdSim {
    /// Register 0x03 data at time `t`.
    pub fn basic_info_data(&self, t: f64) -> Vec<u8> {
        let cells = self.cell_mv_at(t);
        let pack_mv: f64 = cells.iter().map(|&c| f64::from(c)).sum();
        let current_a = self.current_a * swing(t, 0.0);
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
            0x03 => protocol::encode_reply(register, 0, &self.basic_info_data(t)),
            0x04 => protocol::encode_reply(register, 0, &self.cell_data(t)),
            0x05 => protocol::encode_reply(register, 0, self.name.as_bytes()),
            _ => protocol::encode_reply(register, 0x80, &[]),
        }
    }
}

impl Peripheral for JbdSim {
    fn characteristics(&self) -> Vec<CharInfo> {
        vec![
            CharInfo {
                uuid: protocol::NOTIFY_UUID,
                service: protocol::SERVICE_UUID,
                write_without_response: false,
            },
            CharInfo {
                uuid: protocol::WRITE_UUID,
                service: protocol::SERVICE_UUID,
                write_without_response: true,
            },
        ]
    }

    fn write(&mut self, characteristic: Uuid, data: &[u8], t: f64) -> Vec<Notification> {
        if characteristic != protocol::WRITE_UUID {
            return Vec::new();
        }
        let notify = |value: Vec<u8>| Notification {
            characteristic: protocol::NOTIFY_UUID,
            value,
        };
        // A dongle without a password does not answer handshake frames.
        if let Some(lock) = &mut self.lock {
            if let Some(answer) = lock.answer(data, t) {
                return vec![notify(answer)];
            }
            if !lock.unlocked {
                return Vec::new();
            }
        }
        // Like the BMS: answer read requests, ignore anything else.
        match protocol::parse_read_request(data) {
            Some(register) => self
                .reply(register, t)
                .chunks(NOTIFICATION_BYTES)
                .map(|c| notify(c.to_vec()))
                .collect(),
            None => Vec::new(),
        }
    }

    fn read(&mut self, _: Uuid, _: f64) -> Option<Vec<u8>> {
        None
    }

    fn connected(&mut self) {
        if let Some(lock) = &mut self.lock {
            lock.user_ok = false;
            lock.unlocked = false;
        }
    }
}

/// The demo 48 V pack's dongle wants this password (configured on its spec, as a user would).
pub const DEMO_PASSWORD: &str = "123456";
const DEMO_48V_MAC: [u8; 6] = [0xDE, 0xAD, 0xBE, 0xEF, 0x00, 0x02];

/// The demo's packs: a 4-cell 12 V LiFePO4 pack and a 16-cell 48 V one whose dongle wants the
/// app password.
pub fn devices() -> Vec<DemoDevice> {
    vec![
        DemoDevice {
            name: "demo-12v",
            password: None,
            key: None,
            address: "DE:AD:BE:EF:00:01",
            peripheral: Box::new(JbdSim {
                cells: 4,
                nominal_ah: 100.0,
                name: "DEMO-SP04S034-100A",
                cell_mv: 3320.0,
                current_a: -4.2,
                ntc_count: 2,
                lock: None,
            }),
        },
        DemoDevice {
            name: "demo-48v",
            password: Some(DEMO_PASSWORD),
            key: None,
            address: "DE:AD:BE:EF:00:02",
            peripheral: Box::new(JbdSim {
                cells: 16,
                nominal_ah: 280.0,
                name: "DEMO-SP16S020-280A",
                cell_mv: 3305.0,
                current_a: 12.5,
                ntc_count: 4,
                lock: Some(PasswordLock::new(DEMO_48V_MAC, DEMO_PASSWORD)),
            }),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::jbd::protocol::{self as jbd, BasicInfo, CellVoltages, Reassembler};

    #[test]
    fn demo_frames_decode_and_are_plausible() {
        let sim = JbdSim {
            cells: 16,
            nominal_ah: 280.0,
            name: "X",
            cell_mv: 3305.0,
            current_a: 12.5,
            ntc_count: 4,
            lock: None,
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
}

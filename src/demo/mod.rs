//! The demo transport for `--demo`: simulated peripherals behind the same [`Transport`] seam
//! as BLE. Each kind's simulated device (`devices/<kind>/demo.rs`) answers GATT writes and
//! reads with the bytes the real device would send (JBD replies in 20-byte notifications, a
//! COBS-framed PowerMon record), so the demo runs the kind's real session, reassembly and
//! decoding. Values vary slowly with the wall clock, like a pack on a quiet afternoon.

use std::collections::{HashSet, VecDeque};

use uuid::Uuid;

use crate::transport::{Advert, CharInfo, LinkError, Notification, Transport, WriteMode};

/// BLE notifications carry 20 bytes with the default ATT MTU of 23.
pub const NOTIFICATION_BYTES: usize = 20;

/// A simulated device, at the GATT level.
pub trait Peripheral: Send + 'static {
    /// The characteristics service discovery finds.
    fn characteristics(&self) -> Vec<CharInfo>;
    /// A value written to `characteristic` at time `t` (Unix s): the notifications it causes,
    /// in order (sent only for subscribed characteristics).
    fn write(&mut self, characteristic: Uuid, data: &[u8], t: f64) -> Vec<Notification>;
    /// A read of `characteristic` at time `t`; `None` when it cannot be read.
    fn read(&mut self, characteristic: Uuid, t: f64) -> Option<Vec<u8>>;
    /// A new connection: per-connection state (e.g. an accepted password) starts over.
    fn connected(&mut self) {}
    /// What it advertises at time `t`: the company id and its manufacturer data (read by a
    /// passive kind; for another kind, what `scan` recognises it by); `None` when it
    /// advertises nothing of interest.
    fn advertisement(&mut self, t: f64) -> Option<(u16, Vec<u8>)> {
        let _ = t;
        None
    }
}

/// One built-in demo device of a kind.
pub struct DemoDevice {
    /// Its `device` tag.
    pub name: &'static str,
    pub address: &'static str,
    pub peripheral: Box<dyn Peripheral>,
    /// The password it wants (configured on its spec, as a user would in the config file).
    pub password: Option<&'static str>,
    /// The key its advertisements are encrypted with (configured on its spec likewise).
    pub key: Option<&'static str>,
}

/// Seconds since the Unix epoch, as f64: the demo's clock.
pub fn clock_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// A slow wave in [-1, 1] with the given period and phase.
pub fn wave(t: f64, period_s: f64, phase: f64) -> f64 {
    (t / period_s * std::f64::consts::TAU + phase).sin()
}

/// The factor on a demo device's typical current at time `t`: between -0.8 and 1.6 (never
/// within 0.05 of zero), so the
/// current turns from one sign to the other every 15 minutes (a cloud over the panels), and
/// the energy counters and time estimates move both ways.
pub fn swing(t: f64, phase: f64) -> f64 {
    let s = 0.4 + wave(t, 1800.0, phase) + 0.2 * wave(t, 300.0, phase);
    // Never idle: at least 5 % of the typical current either way, so there is always a time
    // estimate to show (the dashboards' panels, and their tests, rely on one).
    if s.abs() < SWING_MIN {
        SWING_MIN.copysign(s)
    } else {
        s
    }
}

/// See [`swing`].
const SWING_MIN: f64 = 0.05;

/// A demo device behind the [`Transport`] seam.
pub struct DemoLink {
    peripheral: Box<dyn Peripheral>,
    connected: bool,
    /// The company id listened for.
    listening: Option<u16>,
    subscribed: HashSet<Uuid>,
    queue: VecDeque<Notification>,
}

impl DemoLink {
    pub fn new(peripheral: Box<dyn Peripheral>) -> Self {
        DemoLink {
            peripheral,
            connected: false,
            listening: None,
            subscribed: HashSet::new(),
            queue: VecDeque::new(),
        }
    }

    fn known(&self, characteristic: Uuid) -> Result<(), LinkError> {
        if !self.connected {
            return Err(LinkError::NotConnected);
        }
        if self
            .peripheral
            .characteristics()
            .iter()
            .any(|c| c.uuid == characteristic)
        {
            Ok(())
        } else {
            Err(LinkError::MissingCharacteristic("requested"))
        }
    }
}

impl Transport for DemoLink {
    async fn connect(&mut self) -> Result<Vec<CharInfo>, LinkError> {
        self.connected = true;
        self.peripheral.connected();
        Ok(self.peripheral.characteristics())
    }

    async fn disconnect(&mut self) -> bool {
        self.connected = false;
        self.listening = None;
        self.subscribed.clear();
        self.queue.clear();
        true
    }

    async fn subscribe(&mut self, characteristic: Uuid) -> Result<(), LinkError> {
        self.known(characteristic)?;
        self.subscribed.insert(characteristic);
        Ok(())
    }

    async fn write(
        &mut self,
        characteristic: Uuid,
        data: &[u8],
        _mode: WriteMode,
    ) -> Result<(), LinkError> {
        self.known(characteristic)?;
        let sent = self.peripheral.write(characteristic, data, clock_s());
        let subscribed = &self.subscribed;
        self.queue.extend(
            sent.into_iter()
                .filter(|n| subscribed.contains(&n.characteristic)),
        );
        Ok(())
    }

    async fn notification(&mut self) -> Result<Notification, LinkError> {
        if !self.connected {
            return Err(LinkError::NotConnected);
        }
        match self.queue.pop_front() {
            Some(n) => Ok(n),
            // Nothing was asked: a real device stays silent, so do we.
            None => std::future::pending().await,
        }
    }

    fn drain(&mut self) -> usize {
        let n = self.queue.len();
        self.queue.clear();
        n
    }

    async fn read(&mut self, characteristic: Uuid) -> Result<Vec<u8>, LinkError> {
        self.known(characteristic)?;
        self.peripheral
            .read(characteristic, clock_s())
            .ok_or(LinkError::MissingCharacteristic("readable"))
    }

    async fn lost(&mut self) {
        // A simulated link never drops.
        std::future::pending().await
    }

    async fn listen(&mut self, company: u16) -> Result<(), LinkError> {
        match self.peripheral.advertisement(clock_s()) {
            Some((c, _)) if c == company => {
                self.listening = Some(company);
                Ok(())
            }
            _ => Err(LinkError::NotFound),
        }
    }

    /// A simulated device advertises all the time: a fresh advertisement at every call.
    async fn advertisement(&mut self) -> Result<Advert, LinkError> {
        let company = self.listening.ok_or(LinkError::NotConnected)?;
        match self.peripheral.advertisement(clock_s()) {
            Some((c, data)) if c == company => Ok(Advert {
                data,
                heard: tokio::time::Instant::now(),
            }),
            _ => Err(LinkError::NotFound),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::powermon::demo::PowermonSim;
    use crate::devices::powermon::protocol::{NEW_RECORD_UUID, OLD_RECORD_UUID};

    #[test]
    fn the_demo_current_swings_both_ways_and_never_idles() {
        let swings: Vec<f64> = (0..86_400).map(|t| swing(f64::from(t), 0.0)).collect();
        assert!(
            swings
                .iter()
                .all(|s| s.abs() >= SWING_MIN && (-0.8..=1.6).contains(s))
        );
        assert!(swings.iter().any(|&s| s < -0.5), "discharging and charging");
        assert!(swings.iter().any(|&s| s > 1.2));
        // Away from zero the clamp leaves it alone.
        let t = (0..86_400)
            .map(f64::from)
            .find(|&t| swing(t, 0.0) > 1.0)
            .unwrap();
        let raw = 0.4 + wave(t, 1800.0, 0.0) + 0.2 * wave(t, 300.0, 0.0);
        assert_eq!(swing(t, 0.0), raw);
    }

    fn shunt() -> DemoLink {
        DemoLink::new(Box::new(PowermonSim {
            voltage_v: 13.3,
            current_a: -3.0,
        }))
    }

    #[tokio::test]
    async fn a_demo_link_answers_only_while_connected_and_only_for_what_it_has() {
        let mut link = shunt();
        assert_eq!(
            link.read(NEW_RECORD_UUID).await,
            Err(LinkError::NotConnected)
        );
        let found = link.connect().await.unwrap();
        assert_eq!(
            found.iter().map(|c| c.uuid).collect::<Vec<_>>(),
            [NEW_RECORD_UUID]
        );
        assert!(link.read(NEW_RECORD_UUID).await.is_ok());
        for missing in [
            link.read(OLD_RECORD_UUID).await.map(drop),
            link.subscribe(OLD_RECORD_UUID).await,
            link.write(OLD_RECORD_UUID, b"x", WriteMode::WithResponse)
                .await,
        ] {
            assert!(
                matches!(missing, Err(LinkError::MissingCharacteristic(_))),
                "{missing:?}"
            );
        }
        assert!(link.disconnect().await);
        assert_eq!(
            link.read(NEW_RECORD_UUID).await,
            Err(LinkError::NotConnected)
        );
    }

    #[tokio::test]
    async fn a_disconnect_drops_queued_notifications_and_subscriptions() {
        use crate::devices::jbd::demo::JbdSim;
        use crate::devices::jbd::protocol::{self as jbd, Register};
        let mut link = DemoLink::new(Box::new(JbdSim {
            cells: 4,
            nominal_ah: 100.0,
            name: "X",
            cell_mv: 3300.0,
            current_a: 1.0,
            ntc_count: 2,
            lock: None,
        }));
        let ask = jbd::read_request(Register::BasicInfo);
        link.connect().await.unwrap();
        // Not subscribed: the reply is not delivered.
        link.write(jbd::WRITE_UUID, &ask, WriteMode::WithoutResponse)
            .await
            .unwrap();
        assert_eq!(link.drain(), 0);
        link.subscribe(jbd::NOTIFY_UUID).await.unwrap();
        link.write(jbd::WRITE_UUID, &ask, WriteMode::WithoutResponse)
            .await
            .unwrap();
        let first = link.notification().await.unwrap();
        assert_eq!(first.characteristic, jbd::NOTIFY_UUID);
        assert_eq!(first.value.len(), NOTIFICATION_BYTES);
        assert!(link.disconnect().await);
        assert_eq!(link.drain(), 0, "the rest of the reply is gone");
        link.connect().await.unwrap();
        link.write(jbd::WRITE_UUID, &ask, WriteMode::WithoutResponse)
            .await
            .unwrap();
        assert_eq!(
            link.drain(),
            0,
            "the subscription ended with the connection"
        );
    }
}

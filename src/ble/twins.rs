//! Twin characteristics: a service with two characteristics of the same UUID, one written and
//! one notifying (the newer JK BMS module's two `ffe1`). btleplug 0.13 keeps only the first
//! characteristic of each UUID per service (`discover_services` in its BlueZ backend) and
//! drops notifications of any other, so the twin that btleplug does not have is reached
//! through bluez-async (under btleplug already) by its object path, on a D-Bus connection of
//! our own. Sessions see nothing of this: they write and subscribe `ffe1` as usual.

use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bluez_async::{
    BluetoothEvent, BluetoothSession, CharacteristicEvent, CharacteristicFlags, CharacteristicId,
    CharacteristicInfo, DeviceId, WriteOptions,
};
use btleplug::api::{CharPropFlags, ValueNotification};
use futures::{Stream, StreamExt};
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::bounded;
use crate::transport::{LinkError, WriteMode};

/// What a twin is wanted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Need {
    Write,
    Notify,
}

impl Need {
    /// Whether btleplug's characteristic (the first of its UUID) serves this need.
    pub(super) fn met_by(self, props: CharPropFlags) -> bool {
        match self {
            Need::Write => {
                props.intersects(CharPropFlags::WRITE | CharPropFlags::WRITE_WITHOUT_RESPONSE)
            }
            Need::Notify => props.intersects(CharPropFlags::NOTIFY | CharPropFlags::INDICATE),
        }
    }

    fn met_by_flags(self, flags: CharacteristicFlags) -> bool {
        match self {
            Need::Write => flags.intersects(
                CharacteristicFlags::WRITE | CharacteristicFlags::WRITE_WITHOUT_RESPONSE,
            ),
            Need::Notify => {
                flags.intersects(CharacteristicFlags::NOTIFY | CharacteristicFlags::INDICATE)
            }
        }
    }
}

/// Of a service's characteristics (uuid, flags), in BlueZ's order: the first of `uuid` that
/// serves `need`.
pub(super) fn pick(chars: &[(Uuid, CharacteristicFlags)], uuid: Uuid, need: Need) -> Option<usize> {
    chars
        .iter()
        .position(|(u, flags)| *u == uuid && need.met_by_flags(*flags))
}

/// The write type for a twin: the one asked for when it takes it, else the one it takes (a
/// session chose its mode from btleplug's twin, which may not be writable at all).
pub(super) fn write_type(asked: WriteMode, flags: CharacteristicFlags) -> bluez_async::WriteType {
    use bluez_async::WriteType::{WithResponse, WithoutResponse};
    let without = flags.contains(CharacteristicFlags::WRITE_WITHOUT_RESPONSE);
    let with = flags.contains(CharacteristicFlags::WRITE);
    match asked {
        WriteMode::WithoutResponse if without || !with => WithoutResponse,
        WriteMode::WithResponse if with || !without => WithResponse,
        WriteMode::WithoutResponse => WithResponse,
        WriteMode::WithResponse => WithoutResponse,
    }
}

/// Our own bluez-async session, opened the first time a twin is needed (most setups never
/// need one) and shared by every link.
#[derive(Clone, Default)]
pub(super) struct Twins(Arc<OnceCell<BluetoothSession>>);

/// A twin found: its id and flags.
pub(super) struct Twin {
    pub id: CharacteristicId,
    pub flags: CharacteristicFlags,
}

/// bluez-async's errors, as btleplug's (whose BlueZ backend is bluez-async) become ours.
impl From<bluez_async::BluetoothError> for LinkError {
    fn from(e: bluez_async::BluetoothError) -> Self {
        btleplug::Error::Other(Box::new(e)).into()
    }
}

impl Twins {
    async fn session(&self, t: Duration) -> Result<&BluetoothSession, LinkError> {
        self.0
            .get_or_try_init(|| async {
                let (connection, session) = bounded(
                    "opening BlueZ for twin characteristics",
                    t,
                    BluetoothSession::new(),
                )
                .await?;
                // The connection's task; if it ends, the twin's calls fail (and the link is
                // re-established as for any failed call).
                tokio::spawn(connection);
                Ok(session)
            })
            .await
    }

    /// The characteristic of `uuid` in service `service` of the device (btleplug's peripheral
    /// id) that serves `need`, when btleplug's own does not.
    pub(super) async fn find(
        &self,
        peripheral: &str,
        service: Uuid,
        uuid: Uuid,
        need: Need,
        t: Duration,
    ) -> Result<Twin, LinkError> {
        let missing = LinkError::MissingCharacteristic(match need {
            Need::Write => "writable",
            Need::Notify => "notifying",
        });
        let session = self.session(t).await?;
        let device = DeviceId::from_str(peripheral).map_err(LinkError::from)?;
        let services = bounded("listing services", t, session.get_services(&device)).await?;
        let Some(service) = services.into_iter().find(|s| s.uuid == service) else {
            return Err(missing);
        };
        let chars: Vec<CharacteristicInfo> = bounded(
            "listing characteristics",
            t,
            session.get_characteristics(&service.id),
        )
        .await?;
        let flags: Vec<(Uuid, CharacteristicFlags)> =
            chars.iter().map(|c| (c.uuid, c.flags)).collect();
        let i = pick(&flags, uuid, need).ok_or(missing)?;
        Ok(Twin {
            id: chars[i].id.clone(),
            flags: chars[i].flags,
        })
    }

    pub(super) async fn write(
        &self,
        twin: &Twin,
        data: &[u8],
        mode: WriteMode,
        t: Duration,
    ) -> Result<(), LinkError> {
        let session = self.session(t).await?;
        let options = WriteOptions {
            write_type: Some(write_type(mode, twin.flags)),
            ..WriteOptions::default()
        };
        bounded(
            "write",
            t,
            session.write_characteristic_value_with_options(&twin.id, data, options),
        )
        .await
    }

    /// Subscribes the twin; its values, as btleplug's notifications of `uuid` in `service`.
    pub(super) async fn subscribe(
        &self,
        twin: &Twin,
        service: Uuid,
        uuid: Uuid,
        t: Duration,
    ) -> Result<Pin<Box<dyn Stream<Item = ValueNotification> + Send>>, LinkError> {
        let session = self.session(t).await?;
        // The stream first, so that no value between the two calls is missed.
        let events = bounded(
            "notification stream",
            t,
            session.characteristic_event_stream(&twin.id),
        )
        .await?;
        bounded("subscribe", t, session.start_notify(&twin.id)).await?;
        Ok(Box::pin(events.filter_map(move |ev| async move {
            match ev {
                BluetoothEvent::Characteristic {
                    event: CharacteristicEvent::Value { value },
                    ..
                } => Some(ValueNotification {
                    uuid,
                    service_uuid: service,
                    value,
                }),
                _ => None,
            }
        })))
    }

    /// Unsubscribes the twin (politeness at disconnect: bounded, errors ignored).
    pub(super) async fn unsubscribe(&self, twin: &CharacteristicId, t: Duration) {
        if let Some(session) = self.0.get() {
            let _ = tokio::time::timeout(t, session.stop_notify(twin)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FFE1: Uuid = Uuid::from_u128(0x0000ffe1_0000_1000_8000_00805f9b34fb);
    const FFE2: Uuid = Uuid::from_u128(0x0000ffe2_0000_1000_8000_00805f9b34fb);

    #[test]
    fn the_twin_that_serves_the_need_is_picked_in_either_order() {
        let write = CharacteristicFlags::WRITE | CharacteristicFlags::WRITE_WITHOUT_RESPONSE;
        let notify = CharacteristicFlags::READ | CharacteristicFlags::NOTIFY;
        for (chars, w, n) in [
            (vec![(FFE1, write), (FFE1, notify)], 0, 1),
            (vec![(FFE1, notify), (FFE1, write)], 1, 0),
            (vec![(FFE2, write), (FFE1, notify), (FFE1, write)], 2, 1),
        ] {
            assert_eq!(pick(&chars, FFE1, Need::Write), Some(w), "{chars:?}");
            assert_eq!(pick(&chars, FFE1, Need::Notify), Some(n), "{chars:?}");
        }
        let indicate = [(FFE1, CharacteristicFlags::INDICATE)];
        assert_eq!(pick(&indicate, FFE1, Need::Notify), Some(0));
        assert_eq!(pick(&indicate, FFE1, Need::Write), None);
        assert_eq!(pick(&[(FFE2, write)], FFE1, Need::Write), None);
    }

    #[test]
    fn btleplugs_characteristic_is_used_when_it_serves_the_need() {
        assert!(Need::Write.met_by(CharPropFlags::WRITE_WITHOUT_RESPONSE));
        assert!(Need::Write.met_by(CharPropFlags::WRITE));
        assert!(!Need::Write.met_by(CharPropFlags::READ | CharPropFlags::NOTIFY));
        assert!(Need::Notify.met_by(CharPropFlags::NOTIFY));
        assert!(Need::Notify.met_by(CharPropFlags::INDICATE));
        assert!(!Need::Notify.met_by(CharPropFlags::WRITE));
    }

    #[test]
    fn a_twin_is_written_as_asked_when_it_can_be_else_as_it_takes() {
        use bluez_async::WriteType::{WithResponse, WithoutResponse};
        let both = CharacteristicFlags::WRITE | CharacteristicFlags::WRITE_WITHOUT_RESPONSE;
        let cmd = CharacteristicFlags::WRITE_WITHOUT_RESPONSE;
        let req = CharacteristicFlags::WRITE;
        let cases = [
            (WriteMode::WithoutResponse, both, WithoutResponse),
            (WriteMode::WithResponse, both, WithResponse),
            (WriteMode::WithResponse, cmd, WithoutResponse),
            (WriteMode::WithoutResponse, req, WithResponse),
            (WriteMode::WithoutResponse, cmd, WithoutResponse),
            (WriteMode::WithResponse, req, WithResponse),
        ];
        for (asked, flags, want) in cases {
            assert_eq!(write_type(asked, flags), want, "{asked:?} {flags:?}");
        }
    }
}

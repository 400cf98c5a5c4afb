//! BLE passkey pairing through BlueZ, for devices whose firmware talks only over an
//! authenticated (MITM) bond, as newer JBD dongles do. btleplug has no pairing API, so this
//! speaks BlueZ's D-Bus API directly (zbus), on its own system-bus connection:
//!
//! 1. serve an `org.bluez.Agent1` object that answers `RequestPasskey` with the passkey, and
//!    only to BlueZ, only for this device;
//! 2. `AgentManager1.RegisterAgent(path, "KeyboardOnly")`: with a keyboard-only agent BlueZ
//!    negotiates passkey entry, the authenticated method the firmware wants ("Just Works"
//!    would bond without MITM protection, and the BMS would keep echoing);
//! 3. `Device1.Pair()`, bounded; then `UnregisterAgent`, whatever happened.
//!
//! The bond then lives in BlueZ (`/var/lib/bluetooth`), which encrypts every later connection
//! with it by itself: polling needs nothing more. (BlueZ docs: `org.bluez.Agent.rst`,
//! `org.bluez.AgentManager.rst`, `org.bluez.Device.rst`.)

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::{Instant, sleep, timeout};
use zbus::message::Header;
use zbus::{Connection, OwnedObjectPath, OwnedVariant, Variant, interface};

use crate::secret::Passkey;
use crate::transport::PairError;

const BLUEZ: &str = "org.bluez";
const AGENT_PATH: &str = "/org/blebatt/agent";
const AGENT_CAPABILITY: &str = "KeyboardOnly";
const DEVICE1: &str = "org.bluez.Device1";
const ADAPTER1: &str = "org.bluez.Adapter1";
/// How long a pairing may take: the BMS may be slow to answer, and BlueZ retries.
pub const PAIR_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to scan for a device BlueZ does not know yet.
const FIND_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the object list is read while scanning for it.
const FIND_EVERY: Duration = Duration::from_millis(250);

/// What `pair` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paired {
    /// Paired now.
    Now,
    /// BlueZ already had a bond with it: nothing done.
    Already,
}

/// The agent: the passkey, for BlueZ only, for one device only.
struct Agent {
    passkey: Passkey,
    device: OwnedObjectPath,
    /// BlueZ's unique bus name: nobody else may ask.
    bluez: String,
    asked: Arc<AtomicBool>,
}

impl Agent {
    /// The passkey goes to BlueZ only, and only for the device being paired: the agent is an
    /// object on the system bus, which any client could call.
    fn may_answer(&self, sender: Option<&str>, device: &OwnedObjectPath) -> bool {
        sender == Some(self.bluez.as_str()) && *device == self.device
    }
}

#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.bluez.Error")]
enum AgentError {
    #[zbus(error)]
    ZBus(zbus::Error),
    Rejected(String),
}

#[interface(name = "org.bluez.Agent1", introspection_docs = false)]
impl Agent {
    async fn request_passkey(
        &self,
        device: OwnedObjectPath,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<u32, AgentError> {
        let sender = hdr.sender().map(|s| s.as_str());
        if !self.may_answer(sender, &device) {
            log::warn!(
                "refused a passkey request that was not BlueZ's for the device being paired"
            );
            return Err(AgentError::Rejected("Rejected".into()));
        }
        self.asked.store(true, Ordering::SeqCst);
        Ok(self.passkey.value())
    }

    /// Only passkey entry is offered: anything else would not be the authenticated pairing.
    async fn request_pin_code(&self, _device: OwnedObjectPath) -> Result<String, AgentError> {
        Err(AgentError::Rejected("Rejected".into()))
    }

    async fn request_confirmation(
        &self,
        _device: OwnedObjectPath,
        _passkey: u32,
    ) -> Result<(), AgentError> {
        Err(AgentError::Rejected("Rejected".into()))
    }

    async fn request_authorization(&self, _device: OwnedObjectPath) -> Result<(), AgentError> {
        Err(AgentError::Rejected("Rejected".into()))
    }

    async fn authorize_service(
        &self,
        _device: OwnedObjectPath,
        _uuid: String,
    ) -> Result<(), AgentError> {
        Err(AgentError::Rejected("Rejected".into()))
    }

    async fn display_passkey(&self, _device: OwnedObjectPath, _passkey: u32, _entered: u16) {}

    async fn display_pin_code(&self, _device: OwnedObjectPath, _pincode: String) {}

    async fn cancel(&self) {
        log::debug!("BlueZ cancelled the pairing request");
    }

    async fn release(&self) {}
}

type Objects = HashMap<OwnedObjectPath, HashMap<String, HashMap<String, OwnedVariant>>>;

fn string_prop(props: &HashMap<String, OwnedVariant>, key: &str) -> Option<String> {
    match props.get(key).map(|v| &**v) {
        Some(Variant::Str(s)) => Some(s.to_string()),
        _ => None,
    }
}

fn bool_prop(props: &HashMap<String, OwnedVariant>, key: &str) -> bool {
    matches!(props.get(key).map(|v| &**v), Some(Variant::Bool(true)))
}

/// A BlueZ error reply by its name (`org.bluez.Error.AuthenticationFailed`), else the text.
fn classify(e: zbus::Error) -> PairError {
    match &e {
        zbus::Error::MethodError(name, message, _) => {
            let message = message.clone().unwrap_or_default();
            match name.as_str().strip_prefix("org.bluez.Error.") {
                Some("AuthenticationFailed") => PairError::AuthenticationFailed,
                Some("AuthenticationCanceled" | "AuthenticationRejected") => PairError::Canceled,
                Some("ConnectionAttemptFailed" | "AuthenticationTimeout") => {
                    PairError::NoConnection(message)
                }
                _ => PairError::Bluez {
                    name: name.to_string(),
                    message,
                },
            }
        }
        zbus::Error::FDO(f) => match **f {
            zbus::fdo::Error::AccessDenied(_) => PairError::AccessDenied,
            zbus::fdo::Error::ServiceUnknown(_) | zbus::fdo::Error::NameHasNoOwner(_) => {
                PairError::NoBluez(e.to_string())
            }
            _ => PairError::Bluez {
                name: "D-Bus".into(),
                message: e.to_string(),
            },
        },
        _ => PairError::NoBluez(e.to_string()),
    }
}

async fn objects(conn: &Connection) -> Result<Objects, PairError> {
    let reply = conn
        .call_method(
            Some(BLUEZ),
            "/",
            Some("org.freedesktop.DBus.ObjectManager"),
            "GetManagedObjects",
            &(),
        )
        .await
        .map_err(classify)?;
    reply.body().deserialize().map_err(classify)
}

/// The device object of `address` (on `adapter` when given), and whether it is paired and
/// connected; `None` when BlueZ does not know it.
fn find_device(
    objects: &Objects,
    address: &str,
    adapter: Option<&str>,
) -> Option<(OwnedObjectPath, bool, bool)> {
    objects.iter().find_map(|(path, ifaces)| {
        let dev = ifaces.get(DEVICE1)?;
        let on_adapter =
            adapter.is_none_or(|a| path.as_str().starts_with(&format!("/org/bluez/{a}/")));
        let same = string_prop(dev, "Address").is_some_and(|a| a.eq_ignore_ascii_case(address));
        (same && on_adapter).then(|| {
            (
                path.clone(),
                bool_prop(dev, "Paired"),
                bool_prop(dev, "Connected"),
            )
        })
    })
}

/// The adapter to scan on: the named one, else the first.
fn adapter_path(objects: &Objects, adapter: Option<&str>) -> Option<OwnedObjectPath> {
    let mut adapters: Vec<&OwnedObjectPath> = objects
        .iter()
        .filter(|(_, ifaces)| ifaces.contains_key(ADAPTER1))
        .map(|(p, _)| p)
        .collect();
    adapters.sort_by_key(|p| p.as_str().to_owned());
    adapters
        .into_iter()
        .find(|p| adapter.is_none_or(|a| p.as_str() == format!("/org/bluez/{a}")))
        .cloned()
}

async fn call(
    conn: &Connection,
    path: &str,
    iface: &str,
    method: &str,
    body: &(impl serde::Serialize + zbus::DynamicType),
) -> Result<(), PairError> {
    conn.call_method(Some(BLUEZ), path, Some(iface), method, body)
        .await
        .map(drop)
        .map_err(classify)
}

/// Finds the device in BlueZ, scanning for it when BlueZ does not know it yet.
async fn locate(
    conn: &Connection,
    address: &str,
    adapter: Option<&str>,
) -> Result<(OwnedObjectPath, bool, bool), PairError> {
    let list = objects(conn).await?;
    if let Some(found) = find_device(&list, address, adapter) {
        return Ok(found);
    }
    let scan_on = adapter_path(&list, adapter).ok_or(PairError::NoAdapter)?;
    log::info!("{address} is not known to BlueZ yet: scanning for it");
    call(conn, scan_on.as_str(), ADAPTER1, "StartDiscovery", &()).await?;
    let deadline = Instant::now() + FIND_TIMEOUT;
    let found = loop {
        if let Some(found) = find_device(&objects(conn).await?, address, adapter) {
            break Some(found);
        }
        if Instant::now() >= deadline {
            break None;
        }
        sleep(FIND_EVERY).await;
    };
    // Our discovery session only; BlueZ keeps scanning while another client has one.
    let _ = call(conn, scan_on.as_str(), ADAPTER1, "StopDiscovery", &()).await;
    found.ok_or(PairError::NotFound {
        after: FIND_TIMEOUT,
    })
}

/// Pairs with `address` using `passkey`. A device BlueZ already has a bond with is left as
/// it is ([`Paired::Already`]); one that was not connected before is disconnected after (a
/// JBD BMS takes one connection).
pub async fn pair(
    address: &str,
    adapter: Option<&str>,
    passkey: Passkey,
) -> Result<Paired, PairError> {
    let conn = Connection::system()
        .await
        .map_err(|e| PairError::NoBluez(e.to_string()))?;
    let bluez: String = conn
        .call_method(
            Some("org.freedesktop.DBus"),
            "/org/freedesktop/DBus",
            Some("org.freedesktop.DBus"),
            "GetNameOwner",
            &(BLUEZ,),
        )
        .await
        .and_then(|reply| reply.body().deserialize())
        .map_err(|e| PairError::NoBluez(e.to_string()))?;
    let (device, paired, connected) = locate(&conn, address, adapter).await?;
    if paired {
        return Ok(Paired::Already);
    }
    let asked = Arc::new(AtomicBool::new(false));
    let agent = Agent {
        passkey,
        device: device.clone(),
        bluez,
        asked: asked.clone(),
    };
    conn.object_server()
        .at(AGENT_PATH, agent)
        .await
        .map_err(classify)?;
    let agent_path = OwnedObjectPath::try_from(AGENT_PATH).expect("a valid object path");
    let registered = call(
        &conn,
        "/org/bluez",
        "org.bluez.AgentManager1",
        "RegisterAgent",
        &(&agent_path, AGENT_CAPABILITY),
    )
    .await;
    let result = match registered {
        Err(e) => Err(e),
        Ok(()) => {
            let outcome = match timeout(
                PAIR_TIMEOUT,
                call(&conn, device.as_str(), DEVICE1, "Pair", &()),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => {
                    let _ = call(&conn, device.as_str(), DEVICE1, "CancelPairing", &()).await;
                    Err(PairError::Timeout(PAIR_TIMEOUT))
                }
            };
            let _ = call(
                &conn,
                "/org/bluez",
                "org.bluez.AgentManager1",
                "UnregisterAgent",
                &(&agent_path,),
            )
            .await;
            outcome
        }
    };
    let _ = conn.object_server().remove::<Agent, _>(AGENT_PATH).await;
    let result = match result {
        Ok(()) => Ok(Paired::Now),
        Err(PairError::Bluez { name, .. }) if name == "org.bluez.Error.AlreadyExists" => {
            Ok(Paired::Already)
        }
        Err(e) => Err(e),
    };
    if result == Ok(Paired::Now) && !asked.load(Ordering::SeqCst) {
        log::warn!(
            "{address}: BlueZ paired without asking for the passkey (not an authenticated bond): if the device still echoes, remove it (`bluetoothctl remove {address}`) and pair again"
        );
    }
    if !connected {
        let _ = call(&conn, device.as_str(), DEVICE1, "Disconnect", &()).await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_answers_only_bluez_and_only_for_the_device_being_paired() {
        let path = |p: &str| OwnedObjectPath::try_from(p).unwrap();
        let agent = Agent {
            passkey: Passkey::parse("123456").unwrap(),
            device: path("/org/bluez/hci0/dev_AA_BB_CC_DD_EE_01"),
            bluez: ":1.7".into(),
            asked: Arc::default(),
        };
        let ours = path("/org/bluez/hci0/dev_AA_BB_CC_DD_EE_01");
        let other = path("/org/bluez/hci0/dev_AA_BB_CC_DD_EE_02");
        assert!(agent.may_answer(Some(":1.7"), &ours));
        assert!(!agent.may_answer(Some(":1.8"), &ours), "another client");
        assert!(!agent.may_answer(Some(":1.7"), &other), "another device");
        assert!(!agent.may_answer(Some(":1.8"), &other));
        assert!(!agent.may_answer(None, &ours));
    }

    #[test]
    fn devices_are_found_by_address_on_the_named_adapter() {
        let path = |p: &str| OwnedObjectPath::try_from(p).unwrap();
        let device = |addr: &str, paired: bool| {
            let mut props = HashMap::new();
            props.insert(
                "Address".to_string(),
                OwnedVariant::try_from(Variant::from(addr)).unwrap(),
            );
            props.insert(
                "Paired".to_string(),
                OwnedVariant::try_from(Variant::from(paired)).unwrap(),
            );
            let mut ifaces = HashMap::new();
            ifaces.insert(DEVICE1.to_string(), props);
            ifaces
        };
        let mut objects: Objects = HashMap::new();
        objects.insert(
            path("/org/bluez/hci0/dev_AA"),
            device("AA:BB:CC:DD:EE:01", false),
        );
        objects.insert(
            path("/org/bluez/hci1/dev_AA"),
            device("AA:BB:CC:DD:EE:01", true),
        );
        let mut adapter = HashMap::new();
        adapter.insert(ADAPTER1.to_string(), HashMap::new());
        objects.insert(path("/org/bluez/hci1"), adapter.clone());
        objects.insert(path("/org/bluez/hci0"), adapter);
        let found = find_device(&objects, "aa:bb:cc:dd:ee:01", Some("hci1")).unwrap();
        assert_eq!(
            (found.0.as_str(), found.1),
            ("/org/bluez/hci1/dev_AA", true)
        );
        let found = find_device(&objects, "AA:BB:CC:DD:EE:01", Some("hci0")).unwrap();
        assert_eq!(
            (found.0.as_str(), found.1),
            ("/org/bluez/hci0/dev_AA", false)
        );
        assert!(find_device(&objects, "AA:BB:CC:DD:EE:02", None).is_none());
        assert_eq!(
            adapter_path(&objects, None).unwrap().as_str(),
            "/org/bluez/hci0",
            "the first adapter"
        );
        assert_eq!(
            adapter_path(&objects, Some("hci1")).unwrap().as_str(),
            "/org/bluez/hci1"
        );
        assert!(adapter_path(&objects, Some("hci2")).is_none());
    }
}

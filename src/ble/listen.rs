//! Passive listening: a scan kept running per adapter while anyone needs it (a passive
//! device's listener, or a link searching for its device), and each listened-for device's
//! newest advertisement, handed over by the adapter's event forwarder.
//!
//! BlueZ keeps one discovery session per D-Bus client: a second `StartDiscovery` from us is
//! `InProgress` (it runs: ours), and one `StopDiscovery` ends it for every user of ours. So
//! every user of the scan is counted here, and only the last one to leave stops it. btleplug's
//! `start_scan` asks for `DuplicateData`, so BlueZ signals the manufacturer data of every
//! advertisement, changed or not (org.bluez.Adapter1 `SetDiscoveryFilter`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::Duration;

use btleplug::api::{BDAddr, Central, Peripheral as _, ScanFilter};
use btleplug::platform::{Adapter, PeripheralId};
use tokio::sync::{Mutex, watch};

use super::bounded;
use crate::transport::{Advert, Cause, LinkError};

/// One adapter's scan and how many use it.
pub(super) struct Scanner {
    adapter: Adapter,
    users: Mutex<usize>,
    bound: Duration,
}

impl Scanner {
    pub(super) fn new(adapter: Adapter, bound: Duration) -> Arc<Self> {
        Arc::new(Scanner {
            adapter,
            users: Mutex::new(0),
            bound,
        })
    }

    /// Counts a user in, into `slot`, and makes sure the adapter scans. The membership is in
    /// the caller's slot before the scan is asked for, so a caller cancelled while BlueZ
    /// answers (a stop, a timeout) still holds it and leaves. It counts even when the scan
    /// could not be started (the error says why): leaving is the same either way.
    pub(super) async fn join(
        self: &Arc<Self>,
        slot: &mut Option<Membership>,
    ) -> Result<(), LinkError> {
        let mut users = self.users.lock().await;
        *users += 1;
        // A membership already in the slot (callers leave first) would leave when dropped.
        *slot = Some(Membership(Some(self.clone())));
        self.start().await
    }

    /// Makes sure the adapter scans: started now, or already ours (BlueZ's InProgress). After
    /// a bluetoothd restart or an adapter reset the scan is gone: this starts it again.
    pub(super) async fn start(&self) -> Result<(), LinkError> {
        match bounded(
            "starting a scan",
            self.bound,
            self.adapter.start_scan(ScanFilter::default()),
        )
        .await
        {
            Err(e) if e.cause() == Some(Cause::InProgress) => Ok(()),
            other => other,
        }
    }

    async fn leave(&self) {
        let mut users = self.users.lock().await;
        *users = users.saturating_sub(1);
        if *users == 0 {
            let _ = bounded("stopping the scan", self.bound, self.adapter.stop_scan()).await;
        }
    }
}

/// A user of a [`Scanner`]: leaves with [`leave`], or, as a last resort, when
/// dropped (a task of its own). Should the process exit first, BlueZ ends our discovery
/// session when we leave the bus.
pub(super) struct Membership(Option<Arc<Scanner>>);

/// Leaves the scan if `slot` holds a membership (the counterpart of [`Scanner::join`]).
pub(super) async fn leave(slot: &mut Option<Membership>) {
    if let Some(s) = slot.take().and_then(|mut m| m.0.take()) {
        s.leave().await;
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        if let Some(s) = self.0.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move { s.leave().await });
        }
    }
}

/// Who listens for which device's advertisements (address, company id): the newest one
/// heard goes into that listener's watch.
#[derive(Clone, Default)]
pub(super) struct Listeners(Arc<SyncMutex<ByDevice>>);

/// Each listened-for (address, company id) and its listener's watch.
type ByDevice = HashMap<(BDAddr, u16), watch::Sender<Option<Advert>>>;

impl Listeners {
    /// Registers a listener; it is removed when the [`Entry`] is dropped.
    pub(super) fn add(&self, address: BDAddr, company: u16) -> Entry {
        let (tx, rx) = watch::channel(None);
        self.lock().insert((address, company), tx);
        Entry {
            listeners: self.clone(),
            key: (address, company),
            rx,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ByDevice> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Hands one device's manufacturer data to whoever listens for it.
    fn hear(&self, address: BDAddr, data: &HashMap<u16, Vec<u8>>) {
        let listeners = self.lock();
        for (company, bytes) in data {
            if let Some(tx) = listeners.get(&(address, *company)) {
                tx.send_replace(Some(Advert {
                    data: bytes.clone(),
                    heard: tokio::time::Instant::now(),
                }));
            }
        }
    }
}

/// One registered listener: its newest advertisement.
pub(super) struct Entry {
    listeners: Listeners,
    key: (BDAddr, u16),
    rx: watch::Receiver<Option<Advert>>,
}

impl Entry {
    /// Waits for an advertisement newer than the last one returned; returns the newest.
    pub(super) async fn next(&mut self) -> Result<Advert, LinkError> {
        loop {
            self.rx
                .changed()
                .await
                .map_err(|_| LinkError::NotConnected)?;
            if let Some(a) = self.rx.borrow_and_update().clone() {
                return Ok(a);
            }
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.listeners.lock().remove(&self.key);
    }
}

/// Peripheral ids seen, and their addresses: at most this many are remembered (devices with
/// rotating random addresses come and go).
const ADDRESSES_KEPT: usize = 1024;

/// A map that forgets everything when it is full: a cache of what is cheap to look up again.
struct Forgetful<K, V> {
    map: HashMap<K, V>,
    max: usize,
}

impl<K: std::hash::Hash + Eq, V: Copy> Forgetful<K, V> {
    fn new(max: usize) -> Self {
        Forgetful {
            map: HashMap::new(),
            max,
        }
    }

    fn get(&self, k: &K) -> Option<V> {
        self.map.get(k).copied()
    }

    fn insert(&mut self, k: K, v: V) {
        if self.map.len() >= self.max {
            self.map.clear();
        }
        self.map.insert(k, v);
    }
}

/// The forwarder's side: turns btleplug's manufacturer data events into listeners' adverts.
pub(super) struct Hearing {
    adapter: Adapter,
    listeners: Listeners,
    addresses: Forgetful<PeripheralId, BDAddr>,
}

impl Hearing {
    pub(super) fn new(adapter: Adapter, listeners: Listeners) -> Self {
        Hearing {
            adapter,
            listeners,
            addresses: Forgetful::new(ADDRESSES_KEPT),
        }
    }

    /// One `ManufacturerDataAdvertisement`. Nobody listening (the usual case): nothing is
    /// done. A peripheral seen for the first time costs one bounded BlueZ call for its address.
    pub(super) async fn heard(&mut self, id: PeripheralId, data: HashMap<u16, Vec<u8>>) {
        if self.listeners.is_empty() {
            return;
        }
        let address = match self.addresses.get(&id) {
            Some(a) => a,
            None => {
                let Ok(p) = bounded(
                    "looking up a device",
                    Duration::from_secs(2),
                    self.adapter.peripheral(&id),
                )
                .await
                else {
                    return;
                };
                self.addresses.insert(id, p.address());
                p.address()
            }
        };
        self.listeners.hear(address, &data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8) -> BDAddr {
        BDAddr::from([0xDE, 0xAD, 0xBE, 0xEF, 0, last])
    }

    #[test]
    fn the_address_cache_is_bounded_and_starts_over_when_full() {
        let mut c = Forgetful::new(3);
        for i in 0..3u8 {
            c.insert(i, addr(i));
        }
        assert!(
            (0..3u8).all(|i| c.get(&i) == Some(addr(i))),
            "up to its size, all kept"
        );
        c.insert(9, addr(9));
        assert_eq!(c.map.len(), 1, "full: forgotten, then the new one kept");
        assert_eq!((c.get(&0), c.get(&9)), (None, Some(addr(9))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_listener_gets_the_newest_advert_of_its_address_and_company_only() {
        let listeners = Listeners::default();
        let mut entry = listeners.add(addr(1), 0x02E1);
        listeners.hear(addr(2), &HashMap::from([(0x02E1, vec![2])]));
        listeners.hear(addr(1), &HashMap::from([(0x004C, vec![3])]));
        listeners.hear(addr(1), &HashMap::from([(0x02E1, vec![4])]));
        listeners.hear(
            addr(1),
            &HashMap::from([(0x02E1, vec![5]), (0x004C, vec![6])]),
        );
        assert_eq!(entry.next().await.unwrap().data, [5], "the newest");
        // Nothing new: it waits.
        assert!(
            tokio::time::timeout(Duration::from_millis(10), entry.next())
                .await
                .is_err()
        );
        listeners.hear(addr(1), &HashMap::from([(0x02E1, vec![7])]));
        assert_eq!(entry.next().await.unwrap().data, [7]);
        drop(entry);
        assert!(listeners.is_empty(), "a dropped listener is gone");
    }
}

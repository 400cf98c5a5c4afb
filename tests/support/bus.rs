//! An in-process D-Bus broker (busd) on a unix socket in a temporary directory.
//!
//! `PrivateBus::start()` runs `busd::bus::Bus` on its own std thread inside
//! `zruntime::block_on` (busd is not tokio-based) and returns once the socket listens.
//! Dropping the handle stops the accept loop and removes the temporary directory. Connections
//! that are still open at that point may linger on zruntime's helper thread until their peers
//! hang up; that is harmless in a test process. Several buses can run in one process.
//!
//! busd differs from dbus-daemon in one way that matters here: a method call to a well-known
//! name that nobody owns (e.g. `org.bluez` while the mock is restarting) gets no reply at all,
//! where dbus-daemon answers `org.freedesktop.DBus.Error.ServiceUnknown` at once; the caller
//! waits for its own timeout (libdbus/bluez-async: 30 s). [`PrivateBus::start_dbus_daemon`]
//! runs Debian's `dbus-daemon --session` instead, where it is installed.

#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    sync::mpsc,
    thread,
    time::Duration,
};

use futures::{channel::oneshot, future::Either};

pub struct PrivateBus {
    dir: Option<tempfile::TempDir>,
    socket: PathBuf,
    address: String,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
    daemon: Option<std::process::Child>,
}

impl PrivateBus {
    /// Start a bus listening on `<new temp dir>/bus.sock`. Panics if it cannot be started.
    pub fn start() -> PrivateBus {
        let dir = tempfile::Builder::new()
            .prefix("blebatt-bus-")
            .tempdir()
            .expect("create temp dir for the bus socket");
        let socket = dir.path().join("bus.sock");
        let mut bus = Self::start_at(&socket);
        bus.dir = Some(dir);
        bus
    }

    /// Start a bus on the given socket path (a stale socket file there is removed first). The
    /// caller owns the directory; Drop removes only the socket file.
    pub fn start_at(socket: &Path) -> PrivateBus {
        let _ = std::fs::remove_file(socket);
        let address = format!("unix:path={}", socket.display());
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let bus_address = address.clone();
        let thread = thread::Builder::new()
            .name("private-busd".into())
            .spawn(move || {
                zruntime::block_on(async move {
                    let mut bus = match busd::bus::Bus::for_address(Some(&bus_address)).await {
                        Ok(bus) => bus,
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("{e:#}")));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    let run = Box::pin(async {
                        let res = bus.run().await;
                        if let Err(e) = &res {
                            eprintln!("[private-bus] bus stopped: {e:#}");
                        }
                    });
                    match futures::future::select(run, shutdown_rx).await {
                        Either::Left(((), _)) => {}
                        Either::Right((_, run)) => drop(run),
                    }
                    let _ = bus.cleanup().await;
                });
            })
            .expect("spawn bus thread");
        match ready_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("busd failed to start on {address}: {e}"),
            Err(e) => panic!("busd did not start on {address}: {e}"),
        }
        // The listener is bound once `for_address` returns; double-check that it accepts.
        wait_for_socket(socket, Duration::from_secs(5));
        PrivateBus {
            dir: None,
            socket: socket.to_path_buf(),
            address,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
            daemon: None,
        }
    }

    /// A private `dbus-daemon --session` (the reference implementation) on
    /// `<new temp dir>/bus.sock`, or `None` if `dbus-daemon` is not installed or fails to start.
    pub fn start_dbus_daemon() -> Option<PrivateBus> {
        use std::io::BufRead;
        let dir = tempfile::Builder::new()
            .prefix("blebatt-dbus-")
            .tempdir()
            .ok()?;
        let socket = dir.path().join("bus.sock");
        let address = format!("unix:path={}", socket.display());
        let mut child = std::process::Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--nopidfile", "--print-address=1"])
            .arg(format!("--address={address}"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        // It prints its address once it listens.
        let mut line = String::new();
        let stdout = child.stdout.take()?;
        let read = std::io::BufReader::new(stdout).read_line(&mut line);
        if read.is_err() || !line.starts_with("unix:") {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        Some(PrivateBus {
            dir: Some(dir),
            socket,
            address,
            shutdown: None,
            thread: None,
            daemon: Some(child),
        })
    }

    /// Kills the dbus-daemon (every connection to it is lost at once). Panics on busd.
    pub fn kill_daemon(&mut self) {
        let mut child = self.daemon.take().expect("not a dbus-daemon bus");
        child.kill().expect("kill dbus-daemon");
        let _ = child.wait();
    }

    /// True for a dbus-daemon bus, false for busd.
    pub fn is_dbus_daemon(&self) -> bool {
        self.daemon.is_some()
    }

    /// The D-Bus address, `unix:path=...`, for `DBUS_SYSTEM_BUS_ADDRESS` or zbus.
    pub fn address(&self) -> String {
        self.address.clone()
    }

    /// The socket file.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }
}

fn wait_for_socket(socket: &Path, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if socket.exists() {
            return;
        }
        if std::time::Instant::now() > deadline {
            panic!("bus socket {} did not appear", socket.display());
        }
        thread::sleep(Duration::from_millis(5));
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            // The accept loop ends at once when told; do not hang a test if it does not.
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while !thread.is_finished() && std::time::Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
        let _ = std::fs::remove_file(&self.socket);
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

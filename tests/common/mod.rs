//! Shared by the integration tests: Telegraf's side of execd, and line-protocol helpers.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use influxdb_line_protocol::{FieldValue, ParsedLine, parse_lines};

pub const BIN: &str = env!("CARGO_BIN_EXE_blebatt");

/// blebatt with `args`, talking to the BlueZ on the private system bus at `bus_address` (and
/// to no session bus).
pub fn blebatt_on(bus_address: &str, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus_address)
        .env_remove("DBUS_SESSION_BUS_ADDRESS");
    c
}

pub fn parse_all(stdout: &str) -> Vec<ParsedLine<'_>> {
    parse_lines(stdout)
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("invalid line protocol: {e}\n{stdout}"))
}

pub fn field<'a, 'b>(line: &'a ParsedLine<'b>, key: &str) -> &'a FieldValue<'b> {
    line.field_set
        .iter()
        .find(|(k, _)| k.as_str() == key)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no field {key}"))
}

pub fn tag(line: &ParsedLine<'_>, key: &str) -> Option<String> {
    line.series
        .tag_set
        .as_ref()?
        .iter()
        .find(|(k, _)| k.as_str() == key)
        .map(|(_, v)| v.to_string())
}

pub fn assert_log_prefixes(stderr: &str) {
    for l in stderr.lines() {
        assert!(
            ["E! ", "W! ", "I! ", "D! "]
                .iter()
                .any(|p| l.starts_with(p)),
            "stderr line without a Telegraf level prefix: {l:?}"
        );
    }
}

/// Telegraf's side of execd: a child with piped stdin/stdout/stderr, each output read on a
/// thread of its own until EOF (a full stderr pipe must never block the child).
pub struct Execd {
    pub child: Child,
    /// stdout, line by line; disconnected once stdout reached EOF.
    pub lines: mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
    /// stderr so far, for [`Execd::wait_stderr`].
    stderr_so_far: std::sync::Arc<(std::sync::Mutex<String>, std::sync::Condvar)>,
    /// With [`Execd::spawn_unread`]: the stdout pipe, held open and never read.
    _unread: Option<std::process::ChildStdout>,
    /// The child's own state directory (energy counters), unless the test chose one: no test
    /// reads or leaves state in the machine's /var/lib/blebatt or home.
    _state: Option<tempfile::TempDir>,
}

impl Execd {
    pub fn start(args: &[&str]) -> Execd {
        Self::spawn(Command::new(BIN).args(args))
    }

    /// Starts a prepared command (e.g. with DBUS_SYSTEM_BUS_ADDRESS set).
    pub fn spawn(cmd: &mut Command) -> Execd {
        let mut e = Self::spawn_unread(cmd);
        let stdout = e._unread.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        e.lines = lines;
        e
    }

    /// Starts a prepared command whose stdout is never read (a Telegraf that is stuck):
    /// once the pipe is full, every write to it blocks.
    pub fn spawn_unread(cmd: &mut Command) -> Execd {
        let chosen = cmd.get_envs().any(|(k, _)| k == "STATE_DIRECTORY")
            || cmd.get_args().any(|a| a == "--state-dir");
        let state = (!chosen).then(|| tempfile::tempdir().unwrap());
        if let Some(dir) = &state {
            cmd.env("STATE_DIRECTORY", dir.path());
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let so_far = std::sync::Arc::new((
            std::sync::Mutex::new(String::new()),
            std::sync::Condvar::new(),
        ));
        let shared = so_far.clone();
        let stderr = std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines() {
                let Ok(l) = l else { break };
                let (text, cv) = &*shared;
                let mut text = text.lock().unwrap();
                text.push_str(&l);
                text.push('\n');
                cv.notify_all();
            }
            shared.0.lock().unwrap().clone()
        });
        Execd {
            child,
            lines: mpsc::channel().1,
            stderr: Some(stderr),
            stderr_so_far: so_far,
            _unread: Some(stdout),
            _state: state,
        }
    }

    /// Closes our end of the child's stdout (with [`Execd::spawn_unread`]): Telegraf gone.
    pub fn close_stdout(&mut self) {
        drop(self._unread.take().expect("spawned with spawn_unread"));
    }

    /// Waits until stderr contains `needle`; false if it did not within `within`.
    pub fn wait_stderr(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let (text, cv) = &*self.stderr_so_far;
        let mut text = text.lock().unwrap();
        while !text.contains(needle) {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            text = cv.wait_timeout(text, left).unwrap().0;
        }
        true
    }

    /// How often `needle` occurs in stderr so far.
    pub fn stderr_count(&self, needle: &str) -> usize {
        self.stderr_so_far.0.lock().unwrap().matches(needle).count()
    }

    /// The next stdout line, if one comes within `within`.
    pub fn try_line(&self, within: Duration) -> Option<String> {
        self.lines.recv_timeout(within).ok()
    }

    pub fn tick(&mut self) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    pub fn read_lines(&self, n: usize, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => got.push(l),
                Err(_) => panic!("got {} of {n} lines: {got:?}", got.len()),
            }
        }
        got
    }

    /// Waits for exit; returns (code, elapsed, stderr read to its EOF).
    pub fn wait(mut self, within: Duration) -> (Option<i32>, Duration, String) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let took = start.elapsed();
                let err = self.stderr.take().unwrap().join().unwrap();
                return (status.code(), took, err);
            }
            if start.elapsed() > within {
                let _ = self.child.kill();
                panic!("blebatt did not exit within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for exit, then every stdout line up to EOF (none is lost to the reader thread
    /// lagging behind the exit). Returns (code, elapsed, stdout lines, stderr).
    pub fn finish(mut self, within: Duration) -> (Option<i32>, Duration, Vec<String>, String) {
        let rx = std::mem::replace(&mut self.lines, mpsc::channel().1);
        let (code, took, stderr) = self.wait(within);
        let mut lines = Vec::new();
        // The child has exited: its stdout reaches EOF at once and the reader thread hangs up.
        loop {
            match rx.recv_timeout(within) {
                Ok(l) => lines.push(l),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("stdout did not reach EOF"),
            }
        }
        (code, took, lines, stderr)
    }

    /// Lines that arrive within `within` (no panic if fewer come).
    pub fn lines_within(&self, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => got.push(l),
                Err(_) => break,
            }
        }
        got
    }

    /// Sends SIGTERM, as Telegraf does 5 s after closing stdin.
    pub fn sigterm(&self) {
        sigterm(self.child.id());
    }

    /// Closes stdin, as Telegraf does to stop the plugin.
    pub fn close_stdin(&mut self) {
        drop(self.child.stdin.take());
    }
}

/// Sends SIGTERM to a process, as Telegraf does to stop its plugin.
pub fn sigterm(pid: u32) {
    let pid = pid.to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success(), "kill -TERM {pid} failed");
}

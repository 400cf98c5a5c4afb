//! Test harness for the real-database tests (`tests/databases.rs`, `tests/dashboards.rs`):
//! InfluxDB 1.x and VictoriaMetrics started on loopback with free ports and all data in a
//! temp dir, killed on drop; `blebatt run --demo` driven exactly as Telegraf's
//! `inputs.execd` (signal = "STDIN") drives it; its output parsed as line protocol.
//!
//! These tests are `#[ignore = "..."]` (they need servers) and `.ci/run` runs them with
//! `--ignored`: a missing server binary or a server that does not come up is a FAILURE, never
//! a skip.
//! Server binaries: Debian packages `influxdb` (`/usr/bin/influxd`) and `victoria-metrics`
//! (`/usr/bin/victoria-metrics`); override with `BLEBATT_INFLUXD` / `BLEBATT_VICTORIA_METRICS`.
//! The servers' traps are handled (and explained) in `Vm::start` and `Vm::export_when`.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// HTTP

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// Status and body of a response.
pub fn finish(
    what: &str,
    r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> (u16, String) {
    let mut resp = r.unwrap_or_else(|e| panic!("{what}: HTTP request failed: {e}"));
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(256 * 1024 * 1024)
        .read_to_string()
        .unwrap_or_else(|e| panic!("{what}: reading the response body failed: {e}"));
    (status, body)
}

// ---------------------------------------------------------------------------------------------
// Server processes

/// A free loopback port (bound, then released; the server binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("cannot bind 127.0.0.1:0")
        .port()
}

/// Finds a server binary: `$env_var`, else `name` on PATH, else /usr/bin/`name`.
/// Missing is a failure (the gate is open), with the package to install.
fn find_binary(env_var: &str, name: &str, package: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "{env_var}={} does not exist", p.display());
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "`{name}` was not found on PATH or in /usr/bin: install the Debian \
         package `{package}` (apt-get install -y {package}) or set {env_var}"
    );
}

/// One server process with its temp dir; killed (and its dir removed) on drop.
pub struct Server {
    name: &'static str,
    child: Child,
    log: PathBuf,
    pub base: String,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Last lines of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a server (up to 3 attempts, in case a free port got taken in between) and waits
/// until `ready` says it answers.
fn start_server(
    name: &'static str,
    launch: &dyn Fn(&Path, u16) -> Command,
    ready_path: &str,
    ready: &dyn Fn(u16, &str) -> bool,
) -> Server {
    let mut last_log = String::new();
    for attempt in 1..=3 {
        let dir = tempfile::Builder::new()
            .prefix(&format!("blebatt-{name}-"))
            .tempdir()
            .expect("cannot create a temp dir");
        let port = free_port();
        let log = dir.path().join("server.log");
        let log_file = std::fs::File::create(&log).expect("cannot create the server log");
        let mut cmd = launch(dir.path(), port);
        cmd.stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("cannot dup the log file"))
            .stderr(log_file);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        let mut server = Server {
            name,
            child,
            log,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .new_agent();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                last_log = server.log_tail();
                eprintln!("{name} exited with {status} on attempt {attempt}:\n{last_log}");
                break;
            }
            if let Ok(mut resp) = http.get(format!("{}{ready_path}", server.base)).call() {
                let status = resp.status().as_u16();
                let body = resp.body_mut().read_to_string().unwrap_or_default();
                if ready(status, &body) {
                    return server;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "{name} did not answer {ready_path} within 30 s:\n{}",
                    server.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("{name} failed to start 3 times; last log:\n{last_log}");
}

// ---------------------------------------------------------------------------------------------
// InfluxDB 1.x

pub struct Influx {
    pub server: Server,
    http: ureq::Agent,
}

pub const INFLUX_DB: &str = "blebatt";

impl Influx {
    /// Starts influxd on a free loopback port and creates database `blebatt`.
    pub fn start() -> Influx {
        let bin = find_binary("BLEBATT_INFLUXD", "influxd", "influxdb");
        let launch = |dir: &Path, port: u16| {
            // The RPC (backup/restore) listener gets a free port too, so nothing clashes with a
            // packaged influxd on 8086/8088.
            let rpc = free_port();
            let d = dir.display();
            let conf = format!(
                r#"reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"
[meta]
  dir = "{d}/meta"
[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
[monitor]
  store-enabled = false
"#
            );
            let path = dir.join("influxdb.conf");
            std::fs::write(&path, conf).expect("cannot write influxdb.conf");
            let mut cmd = Command::new(&bin);
            cmd.arg("-config").arg(path);
            cmd
        };
        let server = start_server("influxd", &launch, "/ping", &|status, _| status == 204);
        let influx = Influx {
            server,
            http: agent(),
        };
        influx.query(&format!("CREATE DATABASE {INFLUX_DB}"));
        influx
    }

    /// POSTs line protocol to /write?db=blebatt&precision=ns and expects 204.
    pub fn write(&self, body: &str) {
        let (status, text) = finish(
            "influx write",
            self.http
                .post(format!("{}/write", self.server.base))
                .query("db", INFLUX_DB)
                .query("precision", "ns")
                .send(body),
        );
        assert_eq!(
            status,
            204,
            "influx /write answered {status}: {text}\nserver log:\n{}",
            self.server.log_tail()
        );
    }

    /// Runs one InfluxQL statement (POST /query, epoch=ns); fails on HTTP or statement errors.
    /// Returns `results[0]`.
    pub fn query(&self, q: &str) -> Value {
        self.query_with(q, Some("ns"))
    }

    /// Like [`Influx::query`]; `epoch = None` returns RFC 3339 time strings.
    pub fn query_with(&self, q: &str, epoch: Option<&str>) -> Value {
        self.try_query(q, epoch).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs one InfluxQL statement; `Err` says what went wrong (HTTP or statement error).
    pub fn try_query(&self, q: &str, epoch: Option<&str>) -> Result<Value, String> {
        let mut req = self
            .http
            .post(format!("{}/query", self.server.base))
            .query("db", INFLUX_DB);
        if let Some(e) = epoch {
            req = req.query("epoch", e);
        }
        let (status, text) = finish("influx query", req.send_form([("q", q)]));
        if status != 200 {
            return Err(format!("InfluxQL {q:?} answered {status}: {text}"));
        }
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| format!("InfluxQL {q:?}: bad JSON ({e}): {text}"))?;
        if let Some(err) = v.get("error") {
            return Err(format!("InfluxQL {q:?} failed: {err}"));
        }
        let result = v["results"][0].clone();
        if let Some(err) = result.get("error") {
            return Err(format!("InfluxQL {q:?} failed: {err}"));
        }
        Ok(result)
    }
}

/// One InfluxQL result row: series name, series tags (GROUP BY), column -> value.
pub type InfluxRow = (String, BTreeMap<String, String>, BTreeMap<String, Value>);

/// The rows of an InfluxQL result as (series name, series tags, column -> value) maps.
pub fn influx_rows(result: &Value) -> Vec<InfluxRow> {
    let mut rows = Vec::new();
    for series in result["series"].as_array().into_iter().flatten() {
        let name = series["name"].as_str().unwrap_or_default().to_string();
        let tags: BTreeMap<String, String> = series["tags"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        let columns: Vec<String> = series["columns"]
            .as_array()
            .expect("series without columns")
            .iter()
            .map(|c| c.as_str().expect("column name").to_string())
            .collect();
        for values in series["values"].as_array().into_iter().flatten() {
            let row: BTreeMap<String, Value> = columns
                .iter()
                .cloned()
                .zip(values.as_array().expect("row").iter().cloned())
                .collect();
            rows.push((name.clone(), tags.clone(), row));
        }
    }
    rows
}

// ---------------------------------------------------------------------------------------------
// VictoriaMetrics

pub struct Vm {
    pub server: Server,
    http: ureq::Agent,
}

/// One exported series: labels (with `__name__`) and (timestamp ms, value) samples.
#[derive(Debug, Clone)]
pub struct VmSeries {
    pub labels: BTreeMap<String, String>,
    pub samples: Vec<(i64, f64)>,
}

impl VmSeries {
    pub fn name(&self) -> &str {
        &self.labels["__name__"]
    }
}

impl Vm {
    /// Starts victoria-metrics on a free loopback port. `-retentionPeriod=100y` (the default
    /// month silently drops older points) and `-search.latencyOffset=0s` (the default hides
    /// the last 30 s from queries).
    pub fn start() -> Vm {
        let bin = find_binary(
            "BLEBATT_VICTORIA_METRICS",
            "victoria-metrics",
            "victoria-metrics",
        );
        let launch = |dir: &Path, port: u16| {
            let mut cmd = Command::new(&bin);
            cmd.arg(format!("-storageDataPath={}", dir.join("vm").display()))
                .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
                .arg("-retentionPeriod=100y")
                .arg("-search.latencyOffset=0s");
            cmd
        };
        let server = start_server("victoria-metrics", &launch, "/health", &|status, body| {
            status == 200 && body.trim() == "OK"
        });
        Vm {
            server,
            http: agent(),
        }
    }

    /// POSTs line protocol to the Influx-compatible /write?precision=ns; expects 204.
    pub fn write(&self, body: &str) {
        self.write_with(body, &[]);
    }

    /// Like [`Vm::write`] with extra query parameters: Telegraf's `outputs.influxdb` always
    /// sends `db=<database>` (default "telegraf"), which VictoriaMetrics turns into a `db` label.
    pub fn write_with(&self, body: &str, params: &[(&str, &str)]) {
        let mut req = self
            .http
            .post(format!("{}/write", self.server.base))
            .query("precision", "ns");
        for (k, v) in params {
            req = req.query(*k, *v);
        }
        let (status, text) = finish("vm write", req.send(body));
        assert_eq!(
            status,
            204,
            "victoria-metrics /write answered {status}: {text}\nserver log:\n{}",
            self.server.log_tail()
        );
    }

    /// /api/v1/export for a series selector, all time.
    pub fn export(&self, selector: &str) -> Vec<VmSeries> {
        let (status, text) = finish(
            "vm export",
            self.http
                .get(format!("{}/api/v1/export", self.server.base))
                .query("match[]", selector)
                .query("start", "0")
                .call(),
        );
        assert_eq!(status, 200, "export {selector} answered {status}: {text}");
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: Value = serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("export: bad JSON line ({e}): {l}"));
                let labels = v["metric"]
                    .as_object()
                    .expect("metric")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                let ts = v["timestamps"].as_array().expect("timestamps");
                let vals = v["values"].as_array().expect("values");
                let samples = ts
                    .iter()
                    .zip(vals)
                    .map(|(t, x)| {
                        let value = x.as_f64().unwrap_or_else(|| {
                            // VictoriaMetrics writes NaN/Inf as strings; blebatt never emits them.
                            panic!("export: non-numeric value {x} in {l}")
                        });
                        (t.as_i64().expect("timestamp"), value)
                    })
                    .collect();
                VmSeries { labels, samples }
            })
            .collect()
    }

    /// Total number of series in the database (`/api/v1/series/count`).
    pub fn series_count(&self) -> u64 {
        let data = self.api("/api/v1/series/count", &[]);
        data[0]
            .as_u64()
            .unwrap_or_else(|| panic!("series/count: {data}"))
    }

    /// Waits until `want_series` series exist and then until `want_samples` samples of
    /// `selector` are exported, for up to `within` in all. Returns what it last saw.
    ///
    /// Trap (victoria-metrics 1.79): new series become searchable ~1 s after the write, and a
    /// search that runs BEFORE that caches its miss for ~10 s. So first poll
    /// /api/v1/series/count (which does not go through that cache) and only then export.
    pub fn export_when(
        &self,
        selector: &str,
        want_series: u64,
        want_samples: usize,
        within: Duration,
    ) -> Vec<VmSeries> {
        let deadline = Instant::now() + within;
        while self.series_count() < want_series && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        loop {
            let series = self.export(selector);
            let n: usize = series.iter().map(|s| s.samples.len()).sum();
            if n >= want_samples || Instant::now() > deadline {
                return series;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A PromQL/MetricsQL API call (`path` like "/api/v1/query"), parameters as given.
    /// Fails on HTTP errors or `status != success`; returns `data`.
    pub fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        self.try_api(path, params).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Vm::api`], with the failure as `Err`.
    pub fn try_api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let (status, text) = finish(
            "vm api",
            self.http
                .post(format!("{}{path}", self.server.base))
                .send_form(params.iter().copied()),
        );
        if status != 200 {
            return Err(format!("{path} {params:?} answered {status}: {text}"));
        }
        let v: Value =
            serde_json::from_str(&text).map_err(|e| format!("{path}: bad JSON ({e}): {text}"))?;
        if v["status"] != "success" {
            return Err(format!("{path} {params:?}: {text}"));
        }
        Ok(v["data"].clone())
    }
}

// ---------------------------------------------------------------------------------------------
// blebatt under an emulated Telegraf inputs.execd (signal = "STDIN")

pub const BLEBATT: &str = env!("CARGO_BIN_EXE_blebatt");

/// What a run printed.
pub struct DemoRun {
    /// Every stdout line (without newline).
    pub lines: Vec<String>,
    pub stderr: String,
}

impl DemoRun {
    /// All lines, newline-terminated: a line-protocol body to POST.
    pub fn body(&self) -> String {
        self.lines.iter().map(|l| format!("{l}\n")).collect()
    }
}

/// Demo devices: 2 JBD packs + 1 PowerMon, one line each per tick.
pub const DEMO_LINES_PER_TICK: usize = 6;

/// A VictoriaMetrics selector for every series of these lines' measurements.
pub fn vm_selector(lines: &[Line]) -> String {
    let measurements: BTreeSet<&str> = lines.iter().map(|l| l.measurement.as_str()).collect();
    let names: Vec<&str> = measurements.into_iter().collect();
    format!(r#"{{__name__=~"({})_.+"}}"#, names.join("|"))
}

/// Spawns `blebatt run --demo`, writes "\n" `ticks` times `gap` apart (waiting for each tick's
/// 4 lines before the next), then closes stdin and expects exit 0 with nothing more printed.
pub fn run_demo(ticks: usize, gap: Duration) -> DemoRun {
    let mut child = Command::new(BLEBATT)
        .args(["run", "--demo"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {BLEBATT}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut stderr_pipe = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let out_thread = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr_pipe.read_to_string(&mut s);
        s
    });

    let mut lines = Vec::new();
    let mut failure = None;
    'ticks: for tick in 0..ticks {
        if tick > 0 {
            std::thread::sleep(gap);
        }
        if let Err(e) = stdin.write_all(b"\n").and_then(|()| stdin.flush()) {
            failure = Some(format!("tick {tick}: writing to stdin failed: {e}"));
            break;
        }
        for _ in 0..DEMO_LINES_PER_TICK {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(l) => lines.push(l),
                Err(e) => {
                    failure = Some(format!(
                        "tick {tick}: expected {DEMO_LINES_PER_TICK} lines, stdout gave {e:?} \
                         after {} lines",
                        lines.len()
                    ));
                    break 'ticks;
                }
            }
        }
    }
    // Telegraf stops the plugin by closing stdin; it must exit 0 well inside 5 s.
    drop(stdin);
    let started = Instant::now();
    let status = loop {
        match child.try_wait().expect("try_wait") {
            Some(s) => break Some(s),
            None if started.elapsed() > Duration::from_secs(5) => break None,
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    out_thread.join().unwrap();
    let extra: Vec<String> = rx.try_iter().collect();
    let stderr = err_thread.join().unwrap();
    if let Some(f) = failure {
        panic!("{f}\nstderr:\n{stderr}");
    }
    let status = status.unwrap_or_else(|| {
        panic!("blebatt did not exit within 5 s of stdin EOF\nstderr:\n{stderr}")
    });
    assert!(
        status.success(),
        "blebatt exited with {status} after stdin EOF\nstderr:\n{stderr}"
    );
    assert!(
        extra.is_empty(),
        "blebatt printed {} line(s) beyond {ticks} ticks x {DEMO_LINES_PER_TICK}: {extra:?}",
        extra.len()
    );
    assert_eq!(lines.len(), ticks * DEMO_LINES_PER_TICK);
    // Telegraf routes stderr by level prefix; anything else is logged as an error.
    for l in stderr.lines() {
        assert!(
            ["E! ", "W! ", "I! ", "D! "]
                .iter()
                .any(|p| l.starts_with(p)),
            "stderr line without a level prefix: {l:?}\nstderr:\n{stderr}"
        );
        assert!(!l.starts_with("E! "), "error logged by the demo: {l}");
    }
    DemoRun { lines, stderr }
}

// ---------------------------------------------------------------------------------------------
// What blebatt printed, parsed

/// One field value as line protocol typed it.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Float(f64),
    Int(i64),
    Bool(bool),
    Str(String),
}

impl Val {
    /// The InfluxDB 1.x type name (`SHOW FIELD KEYS`).
    pub fn influx_type(&self) -> &'static str {
        match self {
            Val::Float(_) => "float",
            Val::Int(_) => "integer",
            Val::Bool(_) => "boolean",
            Val::Str(_) => "string",
        }
    }
}

/// One printed line.
#[derive(Debug, Clone)]
pub struct Line {
    pub measurement: String,
    pub tags: BTreeMap<String, String>,
    pub fields: Vec<(String, Val)>,
    pub time_ns: i64,
}

impl Line {
    pub fn device(&self) -> &str {
        &self.tags["device"]
    }
}

/// Parses every line with `influxdb_line_protocol::parse_lines`; any error fails the test.
/// Every line must carry a timestamp and no unsigned (`u`) integers (Telegraf avoids them).
pub fn parse(lines: &[String]) -> Vec<Line> {
    lines
        .iter()
        .map(|text| {
            let mut parsed: Vec<_> = influxdb_line_protocol::parse_lines(text).collect();
            assert_eq!(parsed.len(), 1, "not exactly one line: {text:?}");
            let p = parsed
                .pop()
                .unwrap()
                .unwrap_or_else(|e| panic!("invalid line protocol ({e}): {text}"));
            let tags = p
                .series
                .tag_set
                .iter()
                .flatten()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let fields = p
                .field_set
                .iter()
                .map(|(k, v)| {
                    use influxdb_line_protocol::FieldValue as F;
                    let v = match v {
                        F::F64(x) => Val::Float(*x),
                        F::I64(x) => Val::Int(*x),
                        F::Boolean(b) => Val::Bool(*b),
                        F::String(s) => Val::Str(s.to_string()),
                        F::U64(x) => panic!("unsigned field {k}={x}u in {text}"),
                    };
                    (k.to_string(), v)
                })
                .collect();
            Line {
                measurement: p.series.measurement.to_string(),
                tags,
                fields,
                time_ns: p
                    .timestamp
                    .unwrap_or_else(|| panic!("line without timestamp: {text}")),
            }
        })
        .collect()
}

/// Float equality within 1e-9 relative (absolute near zero).
pub fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-300)
}

/// RFC 3339 UTC time as InfluxDB writes it (`2026-11-24T23:13:46.123456789Z`, trailing zeros
/// of the fraction trimmed) to Unix nanoseconds.
pub fn rfc3339_to_ns(s: &str) -> i64 {
    fn num(s: &str, part: &str) -> i64 {
        part.parse()
            .unwrap_or_else(|_| panic!("not an RFC 3339 UTC time: {s:?}"))
    }
    let (date, time) = s
        .strip_suffix('Z')
        .and_then(|s| s.split_once('T'))
        .unwrap_or_else(|| panic!("not an RFC 3339 UTC time: {s:?}"));
    let d: Vec<i64> = date.split('-').map(|x| num(s, x)).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let t: Vec<i64> = hms.split(':').map(|x| num(s, x)).collect();
    assert!(
        d.len() == 3 && t.len() == 3 && frac.len() <= 9,
        "bad time {s:?}"
    );
    let nanos = if frac.is_empty() {
        0
    } else {
        num(s, &format!("{frac:0<9}"))
    };
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m, day) = (d[0], d[1], d[2]);
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]) * 1_000_000_000) + nanos
}

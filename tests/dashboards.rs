//! The Grafana dashboards in grafana/ against blebatt's real output in real databases.
//!
//! - `dashboards_have_the_grafana_shape` (always runs, no servers): Grafana 10+ import
//!   format, one datasource input, the `device` variable, and every field/metric name a
//!   query spells out is in the schema of the measurement's kind (`devices/<kind>/fields.rs`).
//! - `every_dashboard_query_returns_data` (`#[ignore]`d: it needs servers; `.ci/run` runs
//!   it with `--ignored`): loads a few minutes of demo polls into InfluxDB 1.x and VictoriaMetrics, then runs EVERY variable
//!   query and EVERY panel target of the ten dashboards, with variables substituted as
//!   Grafana would, and fails on any query error, empty result, or (InfluxQL) a selected
//!   column that is null everywhere (a misspelt field among others).

mod db;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blebatt::devices::Kind;
use db::{Influx, Vm, influx_rows, parse, run_demo};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Lang {
    InfluxQl,
    PromQl,
}

/// (file, measurement, query language, which of its devices the dashboard's `device`
/// variable lists).
const DASHBOARDS: [(&str, &str, Lang, Devices); 10] = [
    ("jbd-influxdb.json", "jbd_bms", Lang::InfluxQl, Devices::All),
    (
        "jbd-victoriametrics.json",
        "jbd_bms",
        Lang::PromQl,
        Devices::All,
    ),
    (
        "powermon-influxdb.json",
        "powermon",
        Lang::InfluxQl,
        Devices::All,
    ),
    (
        "powermon-victoriametrics.json",
        "powermon",
        Lang::PromQl,
        Devices::All,
    ),
    ("jk-influxdb.json", "jk_bms", Lang::InfluxQl, Devices::All),
    (
        "jk-victoriametrics.json",
        "jk_bms",
        Lang::PromQl,
        Devices::All,
    ),
    (
        "victron-influxdb.json",
        "victron",
        Lang::InfluxQl,
        Devices::NotSolar,
    ),
    (
        "victron-victoriametrics.json",
        "victron",
        Lang::PromQl,
        Devices::NotSolar,
    ),
    (
        "victron-solar-influxdb.json",
        "victron",
        Lang::InfluxQl,
        Devices::Solar,
    ),
    (
        "victron-solar-victoriametrics.json",
        "victron",
        Lang::PromQl,
        Devices::Solar,
    ),
];

/// The devices of a measurement a dashboard is for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Devices {
    All,
    /// Victron solar chargers (their `product` tag names them SmartSolar / BlueSolar, or
    /// "solar charger").
    Solar,
    NotSolar,
}

impl Devices {
    fn includes(self, product: Option<&str>) -> bool {
        let solar = product.is_some_and(|p| p.to_ascii_lowercase().contains("solar"));
        match self {
            Devices::All => true,
            Devices::Solar => solar,
            Devices::NotSolar => !solar,
        }
    }
}

fn load(file: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("grafana")
        .join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: invalid JSON: {e}", path.display()))
}

/// Every panel, including those nested in (collapsed) rows.
fn panels(dash: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        out.push(p);
        for nested in p["panels"].as_array().into_iter().flatten() {
            out.push(nested);
        }
    }
    out
}

/// A query from the dashboard: where it is and its text.
struct Query {
    place: String,
    text: String,
    /// A `label_values(metric, label)` variable query (Grafana's, not PromQL).
    is_variable: bool,
}

/// Every query: the template variables' first, then each panel target's.
fn queries(file: &str, dash: &Value, lang: Lang) -> Vec<Query> {
    let mut out = Vec::new();
    for var in dash["templating"]["list"]
        .as_array()
        .expect("templating.list")
    {
        if var["type"] != "query" {
            continue;
        }
        let q = &var["query"];
        let text = q
            .as_str()
            .or_else(|| q["query"].as_str())
            .unwrap_or_else(|| panic!("{file}: variable {} has no query", var["name"]));
        out.push(Query {
            place: format!("{file}: variable ${}", var["name"].as_str().unwrap_or("?")),
            text: text.to_string(),
            is_variable: true,
        });
    }
    for p in panels(dash) {
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().unwrap_or("?");
        let targets = p["targets"].as_array();
        assert!(
            targets.is_some_and(|t| !t.is_empty()),
            "{file}: panel {title:?} has no targets"
        );
        for t in targets.into_iter().flatten() {
            let text = match lang {
                Lang::InfluxQl => {
                    // Builder-mode targets keep their query elsewhere; ours are all raw.
                    assert_eq!(
                        t["rawQuery"], true,
                        "{file}: panel {title:?} target {} is not a raw InfluxQL query",
                        t["refId"]
                    );
                    t["query"].as_str()
                }
                Lang::PromQl => t["expr"].as_str(),
            }
            .unwrap_or_else(|| {
                panic!("{file}: panel {title:?} target {} has no query", t["refId"])
            });
            assert!(
                !text.trim().is_empty(),
                "{file}: panel {title:?}: empty query"
            );
            out.push(Query {
                place: format!(
                    "{file}: panel {title:?} target {}",
                    t["refId"].as_str().unwrap_or("?")
                ),
                text: text.to_string(),
                is_variable: false,
            });
        }
    }
    out
}

/// The kind whose measurement a dashboard shows: its schema (`devices/<kind>/fields.rs`) is
/// what every name in the dashboard's queries is checked against.
fn kind_of(measurement: &str) -> &'static Kind {
    blebatt::devices::KINDS
        .iter()
        .copied()
        .find(|k| k.measurement == measurement)
        .unwrap_or_else(|| panic!("no kind has the measurement {measurement}"))
}

/// Identifiers written out literally in a query (not inside regexes): InfluxQL
/// double-quoted identifiers; PromQL bare names outside string literals.
fn literal_names(text: &str, lang: Lang) -> Vec<String> {
    let mut names = Vec::new();
    match lang {
        Lang::InfluxQl => {
            let mut parts = text.split('"');
            parts.next();
            while let Some(name) = parts.next() {
                names.push(name.to_string());
                parts.next();
            }
        }
        Lang::PromQl => {
            let mut in_string = false;
            let mut word = String::new();
            for c in text.chars().chain([' ']) {
                if c == '"' {
                    in_string = !in_string;
                    word.clear();
                    continue;
                }
                if in_string {
                    continue;
                }
                if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                    word.push(c);
                } else {
                    if !word.is_empty() {
                        names.push(std::mem::take(&mut word));
                    }
                }
            }
        }
    }
    names
}

#[test]
fn dashboards_have_the_grafana_shape() {
    for (file, measurement, lang, _) in DASHBOARDS {
        let kind = kind_of(measurement);
        let is_tag =
            |name: &str| ["device", "address"].contains(&name) || kind.tags.contains(&name);
        let is_field = |name: &str| kind.field(name).is_some();
        let dash = load(file);
        let version = dash["schemaVersion"].as_u64().unwrap_or(0);
        assert!(
            version >= 36,
            "{file}: schemaVersion {version} < 36 (Grafana 10+)"
        );
        assert!(
            dash["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{file}: title"
        );
        assert!(
            dash["uid"].as_str().is_some_and(|t| !t.is_empty()),
            "{file}: uid"
        );
        assert!(dash["id"].is_null(), "{file}: id must be null for import");

        // One datasource input, so the import dialog asks for it.
        let inputs = dash["__inputs"].as_array().expect("__inputs");
        assert_eq!(inputs.len(), 1, "{file}: __inputs");
        let input = &inputs[0];
        assert_eq!(input["type"], "datasource", "{file}: __inputs[0].type");
        let plugin = match lang {
            Lang::InfluxQl => "influxdb",
            Lang::PromQl => "prometheus",
        };
        assert_eq!(input["pluginId"], plugin, "{file}: __inputs[0].pluginId");
        let ds_uid = format!("${{{}}}", input["name"].as_str().expect("input name"));

        // The device variable: multi-select with All, from the data.
        let vars = dash["templating"]["list"]
            .as_array()
            .expect("templating.list");
        let device = vars
            .iter()
            .find(|v| v["name"] == "device")
            .unwrap_or_else(|| panic!("{file}: no `device` variable"));
        assert_eq!(device["type"], "query", "{file}: $device type");
        assert_eq!(device["multi"], true, "{file}: $device multi");
        assert_eq!(device["includeAll"], true, "{file}: $device includeAll");
        assert_eq!(
            device["datasource"]["uid"],
            ds_uid.as_str(),
            "{file}: $device datasource"
        );

        // Panels: unique ids, a grid position, the input's datasource everywhere.
        let all = panels(&dash);
        assert!(all.iter().any(|p| p["type"] != "row"), "{file}: no panels");
        let mut ids = BTreeSet::new();
        for p in &all {
            let title = p["title"].as_str().unwrap_or("?");
            assert!(
                ids.insert(p["id"].as_u64().expect("panel id")),
                "{file}: duplicate id in {title:?}"
            );
            for k in ["x", "y", "w", "h"] {
                assert!(p["gridPos"][k].is_u64(), "{file}: {title:?} gridPos.{k}");
            }
            if p["type"] == "row" {
                continue;
            }
            assert_eq!(
                p["datasource"]["uid"],
                ds_uid.as_str(),
                "{file}: {title:?} datasource"
            );
            for t in p["targets"].as_array().into_iter().flatten() {
                assert_eq!(
                    t["datasource"]["uid"],
                    ds_uid.as_str(),
                    "{file}: {title:?} target datasource"
                );
            }
        }

        // Every name a query spells out exists in blebatt's output.
        let fields: Vec<_> = (kind.schema)().iter().map(|f| f.key).collect();
        for q in queries(file, &dash, lang) {
            for name in literal_names(&q.text, lang) {
                let ok = match lang {
                    Lang::InfluxQl => name == measurement || is_tag(&name) || is_field(&name),
                    Lang::PromQl => match name.strip_prefix(&format!("{measurement}_")) {
                        Some(field) => is_field(field),
                        // Functions, keywords and label names.
                        None => !blebatt::devices::KINDS
                            .iter()
                            .any(|k| name.starts_with(k.measurement)),
                    },
                };
                assert!(
                    ok,
                    "{}: {name:?} is not in blebatt's {measurement} schema (query {:?}); fields: {fields:?}",
                    q.place, q.text
                );
            }
        }
    }
}

/// Milliseconds since the epoch.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Grafana's value for "All" of a multi-value variable in a regex context: `(a|b)`, each
/// value regex-escaped (nothing to escape in the demo's names beyond InfluxQL's `/`).
fn alternation(values: &[String]) -> String {
    let escaped: Vec<String> = values.iter().map(|v| escape(v)).collect();
    format!("({})", escaped.join("|"))
}

/// One selected value.
fn escape(value: &str) -> String {
    value.replace('/', "\\/")
}

/// Substitutes Grafana's variables; any `$name` left over is an unknown variable.
fn substitute(text: &str, device: &str, from_ms: i64, to_ms: i64) -> Result<String, String> {
    let range_s = (to_ms - from_ms) / 1000;
    let vars: [(&str, String); 9] = [
        ("$__interval_ms", "10000".into()),
        ("$__interval", "10s".into()),
        ("$__rate_interval", "1m".into()),
        ("$__range_ms", (to_ms - from_ms).to_string()),
        ("$__range_s", range_s.to_string()),
        ("$__range", format!("{range_s}s")),
        // What Grafana's InfluxDB datasource puts there.
        (
            "$timeFilter",
            format!("time >= {from_ms}ms and time <= {to_ms}ms"),
        ),
        ("${device}", device.into()),
        ("$device", device.into()),
    ];
    let mut out = text.replace("[[device]]", device);
    for (k, v) in &vars {
        out = out.replace(k, v);
    }
    let leftover = out.match_indices('$').map(|(i, _)| &out[i..]).find(|rest| {
        rest[1..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == '{')
    });
    match leftover {
        Some(rest) => Err(format!(
            "unknown variable at {:?}",
            &rest[..rest.len().min(20)]
        )),
        None => Ok(out),
    }
}

/// Checks an InfluxQL result: at least one series, and each selected column non-null in at
/// least one row (a misspelt field next to good ones comes back as an all-null column).
/// Exception: a regex field select (`mean(/^cell_[0-9]+$/)`) also yields columns for fields
/// only other devices have (cell_5..16 of a 4-cell pack): there, any non-null column will do.
fn check_influx(query: &str, result: &Value) -> Result<usize, String> {
    let series = result["series"].as_array().map(Vec::len).unwrap_or(0);
    if series == 0 {
        return Err("no series (empty result)".into());
    }
    let rows = influx_rows(result);
    let mut columns: BTreeMap<&str, bool> = BTreeMap::new();
    for (_, _, row) in &rows {
        for (k, v) in row {
            if k != "time" {
                *columns.entry(k.as_str()).or_default() |= !v.is_null();
            }
        }
    }
    let empty: Vec<&str> = columns
        .iter()
        .filter(|(_, any)| !**any)
        .map(|(k, _)| *k)
        .collect();
    let regex_select = query.contains("(/");
    let all_null = empty.len() == columns.len();
    if rows.is_empty() || all_null || (!regex_select && !empty.is_empty()) {
        return Err(format!(
            "{} rows; columns null everywhere: {empty:?}",
            rows.len()
        ));
    }
    Ok(rows.len())
}

/// Checks a PromQL range result: at least one series, each with at least one sample.
fn check_prom(data: &Value) -> Result<usize, String> {
    let result = data["result"].as_array().cloned().unwrap_or_default();
    if result.is_empty() {
        return Err("no series (empty result)".into());
    }
    for s in &result {
        let n = s["values"].as_array().map(Vec::len).unwrap_or(0);
        if n == 0 {
            return Err(format!("series {} has no samples", s["metric"]));
        }
    }
    Ok(result.len())
}

/// `label_values(metric, label)` -> (metric, label).
fn label_values_args(text: &str) -> Option<(String, String)> {
    let inner = text
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    let (metric, label) = inner.rsplit_once(',')?;
    Some((metric.trim().to_string(), label.trim().to_string()))
}

#[test]
#[ignore = "needs the influxdb and victoria-metrics servers; run by .ci/run"]
fn every_dashboard_query_returns_data() {
    // A few minutes' worth of polls: 60 ticks fed as fast as the demo answers, then spread
    // 5 s apart over the last 5 minutes (the newest keeps its real time).
    const TICKS: usize = 60;
    let run = run_demo(TICKS, Duration::ZERO);
    let spread: Vec<String> = run
        .lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let tick = (i / db::DEMO_LINES_PER_TICK) as i64;
            let (head, ts) = l.rsplit_once(' ').expect("line with timestamp");
            let ts: i64 = ts.parse().expect("timestamp");
            let shifted = ts - (TICKS as i64 - 1 - tick) * 5_000_000_000;
            format!("{head} {shifted}")
        })
        .collect();
    let lines = parse(&spread);
    let body: String = spread.iter().map(|l| format!("{l}\n")).collect();

    let influx = Influx::start();
    let vm = Vm::start();
    influx.write(&body);
    // As Telegraf's outputs.influxdb writes it: with db=telegraf, which becomes a label.
    vm.write_with(&body, &[("db", "telegraf")]);
    let samples: usize = lines.iter().map(|l| l.fields.len()).sum();
    let series: BTreeSet<(String, &BTreeMap<String, String>)> = lines
        .iter()
        .flat_map(|l| {
            l.fields
                .iter()
                .map(move |(f, _)| (format!("{}_{f}", l.measurement), &l.tags))
        })
        .collect();
    let seen = vm.export_when(
        &db::vm_selector(&lines),
        series.len() as u64,
        samples,
        Duration::from_secs(15),
    );
    let seen_samples: usize = seen.iter().map(|s| s.samples.len()).sum();
    assert_eq!(
        seen_samples, samples,
        "VictoriaMetrics did not show every sample in time"
    );

    let devices_of = |m: &str, which: Devices| -> Vec<String> {
        let set: BTreeSet<String> = lines
            .iter()
            .filter(|l| {
                l.measurement == m && which.includes(l.tags.get("product").map(String::as_str))
            })
            .map(|l| l.device().to_string())
            .collect();
        set.into_iter().collect()
    };

    let to_ms = now_ms() + 1000;
    let from_ms = to_ms - 3_600_000;
    let (start, end) = ((from_ms / 1000).to_string(), (to_ms / 1000).to_string());
    let mut failures = Vec::new();
    let mut ran = 0;
    for (file, measurement, lang, which) in DASHBOARDS {
        let dash = load(file);
        let expected_devices = devices_of(measurement, which);
        let all = queries(file, &dash, lang);
        assert!(
            all.iter().any(|q| q.is_variable),
            "{file}: no variable query"
        );

        // Variables first: what they return is what $device can be.
        let mut device_values: Option<Vec<String>> = None;
        for q in all.iter().filter(|q| q.is_variable) {
            ran += 1;
            let values: Result<Vec<String>, String> = match lang {
                Lang::InfluxQl => influx.try_query(&q.text, None).map(|r| {
                    influx_rows(&r)
                        .iter()
                        .filter_map(|(_, _, row)| row.get("value")?.as_str().map(String::from))
                        .collect()
                }),
                Lang::PromQl => {
                    let (metric, label) = label_values_args(&q.text).unwrap_or_else(|| {
                        panic!("{}: not label_values(metric, label): {}", q.place, q.text)
                    });
                    vm.try_api(
                        &format!("/api/v1/label/{label}/values"),
                        &[("match[]", &metric), ("start", &start), ("end", &end)],
                    )
                    .map(|d| {
                        d.as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|v| v.as_str().map(String::from))
                            .collect()
                    })
                }
            };
            match values {
                Ok(v) if v == expected_devices => device_values = Some(v),
                Ok(v) => failures.push(format!(
                    "{}: {:?} returned {v:?}, want {expected_devices:?}",
                    q.place, q.text
                )),
                Err(e) => failures.push(format!("{}: {e}", q.place)),
            }
        }
        let Some(device_values) = device_values else {
            continue;
        };

        // Panels: with "All" and with each single device selected.
        let mut selections = vec![alternation(&device_values)];
        selections.extend(device_values.iter().map(|d| escape(d)));
        for q in all.iter().filter(|q| !q.is_variable) {
            for device in &selections {
                ran += 1;
                let text = match substitute(&q.text, device, from_ms, to_ms) {
                    Ok(t) => t,
                    Err(e) => {
                        failures.push(format!("{}: {e} in {:?}", q.place, q.text));
                        continue;
                    }
                };
                let outcome = match lang {
                    Lang::InfluxQl => influx
                        .try_query(&text, Some("ms"))
                        .and_then(|r| check_influx(&text, &r)),
                    Lang::PromQl => vm
                        .try_api(
                            "/api/v1/query_range",
                            &[
                                ("query", &text),
                                ("start", &start),
                                ("end", &end),
                                ("step", "10"),
                            ],
                        )
                        .and_then(|d| check_prom(&d)),
                };
                if let Err(e) = outcome {
                    failures.push(format!(
                        "{} ($device={device}): {e}\n    query: {text}",
                        q.place
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {ran} dashboard queries failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!("{ran} dashboard queries returned data");
}

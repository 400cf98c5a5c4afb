//! Reads Influx line protocol on stdin and checks it, for the release checks (`release/build`)
//! of binaries run under emulation: every line parses (the `influxdb-line-protocol` crate,
//! as in the tests), its measurement is one of blebatt's, and there are as many lines as
//! asked.
//!
//! ```text
//! blebatt once --demo | cargo run --example check_lines -- demo    (a line per demo device)
//! blebatt once --jbd house=MAC | cargo run --example check_lines -- 1
//! ```
//!
//! Prints one summary line; exits 1 (with the reason on stderr) when a check fails.

use std::io::Read;

fn main() {
    let want: usize = match std::env::args().nth(1).as_deref() {
        // One line per demo device of every kind.
        Some("demo") => blebatt::devices::KINDS
            .iter()
            .map(|k| (k.demo)().len())
            .sum(),
        Some(n) => n.parse().unwrap_or_else(|_| fail("N: a number")),
        None => fail("usage: check_lines N|demo (the number of lines expected)"),
    };
    let mut text = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut text) {
        fail(&format!("cannot read stdin: {e}"));
    }
    let measurements: Vec<&str> = blebatt::devices::KINDS
        .iter()
        .map(|k| k.measurement)
        .collect();
    let mut n = 0;
    for (i, line) in influxdb_line_protocol::parse_lines(&text).enumerate() {
        let line = line.unwrap_or_else(|e| fail(&format!("line {}: {e}", i + 1)));
        let m = line.series.measurement.as_str();
        if !measurements.contains(&m) {
            fail(&format!("line {}: unknown measurement {m:?}", i + 1));
        }
        if line.timestamp.is_none() {
            fail(&format!("line {}: no timestamp", i + 1));
        }
        n += 1;
    }
    if n != want {
        fail(&format!("{n} lines, expected {want}"));
    }
    println!("ok: {n} valid line(s)");
}

fn fail(why: &str) -> ! {
    eprintln!("check_lines: {why}");
    std::process::exit(1)
}

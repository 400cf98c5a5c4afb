//! Per-frame cost of the hot path: reassembling 20-byte notifications, verifying and decoding
//! the JBD registers, decoding a PowerMon record, and formatting the line.
//! `cargo bench --bench protocol` prints the figures.

use std::hint::black_box;

use std::sync::Arc;

use blebatt::devices::jbd::demo::JbdSim;
use blebatt::devices::jbd::protocol::{
    self as jbd, BasicInfo, CellVoltages, JbdReading, Reassembler,
};
use blebatt::devices::powermon::demo::PowermonSim;
use blebatt::devices::powermon::protocol::PowermonReading;
use blebatt::output;
use blebatt::reading::Reading;
use criterion::{Criterion, criterion_group, criterion_main};

fn frames_16s() -> (Vec<u8>, Vec<u8>) {
    let sim = JbdSim {
        cells: 16,
        nominal_ah: 280.0,
        name: "BENCH",
        cell_mv: 3305.0,
        current_a: 12.5,
        ntc_count: 4,
        lock: None,
    };
    (sim.reply(0x03, 1.7e9), sim.reply(0x04, 1.7e9))
}

fn bench(c: &mut Criterion) {
    let (info, cells) = frames_16s();
    c.bench_function(
        "jbd 16s: reassemble 0x03+0x04 from 20-byte chunks and decode",
        |b| {
            let mut r = Reassembler::new();
            b.iter(|| {
                let mut out = Vec::with_capacity(2);
                for frame in [&info, &cells] {
                    for chunk in frame.chunks(20) {
                        out.extend(r.push(black_box(chunk)));
                    }
                }
                let i = BasicInfo::parse(out[0].as_ref().unwrap()).unwrap();
                let c = CellVoltages::parse(out[1].as_ref().unwrap()).unwrap();
                black_box((i, c))
            })
        },
    );

    let reading = Reading {
        derived: None,
        device: "bench".into(),
        address: "AA:BB:CC:DD:EE:FF".into(),
        time_ns: 1_700_000_000_000_000_000,
        values: Arc::new(JbdReading {
            info: BasicInfo::parse(&jbd::parse_frame(&info).unwrap()).unwrap(),
            cells: CellVoltages::parse(&jbd::parse_frame(&cells).unwrap()).unwrap(),
            model: Some("BENCH".into()),
        }),
    };
    c.bench_function("jbd 16s: format one line", |b| {
        let mut buf = Vec::with_capacity(2048);
        b.iter(|| {
            buf.clear();
            output::write_line(&mut buf, black_box(&reading));
            black_box(buf.len())
        })
    });

    let sim = PowermonSim {
        voltage_v: 13.3,
        current_a: -3.0,
    };
    let record = sim.record(1.7e9);
    c.bench_function("powermon: COBS decode + parse one record", |b| {
        b.iter(|| black_box(PowermonReading::parse(black_box(&record)).unwrap()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

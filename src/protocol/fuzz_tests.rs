//! Fuzzing the reassembler and every decoder with arbitrary bytes. `cargo test` runs the
//! default number of cases; `.ci/run` runs 1,000,000 (`PROPTEST_CASES=1000000`, release).
//! Properties: nothing panics, and every frame that comes out carries a valid checksum.

use super::jbd::{self, BasicInfo, CellVoltages, Reassembler};
use super::powermon::PowermonReading;
use proptest::prelude::*;

proptest! {
    #[test]
    fn fuzz_reassembler_and_jbd_decoders(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        chunk in 1usize..40,
        seed_frame in prop::option::of((3u8..=5, prop::collection::vec(any::<u8>(), 0..70))),
    ) {
        let mut input = bytes;
        if let Some((reg, data)) = seed_frame {
            // Half the time, plant a valid frame in the middle so decoders see real structure.
            let mid = input.len() / 2;
            let f = jbd::encode_reply(reg, 0, &data);
            input.splice(mid..mid, f);
        }
        let mut r = Reassembler::new();
        for c in input.chunks(chunk) {
            for frame in r.push(c).into_iter().flatten() {
                // No frame without a valid checksum: re-encode and compare.
                let again = jbd::encode_reply(frame.register, frame.status, &frame.data);
                prop_assert_eq!(jbd::parse_frame(&again), Ok(frame.clone()));
                let _ = BasicInfo::parse(&frame);
                let _ = CellVoltages::parse(&frame);
                let _ = jbd::parse_device_name(&frame);
            }
        }
        let _ = jbd::parse_frame(&input);
    }

    #[test]
    fn fuzz_powermon_records(bytes in prop::collection::vec(any::<u8>(), 50..56)) {
        if let Ok(r) = PowermonReading::parse(&bytes) {
            prop_assert!(r.voltage1_v.is_finite() && r.current_a.is_finite());
        }
        let mut framed = bytes.clone();
        framed.resize(54, 1);
        framed[0] = 0;
        framed[53] = 0;
        let _ = PowermonReading::parse(&framed);
    }
}

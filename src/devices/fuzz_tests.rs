//! Fuzzing the reassembler and every decoder. `cargo test` runs the default number of cases;
//! `.ci/run` runs 1,000,000 (`PROPTEST_CASES=1000000`, `--lib fuzz_`): every property here and
//! in the protocol test modules that should take part is named `fuzz_...`.
//!
//! Input streams mix random bytes, valid frames and frames that only LOOK valid (cut short,
//! bad checksum, bad end byte, impossible length). Properties: nothing panics; every frame
//! that comes out is a contiguous run of the input, in stream order, whose checksum verifies
//! when recomputed here from its bytes; a valid frame planted in the stream comes out.

use super::jbd::protocol::tests::{arb_stream, find, straddles};
use super::jbd::protocol::{self as jbd, BasicInfo, CellVoltages, Reassembler};
use super::powermon::protocol::PowermonReading;
use proptest::prelude::*;

/// Checksum of a reply recomputed from its bytes, independent of `jbd::checksum`: 0x10000
/// minus the sum of status, len and data, low 16 bits.
fn reply_checksum_ok(bytes: &[u8]) -> bool {
    let n = bytes.len();
    let sum: u32 = bytes[2..n - 3].iter().map(|&b| u32::from(b)).sum();
    let want = (0x1_0000 - (sum & 0xFFFF)) & 0xFFFF;
    u32::from(u16::from_be_bytes([bytes[n - 3], bytes[n - 2]])) == want
}

proptest! {
    #![proptest_config(crate::devices::protocol::proptest_config())]

    #[test]
    fn fuzz_reassembler_and_jbd_decoders(
        before in arb_stream(6),
        planted in prop::option::of((3u8..=5, prop::collection::vec(any::<u8>(), 0..70))),
        after in arb_stream(3),
        chunk in 1usize..40,
    ) {
        let mut input = before.clone();
        let planted = planted.map(|(reg, data)| jbd::encode_reply(reg, 0, &data));
        if let Some(f) = &planted {
            input.extend(f);
        }
        input.extend(&after);
        let mut r = Reassembler::new();
        let mut frames = Vec::new();
        let mut from = 0;
        for c in input.chunks(chunk) {
            for frame in r.push(c).into_iter().flatten() {
                // The frame is exactly bytes of the input, after the previous frame.
                let bytes = jbd::encode_reply(frame.register, frame.status, &frame.data);
                let at = find(&input, &bytes, from);
                prop_assert!(at.is_some(), "{:02X?} is not in the input after byte {}", bytes, from);
                from = at.unwrap() + bytes.len();
                // Its checksum verifies, computed here rather than by the code under test.
                prop_assert!(reply_checksum_ok(&bytes), "bad checksum let through: {:02X?}", bytes);
                prop_assert_eq!(bytes[bytes.len() - 1], jbd::END);
                let _ = BasicInfo::parse(&frame);
                let _ = CellVoltages::parse(&frame);
                let _ = jbd::parse_device_name(&frame);
                frames.push(frame);
            }
            prop_assert!(r.pending() < jbd::MAX_FRAME_LEN);
        }
        if let Some(f) = planted {
            let want = jbd::parse_frame(&f).unwrap();
            prop_assert!(
                frames.contains(&want) || frames.iter().any(|g| straddles(&before, &input, g)),
                "the planted frame did not come out: {:?}", frames
            );
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

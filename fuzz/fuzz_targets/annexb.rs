//! Camera bitstreams: the Annex B scanners the source and the ring run on
//! every access unit, and the libavcodec decode path, on any bytes.
#![no_main]
use ioc_agent::decode::Codec;
use ioc_agent::decode::lav::decode_all;
use ioc_agent::evidence::ring::parameter_sets;
use ioc_agent::source::{config_record_to_annex_b, has_recovery_point, is_random_access};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let codec = if sel & 1 == 0 {
        Codec::H264
    } else {
        Codec::H265
    };
    let _ = is_random_access(codec, body);
    let _ = has_recovery_point(codec, body);
    let _ = parameter_sets(codec, body);
    let _ = config_record_to_annex_b(codec, body);
    // The decoder: the bytes as access units, split at every 0xB7 byte.
    let _ = decode_all(codec, 1, |push| {
        let mut pts = 0u64;
        for au in body.split(|b| *b == 0xB7) {
            push(au, pts);
            pts += 40_000_000;
        }
    });
});

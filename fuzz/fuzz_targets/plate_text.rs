//! The Vietnamese plate text parser: rows as the reader model gives them.
#![no_main]
use ioc_agent::evidence::plate::parse_plate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let rows: Vec<&str> = text.split('\n').collect();
    let p = parse_plate(&rows);
    // Whatever it says is valid has its fields; invalid has none.
    let fields = [&p.province, &p.series, &p.number];
    if p.valid {
        assert!(
            fields.iter().all(|f| f.is_some()),
            "valid without fields: {rows:?} → {p:?}"
        );
    } else {
        assert!(
            fields.iter().all(|f| f.is_none()),
            "invalid with fields: {rows:?} → {p:?}"
        );
    }
});

//! Review records in an evidence folder (`review-NNN.json` / `.sig`), as a
//! verifier at the IOC reads them from a folder it does not trust.
#![no_main]
use ioc_agent::evidence::review;
use ioc_agent::evidence::sign::Trust;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Input: the record, then after a NUL its signature file.
    let (json, sig) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let Ok(dir) = tempfile::tempdir() else { return };
    let (j, s) = review::names(1);
    if std::fs::write(dir.path().join(j), json).is_err()
        || std::fs::write(dir.path().join(s), sig).is_err()
        || std::fs::write(dir.path().join("manifest.json"), b"{}").is_err()
    {
        return;
    }
    let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]).verifying_key();
    let _ = review::verify(dir.path(), &Trust::one(key), "01FUZZ");
});

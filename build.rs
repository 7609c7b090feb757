//! Compiles the thin C layer over libavcodec (agent/decode/lav.c) against the
//! system's FFmpeg headers, found with pkg-config.

fn main() {
    println!("cargo:rerun-if-changed=agent/decode/lav.c");
    let mut build = cc::Build::new();
    build.file("agent/decode/lav.c").warnings(true);
    for lib in ["libavcodec", "libavutil"] {
        match pkg_config::Config::new()
            .atleast_version(if lib == "libavcodec" { "59" } else { "57" })
            .probe(lib)
        {
            Ok(found) => {
                for p in found.include_paths {
                    build.include(p);
                }
            }
            Err(e) => panic!(
                "{lib} not found ({e}): install the FFmpeg development files with \
                 `apt install libavcodec-dev libavutil-dev` (or run `make setup`)"
            ),
        }
    }
    build.compile("ioc_lav");
}

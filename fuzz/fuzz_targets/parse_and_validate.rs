//! Arbitrary bytes through the whole of `weir validate`'s library path: YAML/JSON parsing,
//! typed decoding, both validation layers, and the MeshConfig parser. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        for checked in weir_api::check_text(text, "default") {
            // Rendering must not panic either.
            for f in &checked.findings {
                let _ = f.text();
            }
            let _ = checked.display_name();
            if let Some(resource) = &checked.resource {
                let _ = resource.to_json();
            }
        }
        let _ = weir_api::parse_mesh_config(text);
    }
});

//! Manifests, policy files and receipts from arbitrary bytes: parsed, resolved, re-encoded and
//! checked, never a panic; whatever parses re-encodes to something that parses the same.
#![no_main]

use gridbox_core::{Manifest, Policy, Receipt, ResolvedManifest};
use gridbox_service::ServiceConfig;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    match which % 4 {
        0 => {
            let Ok(text) = std::str::from_utf8(rest) else { return };
            if let Ok(manifest) = Manifest::from_toml(text)
                && let Ok(resolved) = manifest.resolve(&Policy::default())
            {
                let again = ResolvedManifest::from_canonical_text(resolved.text()).expect("a canonical text parses");
                assert_eq!(again.text(), resolved.text(), "canonical text is stable");
            }
        }
        1 => {
            let Ok(text) = std::str::from_utf8(rest) else { return };
            let _ = ServiceConfig::from_toml(text);
        }
        2 => {
            if let Ok(receipt) = Receipt::from_json(rest) {
                let _ = receipt.check_signature();
                let canonical = receipt.to_canonical_json();
                let again = Receipt::from_json(&canonical).expect("a canonical receipt parses");
                assert_eq!(again, receipt);
            }
        }
        _ => {
            let Ok(text) = std::str::from_utf8(rest) else { return };
            let _ = ResolvedManifest::from_canonical_text(text);
        }
    }
});

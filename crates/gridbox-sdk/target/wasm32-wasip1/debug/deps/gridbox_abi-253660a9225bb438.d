/work/main/crates/gridbox-sdk/target/wasm32-wasip1/debug/deps/gridbox_abi-253660a9225bb438.d: /work/main/crates/gridbox-abi/src/lib.rs

/work/main/crates/gridbox-sdk/target/wasm32-wasip1/debug/deps/libgridbox_abi-253660a9225bb438.rmeta: /work/main/crates/gridbox-abi/src/lib.rs

/work/main/crates/gridbox-abi/src/lib.rs:

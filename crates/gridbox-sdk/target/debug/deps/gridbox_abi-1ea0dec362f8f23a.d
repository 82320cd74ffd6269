/work/main/crates/gridbox-sdk/target/debug/deps/gridbox_abi-1ea0dec362f8f23a.d: /work/main/crates/gridbox-abi/src/lib.rs

/work/main/crates/gridbox-sdk/target/debug/deps/libgridbox_abi-1ea0dec362f8f23a.rmeta: /work/main/crates/gridbox-abi/src/lib.rs

/work/main/crates/gridbox-abi/src/lib.rs:

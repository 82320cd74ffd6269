/work/main/crates/gridbox-sdk/target/wasm32-wasip1/debug/deps/gridbox_sdk-7d3415334e86c7c2.d: /work/main/clippy.toml src/lib.rs Cargo.toml

/work/main/crates/gridbox-sdk/target/wasm32-wasip1/debug/deps/libgridbox_sdk-7d3415334e86c7c2.rmeta: /work/main/clippy.toml src/lib.rs Cargo.toml

/work/main/clippy.toml:
src/lib.rs:
Cargo.toml:

# env-dep:CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__
# env-dep:CLIPPY_CONF_DIR

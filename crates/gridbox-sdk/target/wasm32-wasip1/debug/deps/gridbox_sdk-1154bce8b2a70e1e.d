/work/main/crates/gridbox-sdk/target/wasm32-wasip1/debug/deps/gridbox_sdk-1154bce8b2a70e1e.d: /work/main/clippy.toml src/lib.rs Cargo.toml

/work/main/crates/gridbox-sdk/target/wasm32-wasip1/debug/deps/libgridbox_sdk-1154bce8b2a70e1e.rmeta: /work/main/clippy.toml src/lib.rs Cargo.toml

/work/main/clippy.toml:
src/lib.rs:
Cargo.toml:

# env-dep:CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__
# env-dep:CLIPPY_CONF_DIR

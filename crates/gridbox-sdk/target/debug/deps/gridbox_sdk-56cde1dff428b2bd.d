/work/main/crates/gridbox-sdk/target/debug/deps/gridbox_sdk-56cde1dff428b2bd.d: /work/main/clippy.toml src/lib.rs Cargo.toml

/work/main/crates/gridbox-sdk/target/debug/deps/libgridbox_sdk-56cde1dff428b2bd.rmeta: /work/main/clippy.toml src/lib.rs Cargo.toml

/work/main/clippy.toml:
src/lib.rs:
Cargo.toml:

# env-dep:CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__
# env-dep:CLIPPY_CONF_DIR

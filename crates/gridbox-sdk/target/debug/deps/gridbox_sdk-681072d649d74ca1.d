/work/main/crates/gridbox-sdk/target/debug/deps/gridbox_sdk-681072d649d74ca1.d: /work/main/clippy.toml src/lib.rs Cargo.toml

/work/main/crates/gridbox-sdk/target/debug/deps/libgridbox_sdk-681072d649d74ca1.rmeta: /work/main/clippy.toml src/lib.rs Cargo.toml

/work/main/clippy.toml:
src/lib.rs:
Cargo.toml:

# env-dep:CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__
# env-dep:CLIPPY_CONF_DIR

#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use super::*;
use crate::engine::deterministic_config;

const WAT: &str = r#"(module (func (export "_start")) (func (export "f") (result i32) i32.const 42))"#;

/// A cache in a fresh folder, and the problems it reported.
fn cache(max_bytes: u64) -> (tempfile::TempDir, CompiledCache, Arc<Mutex<Vec<String>>>) {
    let dir = tempfile::tempdir().unwrap();
    let heard = Arc::new(Mutex::new(Vec::new()));
    let sink = heard.clone();
    let cache = CompiledCache::open(dir.path().join("cache"), max_bytes, move |p| sink.lock().unwrap().push(crate::errors::error_chain(p))).unwrap();
    (dir, cache, heard)
}

fn engine() -> Engine {
    Engine::new(&deterministic_config()).unwrap()
}

fn key(module: &[u8]) -> CacheKey {
    CacheKey { module: Digest::of(module), engine: [7; 32] }
}

fn wasm(text: &str) -> Vec<u8> {
    wat::parse_str(text).unwrap()
}

/// The answer of the module's `f`.
fn call_f(engine: &Engine, module: &Module) -> i32 {
    let mut store = wasmtime::Store::new(engine, ());
    store.set_fuel(1_000).unwrap();
    store.set_epoch_deadline(1);
    let instance = wasmtime::Instance::new(&mut store, module, &[]).unwrap();
    instance.get_typed_func::<(), i32>(&mut store, "f").unwrap().call(&mut store, ()).unwrap()
}

#[test]
fn a_stored_module_loads_and_runs() {
    let (_dir, cache, heard) = cache(DEFAULT_MAX_BYTES);
    let engine = engine();
    let bytes = wasm(WAT);
    let key = key(&bytes);
    assert!(cache.load(&engine, &key).is_none(), "an empty cache misses");
    cache.store(&key, &Module::new(&engine, &bytes).unwrap());
    let loaded = cache.load(&engine, &key).expect("a stored module loads");
    assert_eq!(call_f(&engine, &loaded), 42);
    assert!(heard.lock().unwrap().is_empty(), "nothing to report: {heard:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(cache.dir()).unwrap().permissions().mode() & 0o777, 0o700);
        let entry = cache.dir().join(key.file_name());
        assert_eq!(fs::metadata(entry).unwrap().permissions().mode() & 0o777, 0o600);
    }
}

/// Stores the module, changes its file with `damage`, and checks the entry is refused with a
/// report naming `why`, and that storing again repairs it.
fn refused_after(damage: impl FnOnce(&mut Vec<u8>), why: &str) {
    let (_dir, cache, heard) = cache(DEFAULT_MAX_BYTES);
    let engine = engine();
    let bytes = wasm(WAT);
    let key = key(&bytes);
    let module = Module::new(&engine, &bytes).unwrap();
    cache.store(&key, &module);
    let path = cache.dir().join(key.file_name());
    let mut entry = fs::read(&path).unwrap();
    damage(&mut entry);
    fs::write(&path, &entry).unwrap();
    assert!(cache.load(&engine, &key).is_none(), "a damaged entry is never loaded ({why})");
    assert!(cache.load(&engine, &key).is_none());
    let heard = heard.lock().unwrap().clone();
    assert_eq!(heard.len(), 1, "one report, however often: {heard:?}");
    assert!(heard[0].contains(why) && heard[0].contains("compiled the module again"), "{heard:?}");
    cache.store(&key, &module);
    assert_eq!(call_f(&engine, &cache.load(&engine, &key).expect("repaired")), 42);
}

#[test]
fn a_flipped_code_byte_is_refused() {
    refused_after(
        |entry| {
            let middle = HEADER_LEN + (entry.len() - HEADER_LEN) / 2;
            entry[middle] ^= 0x10;
        },
        "does not match its checksum",
    );
}

#[test]
fn a_flipped_checksum_byte_is_refused() {
    refused_after(|entry| entry[HEADER_LEN - 1] ^= 1, "does not match its checksum");
}

#[test]
fn a_truncated_entry_is_refused() {
    refused_after(|entry| entry.truncate(entry.len() - 100), "does not match its checksum");
    refused_after(|entry| entry.truncate(HEADER_LEN - 1), "shorter than its header");
    refused_after(Vec::clear, "shorter than its header");
}

#[test]
fn an_entry_of_another_format_module_or_engine_is_refused() {
    refused_after(|entry| entry[MAGIC.len() - 2] = b'9', "not a gridbox cache entry");
    refused_after(|entry| entry[MAGIC.len()] ^= 1, "names another module or engine");
    refused_after(|entry| entry[MAGIC.len() + 32] ^= 1, "names another module or engine");
}

#[test]
fn code_from_another_engine_configuration_is_refused_by_wasmtime() {
    // A whole, well-formed entry whose code another configuration compiled (no fuel, no NaN
    // canonicalisation): it passes gridbox's checks, and wasmtime must refuse it.
    let (_dir, cache, heard) = cache(DEFAULT_MAX_BYTES);
    let bytes = wasm(WAT);
    let key = key(&bytes);
    let foreign = Engine::new(&wasmtime::Config::new()).unwrap();
    cache.store(&key, &Module::new(&foreign, &bytes).unwrap());
    let engine = engine();
    assert!(cache.load(&engine, &key).is_none());
    let heard = heard.lock().unwrap().clone();
    assert!(heard.len() == 1 && heard[0].contains("made by another engine"), "{heard:?}");
}

#[test]
fn the_least_recently_used_entries_are_evicted() {
    let engine = engine();
    let modules: Vec<Vec<u8>> = (0..4).map(|i| wasm(&format!(r#"(module (func (export "f") (result i32) i32.const {i}))"#))).collect();
    let size = {
        let (_dir, cache, _) = cache(DEFAULT_MAX_BYTES);
        cache.store(&key(&modules[0]), &Module::new(&engine, &modules[0]).unwrap());
        fs::metadata(cache.dir().join(key(&modules[0]).file_name())).unwrap().len()
    };
    // Room for three entries (they are the same size give or take a few bytes).
    let (_dir, cache, heard) = cache(size * 3 + size / 2);
    let epoch = SystemTime::now() - Duration::from_secs(1000);
    for (i, module) in modules[..3].iter().enumerate() {
        cache.store(&key(module), &Module::new(&engine, module).unwrap());
        let file = File::options().write(true).open(cache.dir().join(key(module).file_name())).unwrap();
        file.set_modified(epoch + Duration::from_secs(i as u64 * 10)).unwrap();
    }
    // Using the oldest makes it the newest; the second is now the least recently used.
    assert!(cache.load(&engine, &key(&modules[0])).is_some());
    cache.store(&key(&modules[3]), &Module::new(&engine, &modules[3]).unwrap());
    let present: Vec<bool> = modules.iter().map(|m| cache.dir().join(key(m).file_name()).exists()).collect();
    assert_eq!(present, [true, false, true, true]);
    assert!(heard.lock().unwrap().is_empty());
}

#[test]
fn an_entry_larger_than_the_bound_is_not_stored() {
    let (_dir, cache, heard) = cache(1000);
    let engine = engine();
    let bytes = wasm(WAT);
    cache.store(&key(&bytes), &Module::new(&engine, &bytes).unwrap());
    assert_eq!(fs::read_dir(cache.dir()).unwrap().count(), 0);
    assert!(heard.lock().unwrap().is_empty());
}

#[test]
fn stale_temporary_files_are_removed_and_fresh_ones_kept() {
    let (_dir, cache, _) = cache(DEFAULT_MAX_BYTES);
    let stale = cache.dir().join(format!("{TEMP_PREFIX}1-dead"));
    let fresh = cache.dir().join(format!("{TEMP_PREFIX}2-busy"));
    fs::write(&stale, b"half").unwrap();
    fs::write(&fresh, b"half").unwrap();
    File::options().write(true).open(&stale).unwrap().set_modified(SystemTime::now() - 2 * STALE_TEMP).unwrap();
    let engine = engine();
    let bytes = wasm(WAT);
    cache.store(&key(&bytes), &Module::new(&engine, &bytes).unwrap());
    assert!(!stale.exists() && fresh.exists());
}

#[cfg(unix)]
#[test]
fn a_folder_others_may_write_to_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
    let error = CompiledCache::open(shared.clone(), DEFAULT_MAX_BYTES, |_| {}).err().expect("refused");
    assert!(matches!(error, CacheError::NotPrivate { .. }) && error.to_string().contains("mode 777"), "{error}");
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o755)).unwrap();
    assert!(CompiledCache::open(shared, DEFAULT_MAX_BYTES, |_| {}).is_ok(), "readable by others is fine: only writers matter");
}

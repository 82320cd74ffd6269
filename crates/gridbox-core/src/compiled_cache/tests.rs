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

/// The cache, a stored entry of `WAT`, the engine and the module's key.
#[cfg(unix)]
fn stored() -> (tempfile::TempDir, CompiledCache, Arc<Mutex<Vec<String>>>, Engine, CacheKey, Module) {
    let (dir, cache, heard) = cache(DEFAULT_MAX_BYTES);
    let engine = engine();
    let bytes = wasm(WAT);
    let key = key(&bytes);
    let module = Module::new(&engine, &bytes).unwrap();
    cache.store(&key, &module);
    (dir, cache, heard, engine, key, module)
}

#[cfg(unix)]
#[test]
fn a_folder_swapped_after_it_was_checked_is_never_read() {
    // Someone who may rename things above the folder (or owns a symbolic link on its path) swaps
    // it for one of their own after `open` checked it: entries are still read from the folder
    // that was checked.
    let (dir, cache, heard) = cache(DEFAULT_MAX_BYTES);
    let engine = engine();
    let bytes = wasm(WAT);
    let key = key(&bytes);
    let (_other_dir, other, _) = self::cache(DEFAULT_MAX_BYTES);
    let planted = Module::new(&engine, wasm(r#"(module (func (export "f") (result i32) i32.const 666))"#)).unwrap();
    other.store(&key, &planted);
    fs::rename(cache.dir(), dir.path().join("checked")).unwrap();
    std::os::unix::fs::symlink(other.dir(), cache.dir()).unwrap();
    assert!(cache.load(&engine, &key).is_none(), "the planted entry is not loaded");
    cache.store(&key, &Module::new(&engine, &bytes).unwrap());
    assert!(dir.path().join("checked").join(key.file_name()).exists(), "entries go to the folder that was checked");
    assert_eq!(call_f(&engine, &cache.load(&engine, &key).unwrap()), 42);
    assert!(heard.lock().unwrap().is_empty(), "{heard:?}");
}

#[cfg(unix)]
#[test]
fn a_folder_opened_to_others_later_is_not_read() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, cache, heard, engine, key, _) = stored();
    fs::set_permissions(cache.dir(), fs::Permissions::from_mode(0o777)).unwrap();
    assert!(cache.load(&engine, &key).is_none());
    fs::set_permissions(cache.dir(), fs::Permissions::from_mode(0o700)).unwrap();
    assert!(cache.load(&engine, &key).is_some());
    let heard = heard.lock().unwrap().clone();
    assert!(heard.len() == 1 && heard[0].contains("may be written by other users"), "{heard:?}");
}

#[cfg(unix)]
#[test]
fn an_entry_others_may_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, cache, heard, engine, key, _) = stored();
    fs::set_permissions(cache.dir().join(key.file_name()), fs::Permissions::from_mode(0o666)).unwrap();
    assert!(cache.load(&engine, &key).is_none());
    let heard = heard.lock().unwrap().clone();
    assert!(heard.len() == 1 && heard[0].contains("other users may write to it"), "{heard:?}");
}

#[cfg(unix)]
#[test]
fn an_entry_that_is_a_symbolic_link_is_refused() {
    // Even to a sound entry: a link could point anywhere.
    let (dir, cache, heard, engine, key, _) = stored();
    let elsewhere = dir.path().join("elsewhere");
    fs::rename(cache.dir().join(key.file_name()), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, cache.dir().join(key.file_name())).unwrap();
    assert!(cache.load(&engine, &key).is_none());
    let heard = heard.lock().unwrap().clone();
    assert!(heard.len() == 1 && heard[0].contains("symbolic link"), "{heard:?}");
}

#[cfg(unix)]
#[test]
fn a_fifo_or_folder_under_an_entry_name_neither_hangs_nor_fails() {
    let (_dir, cache, heard) = cache(DEFAULT_MAX_BYTES);
    let engine = engine();
    let bytes = wasm(WAT);
    let key = key(&bytes);
    let path = cache.dir().join(key.file_name());
    rustix::fs::mknodat(rustix::fs::CWD, &path, rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o600), 0).unwrap();
    assert!(cache.load(&engine, &key).is_none(), "a FIFO is not waited on");
    fs::remove_file(&path).unwrap();
    fs::create_dir(&path).unwrap();
    assert!(cache.load(&engine, &key).is_none());
    cache.store(&key, &Module::new(&engine, &bytes).unwrap());
    assert!(cache.load(&engine, &key).is_none());
    let heard = heard.lock().unwrap().clone();
    assert!(heard.len() == 1 && heard[0].contains("not a plain file"), "{heard:?}");
}

#[cfg(target_os = "linux")]
#[test]
fn eviction_passes_over_odd_names_and_links() {
    use std::os::unix::ffi::OsStrExt;
    let (_dir, cache, _) = cache(1);
    fs::write(cache.dir().join(std::ffi::OsStr::from_bytes(b"\xff\xfe.cwasm")), b"xx").unwrap();
    std::os::unix::fs::symlink("/dev/null", cache.dir().join("link.cwasm")).unwrap();
    fs::create_dir(cache.dir().join("folder.cwasm")).unwrap();
    cache.evict("none");
    let left: Vec<_> = fs::read_dir(cache.dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 2, "the odd file is evicted; the link and the folder are left: {left:?}");
}

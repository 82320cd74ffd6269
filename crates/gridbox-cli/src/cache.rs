//! Where compiled modules are kept between runs: the `--no-cache` flag, the `GRIDBOX_CACHE*`
//! environment variables and the default folder. The cache itself is `gridbox_core`'s
//! [`CompiledCache`].

use std::path::PathBuf;

use clap::Args;
use gridbox_core::compiled_cache::{CompiledCache, DEFAULT_MAX_BYTES};
use gridbox_core::errors::error_chain;

/// The compiled-module cache's switch, shared by every command that runs jobs.
#[derive(Args)]
pub(crate) struct CacheArgs {
    /// Compile the job's module even if it was compiled before, and keep nothing for later runs
    /// (also: GRIDBOX_CACHE=off). Results are the same either way.
    #[arg(long)]
    pub no_cache: bool,
}

/// The cache the flags and environment ask for, or `None` when it is off or its folder cannot
/// be used (said once on stderr: a cache problem never stops a job).
///
/// Folder: `$GRIDBOX_CACHE_DIR`, else `$XDG_CACHE_HOME/gridbox`, else `~/.cache/gridbox`.
/// Size bound: `$GRIDBOX_CACHE_MAX_MB` MiB, default 512.
pub(crate) fn compiled_cache(args: &CacheArgs) -> Option<CompiledCache> {
    if args.no_cache || std::env::var("GRIDBOX_CACHE").is_ok_and(|v| matches!(v.as_str(), "off" | "0" | "no" | "false")) {
        return None;
    }
    let dir = cache_dir()?;
    let max_bytes = match std::env::var("GRIDBOX_CACHE_MAX_MB") {
        Ok(text) => match text.parse::<u64>() {
            Ok(mib) => mib.saturating_mul(1 << 20),
            Err(_) => {
                eprintln!("gridbox: note: GRIDBOX_CACHE_MAX_MB={text:?} is not a whole number of MiB; using 512");
                DEFAULT_MAX_BYTES
            }
        },
        Err(_) => DEFAULT_MAX_BYTES,
    };
    match CompiledCache::open(dir, max_bytes, |problem| eprintln!("gridbox: note: {}", error_chain(problem))) {
        Ok(cache) => Some(cache),
        Err(error) => {
            eprintln!("gridbox: note: {}; running without the compiled-module cache (GRIDBOX_CACHE=off turns it off quietly)", error_chain(&error));
            None
        }
    }
}

/// The cache folder by the rules above; `None` if not even a home folder is known.
fn cache_dir() -> Option<PathBuf> {
    let absolute = |name: &str| std::env::var_os(name).map(PathBuf::from).filter(|path| path.is_absolute());
    if let Some(dir) = std::env::var_os("GRIDBOX_CACHE_DIR").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    // The XDG base directory spec ignores a relative XDG_CACHE_HOME.
    absolute("XDG_CACHE_HOME").or_else(|| absolute("HOME").map(|home| home.join(".cache"))).map(|base| base.join("gridbox"))
}

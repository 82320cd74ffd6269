//! `gridbox hash`: BLAKE3 of files, as manifests name modules and inputs.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use gridbox_core::{Digest, artifacts};

use crate::flags::read;

/// `gridbox hash`'s flags.
#[derive(Args)]
pub(crate) struct HashArgs {
    /// Files, or folders (every regular file under them, by path, as `--dir` reads them).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

/// Prints `HASH  PATH` for each file, as `b3sum` does.
pub(crate) fn hash(args: HashArgs) -> Result<u8> {
    for path in &args.paths {
        if path.is_dir() {
            for (_, file) in artifacts::walk_files(path).with_context(|| format!("{}", path.display()))? {
                println!("{}  {}", Digest::of(&read(&file)?), file.display());
            }
        } else {
            println!("{}  {}", Digest::of(&read(path)?), path.display());
        }
    }
    Ok(0)
}

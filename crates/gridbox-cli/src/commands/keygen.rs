//! `gridbox keygen`: make a provider key pair.

use std::path::Path;

use anyhow::Result;
use gridbox_core::keys;

/// Writes the key pair and prints the public key.
pub(crate) fn keygen(path: &Path) -> Result<u8> {
    let key = keys::generate()?;
    let public = keys::write_key_pair(&key, path)?;
    println!("wrote {} (secret, mode 0600) and {}", path.display(), public.display());
    println!("public key: {}", hex::encode(key.verifying_key().as_bytes()));
    Ok(0)
}

//! Provider signing keys: `gridbox keygen` writes them, `run` and `serve` sign with them.

use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::receipt::public_key_from_hex;

/// The first line of a secret key file.
const SECRET_KEY_HEADER: &str = "gridbox-ed25519-secret-key-v1";

/// A key file that cannot be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// I/O on the key file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a gridbox secret key.
    #[error("key file {path} is not a gridbox secret key (expected `{SECRET_KEY_HEADER}` and 64 hex digits)")]
    Malformed {
        /// The file.
        path: PathBuf,
    },
    /// A public key to trust is not one.
    #[error("trusted key {what}: {reason}")]
    BadPublicKey {
        /// The key, or the file and line it is on.
        what: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// The system's random source failed.
    #[error("cannot get random bytes for a new key: {0}")]
    Random(#[source] getrandom::Error),
}

/// A fresh random signing key.
pub fn generate() -> Result<SigningKey, KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(KeyError::Random)?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Writes `key` to `path` (mode 0600, refusing to overwrite) and its public half to `path.pub`.
/// Returns the public key file's path.
pub fn write_key_pair(key: &SigningKey, path: &Path) -> Result<PathBuf, KeyError> {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
        move |source| KeyError::Io { path: path.to_path_buf(), source }
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io(path))?;
    writeln!(file, "{SECRET_KEY_HEADER}\n{}", hex::encode(key.to_bytes())).map_err(io(path))?;
    file.sync_all().map_err(io(path))?;
    let mut public_path = path.as_os_str().to_owned();
    public_path.push(".pub");
    let public_path = PathBuf::from(public_path);
    std::fs::write(&public_path, format!("{}\n", hex::encode(key.verifying_key().as_bytes()))).map_err(io(&public_path))?;
    Ok(public_path)
}

/// Reads a secret key file written by [`write_key_pair`].
pub fn read_secret_key(path: &Path) -> Result<SigningKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io { path: path.to_path_buf(), source })?;
    let malformed = || KeyError::Malformed { path: path.to_path_buf() };
    let mut lines = text.lines();
    if lines.next() != Some(SECRET_KEY_HEADER) {
        return Err(malformed());
    }
    let mut seed = [0u8; 32];
    hex::decode_to_slice(lines.next().unwrap_or("").trim(), &mut seed).map_err(|_| malformed())?;
    Ok(SigningKey::from_bytes(&seed))
}

/// The public keys `spec` names: 64 lower-case hex digits (one key), or a file holding one key
/// per line (blank lines and lines starting with `#` are skipped), such as the `KEYFILE.pub`
/// that `gridbox keygen` writes. Every key must be usable for strict verification.
pub fn read_trusted_keys(spec: &str) -> Result<Vec<VerifyingKey>, KeyError> {
    let bad = |what: String, reason: String| KeyError::BadPublicKey { what, reason };
    if spec.len() == 64 && spec.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(vec![public_key_from_hex(spec).map_err(|e| bad(spec.to_string(), e.to_string()))?]);
    }
    let path = Path::new(spec);
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io { path: path.to_path_buf(), source })?;
    let mut keys = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let what = format!("{}:{}", path.display(), number + 1);
        keys.push(public_key_from_hex(line).map_err(|e| bad(what, e.to_string()))?);
    }
    if keys.is_empty() {
        return Err(bad(path.display().to_string(), "the file holds no key".into()));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_pair_round_trips_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("provider.key");
        let key = generate().unwrap();
        let public = write_key_pair(&key, &path).unwrap();
        assert_eq!(read_secret_key(&path).unwrap().to_bytes(), key.to_bytes());
        assert_eq!(std::fs::read_to_string(&public).unwrap().trim(), hex::encode(key.verifying_key().as_bytes()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert!(write_key_pair(&key, &path).is_err(), "must not overwrite a key");
        std::fs::write(&path, "junk").unwrap();
        assert!(read_secret_key(&path).unwrap_err().to_string().contains("not a gridbox secret key"));
        // The .pub file and its hex both name the key to trust; weak and malformed keys do not.
        let trusted = read_trusted_keys(public.to_str().unwrap()).unwrap();
        assert_eq!(trusted, [key.verifying_key()]);
        assert_eq!(read_trusted_keys(&hex::encode(key.verifying_key().as_bytes())).unwrap(), trusted);
        let identity = format!("01{}", "00".repeat(31));
        assert!(read_trusted_keys(&identity).unwrap_err().to_string().contains("small-order"));
        let list = dir.path().join("trusted.txt");
        std::fs::write(&list, format!("# providers\n\n{}\nnot a key\n", hex::encode(key.verifying_key().as_bytes()))).unwrap();
        assert!(read_trusted_keys(list.to_str().unwrap()).unwrap_err().to_string().contains("trusted.txt:4"));
    }
}

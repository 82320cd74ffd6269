//! A folder of kept tensors (`gridbox run --keep-tensors DIR`; spec/trace.md): every tensor a
//! run's trace names, in `DIR/<tensor hash>.tensor` ([`gridbox_compute::tensor_file`]), and the
//! way back from a hash to its tensor, checked.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use gridbox_compute::tensor_file::{self, TensorFileError};
use gridbox_compute::{Tensor, TensorKeeper};

use crate::digest::Digest;

/// The file name of the tensor whose content hash is `hash`.
pub fn file_name(hash: &[u8; 32]) -> String {
    format!("{}.tensor", hex::encode(hash))
}

/// A kept tensor that cannot be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeptTensorError {
    /// Reading or writing failed (a missing file among them).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a tensor file.
    #[error("{path}: {source}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Why.
        source: TensorFileError,
    },
}

/// Keeps tensors in a folder, each once. A failure to write is remembered, never raised during
/// the run: see [`TensorDir::finish`].
#[derive(Debug)]
pub struct TensorDir {
    dir: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    kept: HashSet<[u8; 32]>,
    failed: Option<KeptTensorError>,
}

impl TensorDir {
    /// Keeps tensors in `dir`, which is made if absent.
    pub fn create(dir: &Path) -> Result<TensorDir, KeptTensorError> {
        std::fs::create_dir_all(dir).map_err(|source| KeptTensorError::Io { path: dir.to_path_buf(), source })?;
        Ok(TensorDir { dir: dir.to_path_buf(), state: Mutex::default() })
    }

    /// How many tensors were kept, or the first failure to keep one.
    pub fn finish(&self) -> Result<usize, KeptTensorError> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match state.failed.take() {
            Some(error) => Err(error),
            None => Ok(state.kept.len()),
        }
    }

    fn write(&self, hash: &[u8; 32], tensor: &Tensor) -> Result<(), KeptTensorError> {
        let path = self.dir.join(file_name(hash));
        let io = |source| KeptTensorError::Io { path: path.clone(), source };
        // Content-addressed: a file already there holds these bytes (or is checked on reading).
        if path.exists() {
            return Ok(());
        }
        let staging = self.dir.join(format!(".{}.partial-{}", file_name(hash), std::process::id()));
        let mut file = std::fs::File::create(&staging).map_err(io)?;
        file.write_all(&tensor_file::encode(tensor)).and_then(|()| file.sync_all()).map_err(io)?;
        std::fs::rename(&staging, &path).map_err(io)
    }
}

impl TensorKeeper for TensorDir {
    fn keep(&self, hash: &[u8; 32], tensor: &Tensor) {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.failed.is_some() || !state.kept.insert(*hash) {
            return;
        }
        if let Err(error) = self.write(hash, tensor) {
            state.failed = Some(error);
        }
    }
}

/// The tensor `DIR/<hash>.tensor` holds, and the hash its bytes have: the caller compares it
/// with the one it asked for.
pub fn load(dir: &Path, hash: &[u8; 32]) -> Result<(Tensor, Digest), KeptTensorError> {
    let path = dir.join(file_name(hash));
    let bytes = std::fs::read(&path).map_err(|source| KeptTensorError::Io { path: path.clone(), source })?;
    let tensor = tensor_file::decode(&bytes).map_err(|source| KeptTensorError::Malformed { path, source })?;
    let got = Digest(tensor.content_hash());
    Ok((tensor, got))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn keeps_each_tensor_once_and_loads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let keeper = TensorDir::create(&dir.path().join("kept")).unwrap();
        let tensor = Tensor::f32(vec![2], vec![1.0, 2.0]).unwrap();
        let hash = tensor.content_hash();
        keeper.keep(&hash, &tensor);
        keeper.keep(&hash, &tensor);
        assert_eq!(keeper.finish().unwrap(), 1);
        let (back, got) = load(&dir.path().join("kept"), &hash).unwrap();
        assert_eq!((back, got), (tensor, Digest(hash)));
        let missing = load(&dir.path().join("kept"), &[0; 32]).unwrap_err().to_string();
        assert!(missing.contains(&file_name(&[0; 32])), "{missing}");
    }
}

//! Reading `model.safetensors` (the Hugging Face format): an 8-byte little-endian header length,
//! a JSON header naming each tensor's dtype, shape and byte range, then the data. A file is
//! hostile until checked: the header's length, every range and every shape are checked against
//! the file before a byte of data is read, and ranges may neither overlap nor leave gaps
//! (the format's own rule), so one bad file cannot make the job read past its end or allocate
//! what the file does not hold.
//!
//! Tensors are read one at a time with seek + read, so the job's memory peaks at the largest
//! tensor, not the model.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The largest header read (the format allows 100 MB; real models use a few hundred KB).
const MAX_HEADER: u64 = 100 << 20;

/// A stored element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredDtype {
    /// IEEE 754 binary32.
    F32,
    /// IEEE 754 binary16.
    F16,
    /// bfloat16 (the upper half of a binary32).
    Bf16,
}

impl StoredDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            StoredDtype::F32 => 4,
            StoredDtype::F16 | StoredDtype::Bf16 => 2,
        }
    }

    fn parse(name: &str) -> Option<StoredDtype> {
        match name {
            "F32" => Some(StoredDtype::F32),
            "F16" => Some(StoredDtype::F16),
            "BF16" => Some(StoredDtype::Bf16),
            _ => None,
        }
    }
}

/// Where one tensor lies in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Its element type.
    pub dtype: StoredDtype,
    /// Its dims.
    pub shape: Vec<usize>,
    /// Its first byte, counted from the start of the file.
    pub offset: u64,
    /// Its length in bytes (elements x dtype size).
    pub len: u64,
}

/// What is wrong with a safetensors file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SafetensorsError {
    /// The file could not be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file breaks the format; the text says where.
    #[error("{}: not a valid safetensors file: {reason}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the tensor.
        reason: String,
    },
    /// The model needs a tensor the file does not have.
    #[error("{}: has no tensor named {name:?}", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
        /// The tensor asked for.
        name: String,
    },
}

/// An open safetensors file with its checked header.
pub struct Safetensors {
    path: PathBuf,
    file: File,
    tensors: BTreeMap<String, TensorInfo>,
}

impl Safetensors {
    /// Opens `path` and checks its header against the file's length.
    pub fn open(path: &Path) -> Result<Safetensors, SafetensorsError> {
        let io = |source| SafetensorsError::Io { path: path.to_path_buf(), source };
        let mut file = File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let mut prefix = [0u8; 8];
        file.read_exact(&mut prefix).map_err(|_| format_error(path, format!("{file_len} bytes, shorter than the 8-byte header length")))?;
        let header_len = u64::from_le_bytes(prefix);
        if header_len > MAX_HEADER || header_len > file_len - 8 {
            return Err(format_error(path, format!("the header claims {header_len} bytes; the file has {} after the length", file_len - 8)));
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header).map_err(io)?;
        let tensors = parse_header(&header, 8 + header_len, file_len).map_err(|reason| format_error(path, reason))?;
        Ok(Safetensors { path: path.to_path_buf(), file, tensors })
    }

    /// The tensors, by name.
    pub fn tensors(&self) -> &BTreeMap<String, TensorInfo> {
        &self.tensors
    }

    /// Tensor `name`'s description.
    pub fn info(&self, name: &str) -> Result<&TensorInfo, SafetensorsError> {
        self.tensors.get(name).ok_or_else(|| SafetensorsError::Missing { path: self.path.clone(), name: name.to_string() })
    }

    /// Tensor `name`'s bytes, as stored (little-endian elements).
    pub fn read(&mut self, name: &str) -> Result<(TensorInfo, Vec<u8>), SafetensorsError> {
        let info = self.info(name)?.clone();
        let io = |source| SafetensorsError::Io { path: self.path.clone(), source };
        self.file.seek(SeekFrom::Start(info.offset)).map_err(io)?;
        let mut bytes = vec![0u8; info.len as usize];
        self.file.read_exact(&mut bytes).map_err(io)?;
        Ok((info, bytes))
    }
}

fn format_error(path: &Path, reason: String) -> SafetensorsError {
    SafetensorsError::Format { path: path.to_path_buf(), reason }
}

/// The header's entries, checked: known dtypes, shapes whose byte size is the range's length,
/// ranges inside the data that tile it exactly (sorted, no overlap, no gap).
pub fn parse_header(header: &[u8], data_start: u64, file_len: u64) -> Result<BTreeMap<String, TensorInfo>, String> {
    let value: serde_json::Value = serde_json::from_slice(header).map_err(|e| format!("the header is not JSON: {e}"))?;
    let serde_json::Value::Object(entries) = value else {
        return Err("the header is not a JSON object".into());
    };
    let data_len = file_len - data_start;
    let mut tensors = BTreeMap::new();
    for (name, entry) in entries {
        if name == "__metadata__" {
            continue;
        }
        let bad = |what: &str| format!("tensor {name:?}: {what}");
        let dtype_name = entry.get("dtype").and_then(|d| d.as_str()).ok_or_else(|| bad("no \"dtype\" string"))?;
        let dtype = StoredDtype::parse(dtype_name).ok_or_else(|| bad(&format!("dtype {dtype_name:?} is not one of F32, F16, BF16")))?;
        let dims = entry.get("shape").and_then(|s| s.as_array()).ok_or_else(|| bad("no \"shape\" array"))?;
        let mut shape = Vec::with_capacity(dims.len());
        for dim in dims {
            let dim = dim.as_u64().and_then(|d| usize::try_from(d).ok()).ok_or_else(|| bad("a dim is not a non-negative integer"))?;
            shape.push(dim);
        }
        let offsets = entry.get("data_offsets").and_then(|o| o.as_array()).filter(|o| o.len() == 2).ok_or_else(|| bad("no \"data_offsets\" pair"))?;
        let (Some(begin), Some(end)) = (offsets[0].as_u64(), offsets[1].as_u64()) else {
            return Err(bad("data_offsets are not non-negative integers"));
        };
        if begin > end || end > data_len {
            return Err(bad(&format!("data_offsets [{begin}, {end}] lie outside the {data_len} data bytes")));
        }
        let bytes = shape.iter().try_fold(dtype.size() as u64, |acc, &d| acc.checked_mul(d as u64)).ok_or_else(|| bad("its shape overflows"))?;
        if bytes != end - begin {
            return Err(bad(&format!("shape {shape:?} of {dtype_name} is {bytes} bytes but its range holds {}", end - begin)));
        }
        tensors.insert(name, TensorInfo { dtype, shape, offset: data_start + begin, len: end - begin });
    }
    let mut ranges: Vec<(u64, u64, &str)> = tensors.iter().map(|(n, t)| (t.offset - data_start, t.offset - data_start + t.len, n.as_str())).collect();
    ranges.sort();
    let mut covered = 0;
    for (begin, end, name) in ranges {
        if begin != covered {
            let what = if begin < covered { "overlaps the tensor before it" } else { "leaves a gap after the tensor before it" };
            return Err(format!("tensor {name:?} at byte {begin} {what} (which ends at {covered})"));
        }
        covered = end;
    }
    if covered != data_len {
        return Err(format!("the tensors cover {covered} of the {data_len} data bytes"));
    }
    Ok(tensors)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn header(json: &str) -> Result<BTreeMap<String, TensorInfo>, String> {
        parse_header(json.as_bytes(), 8 + json.len() as u64, 8 + json.len() as u64 + 24)
    }

    #[test]
    fn a_good_header_is_read() {
        let tensors = header(r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"BF16","shape":[4],"data_offsets":[16,24]}}"#).unwrap();
        assert_eq!(tensors["a"].shape, vec![2, 2]);
        assert_eq!(tensors["b"].dtype, StoredDtype::Bf16);
        assert_eq!(tensors["b"].len, 8);
    }

    #[test]
    fn bad_headers_are_named() {
        for (json, expected) in [
            (r#"[]"#, "not a JSON object"),
            (r#"{"a":{"dtype":"I64","shape":[3],"data_offsets":[0,24]}}"#, "not one of"),
            (r#"{"a":{"dtype":"F32","shape":[7],"data_offsets":[0,24]}}"#, "is 28 bytes"),
            (r#"{"a":{"dtype":"F32","shape":[6],"data_offsets":[0,25]}}"#, "outside"),
            (r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[3],"data_offsets":[8,20]}}"#, "overlaps"),
            (r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, "cover 16 of the 24"),
            (r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,24]}}"#, "overflows"),
            (r#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,24]}}"#, "non-negative"),
        ] {
            let error = header(json).unwrap_err();
            assert!(error.contains(expected), "{json}: {error}");
        }
    }
}

//! Mounts besides `/input` and `/output`: the manifest's `[mounts]` table, as the wasmtime CLI's
//! `--dir HOST::GUEST` does it. A mount shows some of the job's inputs at any guest path (`/`
//! included), read-only or writable; what a job leaves in a writable mount is an output, committed
//! in the receipt under the mount's guest path.
//!
//! The files of a mount are inputs like any other (hashed in the manifest's `[inputs]`, visible
//! at `/input/NAME` too): `from = "data"` mounts every input named `data/...` with that prefix
//! taken off. So nothing about mounts changes how a job's bytes reach a provider or a verifier.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::job::{INPUT_DIR, OUTPUT_DIR};
use crate::manifest::check_input_name;
use crate::wasi::vfs::is_normalised_absolute;

/// Most mounts a manifest may ask for, besides `/input` and `/output`.
pub const MAX_MOUNTS: usize = 16;

/// Longest guest path of a mount, in bytes.
pub const MAX_MOUNT_PATH: usize = 255;

/// One entry of the manifest's `[mounts]` table, keyed by its absolute guest path.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountSpec {
    /// The inputs it shows: every input named `FROM/...`, at `...` in the mount. Absent, the
    /// mount starts empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Whether the job may change it. Its files at the end of the job are outputs.
    #[serde(default)]
    pub writable: bool,
}

/// Checks the `[mounts]` table against the inputs; the error names the key and the problem.
pub(crate) fn check_mounts<'a>(mounts: &BTreeMap<String, MountSpec>, input_names: impl Iterator<Item = &'a String> + Clone) -> Result<(), (String, String)> {
    if mounts.len() > MAX_MOUNTS {
        return Err(("mounts".into(), format!("{} mounts; at most {MAX_MOUNTS}", mounts.len())));
    }
    for (guest, spec) in mounts {
        let key = format!("mounts.{guest:?}");
        check_guest_path(guest).map_err(|reason| (key.clone(), reason))?;
        if let Some(from) = &spec.from {
            check_input_name(from).map_err(|reason| (format!("{key}.from"), reason.replace("an input name", "`from`")))?;
            let prefix = format!("{from}/");
            if !input_names.clone().any(|name| name.starts_with(&prefix)) {
                return Err((format!("{key}.from"), format!("no input is named {prefix}...: the mount would be empty (leave `from` out for an empty mount)")));
            }
        }
        if spec.writable
            && let Some(other) = mounts.iter().find(|(other, o)| o.writable && *other != guest && is_below(guest, other))
        {
            return Err((key, format!("is inside writable mount {:?}: writable mounts may not nest, or their outputs would share names", other.0)));
        }
    }
    Ok(())
}

fn check_guest_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err("a mount's guest path must be absolute".into());
    }
    if path.len() > MAX_MOUNT_PATH {
        return Err(format!("a mount's guest path has at most {MAX_MOUNT_PATH} bytes"));
    }
    if path.contains('\0') || path.contains('\\') {
        return Err("a mount's guest path may not contain NUL or `\\`".into());
    }
    if !is_normalised_absolute(path) {
        return Err("a mount's guest path must be normalised: no empty, `.` or `..` parts and no trailing `/`".into());
    }
    for own in [INPUT_DIR, OUTPUT_DIR] {
        if path == own || is_below(path, own) {
            return Err(format!("{own} is gridbox's own folder; mount somewhere else"));
        }
    }
    Ok(())
}

/// Whether guest path `path` is strictly below `folder` (every path is below `/`).
fn is_below(path: &str, folder: &str) -> bool {
    if folder == "/" {
        return path != "/";
    }
    path.strip_prefix(folder).is_some_and(|rest| rest.starts_with('/'))
}

/// The files mount `spec` starts with: the inputs under its `from`, by path inside the mount.
pub(crate) fn mount_files(spec: &MountSpec, inputs: &BTreeMap<String, Arc<[u8]>>) -> Vec<(String, Arc<[u8]>)> {
    let Some(from) = &spec.from else { return Vec::new() };
    let prefix = format!("{from}/");
    inputs
        .range(prefix.clone()..)
        .take_while(|(name, _)| name.starts_with(&prefix))
        .map(|(name, bytes)| (name[prefix.len()..].to_string(), bytes.clone()))
        .collect()
}

/// The receipt's name for file `path` left in the writable mount at `guest`: files under
/// `/output` keep their relative path (`a.txt`); the others are named by absolute guest path
/// (`/data/a.txt`), so the two kinds never collide.
pub fn output_name(guest: &str, path: &str) -> String {
    if guest == OUTPUT_DIR {
        path.to_string()
    } else if guest == "/" {
        format!("/{path}")
    } else {
        format!("{guest}/{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(from: Option<&str>, writable: bool) -> MountSpec {
        MountSpec { from: from.map(str::to_string), writable }
    }

    #[test]
    fn guest_paths_are_checked() {
        for good in ["/", "/data", "/a/b", "/inputs", "/outputs"] {
            assert!(check_guest_path(good).is_ok(), "{good}");
        }
        for bad in ["", "data", "/data/", "//", "/a//b", "/a/./b", "/a/../b", "/input", "/input/x", "/output", "/output/y", "/a\0"] {
            assert!(check_guest_path(bad).is_err(), "{bad:?}");
        }
        assert!(check_guest_path(&format!("/{}", "a".repeat(255))).is_err());
    }

    #[test]
    fn mounts_are_checked_against_inputs_and_each_other() {
        let names = ["data/a".to_string(), "data/sub/b".to_string(), "other".to_string()];
        let check = |mounts: &[(&str, MountSpec)]| check_mounts(&mounts.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(), names.iter());
        assert!(check(&[("/", spec(Some("data"), true))]).is_ok());
        assert!(check(&[("/", spec(None, true)), ("/data", spec(Some("data"), false))]).is_ok());
        assert!(check(&[("/", spec(Some("nothing"), true))]).unwrap_err().1.contains("no input is named nothing/"));
        assert!(check(&[("/", spec(Some("other"), true))]).is_err(), "`from` must be a folder of inputs");
        assert!(check(&[("/", spec(Some("../x"), true))]).is_err());
        let nested = check(&[("/", spec(None, true)), ("/data", spec(None, true))]).unwrap_err();
        assert_eq!(nested.0, "mounts.\"/data\"");
        let many: Vec<_> = (0..=MAX_MOUNTS).map(|i| (format!("/m{i}"), spec(None, false))).collect();
        assert!(check_mounts(&many.into_iter().collect(), names.iter()).is_err());
    }

    #[test]
    fn files_come_from_the_inputs_under_from() {
        let inputs: BTreeMap<String, Arc<[u8]>> =
            ["data/a", "data/sub/b", "data0", "dat", "other/c"].iter().map(|n| (n.to_string(), Arc::from(n.as_bytes()))).collect();
        let files: Vec<String> = mount_files(&spec(Some("data"), true), &inputs).into_iter().map(|(p, _)| p).collect();
        assert_eq!(files, ["a", "sub/b"]);
        assert!(mount_files(&spec(None, true), &inputs).is_empty());
    }

    #[test]
    fn output_names_never_collide() {
        assert_eq!(output_name("/output", "a.txt"), "a.txt");
        assert_eq!(output_name("/", "a.txt"), "/a.txt");
        assert_eq!(output_name("/data", "x/a.txt"), "/data/x/a.txt");
    }
}

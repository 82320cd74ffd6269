//! Guest paths: limits, and splitting a path into components before the tree is consulted.

use super::types::{Errno, MountError, NodeId};

/// Longest path, in bytes, that any operation accepts (Linux's `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;

/// Longest single path component (file name), in bytes (Linux's `NAME_MAX`).
pub const MAX_NAME_LEN: usize = 255;

/// Longest path of anything a job makes in a writable mount, relative to the mount's root, in
/// bytes: deeper trees are `ENAMETOOLONG` when the job makes them, so every output tree can be
/// written under any reasonable host folder (whose whole path must fit Linux's 4096 bytes).
pub const MAX_OUTPUT_PATH: usize = 1024;

/// Whether absolute `path` is normalised: `/`, or `/` and names separated by single `/`, none
/// empty, `.` or `..` or longer than [`MAX_NAME_LEN`], no trailing `/`. What a mount's guest
/// path must be.
pub fn is_normalised_absolute(path: &str) -> bool {
    path == "/" || (path.starts_with('/') && path.split('/').skip(1).all(|c| !c.is_empty() && c != "." && c != ".." && c.len() <= MAX_NAME_LEN))
}

/// A path split into its components.
pub(super) struct ParsedPath<'a> {
    /// Non-empty components (`a//b` is `a/b`), `.` and `..` kept.
    pub(super) components: Vec<&'a str>,
    /// The path ends in `/`: it must name a directory.
    pub(super) trailing_slash: bool,
}

/// Where the last component of a path leads, for operations that create or remove a name.
pub(super) enum Last<'a> {
    /// A plain name in directory `parent`.
    Name { parent: NodeId, name: &'a str },
    /// The path ends in `.` or `..`: it names an existing directory, not an entry.
    Dots(NodeId),
}

/// Splits a guest path and applies the checks that do not need the tree.
pub(super) fn parse_path(path: &str) -> Result<ParsedPath<'_>, Errno> {
    if path.is_empty() {
        return Err(Errno::Noent);
    }
    if path.len() > MAX_PATH_LEN {
        return Err(Errno::Nametoolong);
    }
    if path.starts_with('/') {
        // Absolute paths would name the host's root: wasmtime-wasi's preopens refuse them with
        // EPERM too. (wasi-libc turns a guest's absolute paths into preopen-relative ones.)
        return Err(Errno::Perm);
    }
    if path.contains('\0') {
        return Err(Errno::Inval);
    }
    // A component longer than MAX_NAME_LEN is ENAMETOOLONG when the walk reaches it (as in
    // Linux): a missing directory before it is ENOENT.
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    Ok(ParsedPath { components, trailing_slash: path.ends_with('/') })
}

/// Checks that an input file's path is a plain relative path.
pub(super) fn check_relative_file_path(path: &str) -> Result<(), MountError> {
    let bad = |reason| Err(MountError::BadFilePath { path: path.to_string(), reason });
    if path.is_empty() {
        return bad("it is empty");
    }
    if path.len() > MAX_PATH_LEN {
        return bad("it is too long");
    }
    if path.contains('\0') {
        return bad("it contains NUL");
    }
    if path.starts_with('/') {
        return bad("it must be relative");
    }
    for component in path.split('/') {
        if component.is_empty() || component == "." || component == ".." {
            return bad("it has an empty, `.` or `..` component");
        }
        if component.len() > MAX_NAME_LEN {
            return bad("a component is too long");
        }
    }
    Ok(())
}

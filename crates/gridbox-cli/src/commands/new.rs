//! `gridbox new`: write a ready job project, the one docs/first-job.md walks through.
//!
//! The project builds anywhere, offline, with no checkout of gridbox: the guest SDK and the ABI
//! it uses are copied into it (`NAME/gridbox-sdk/`, `NAME/gridbox-abi/`). Their sources are
//! embedded in the `gridbox` binary with `include_str!` from `crates/`, so what is copied is
//! always the sources this binary was built from; their manifests are rewritten to stand alone
//! (no `workspace = true` fields). A test checks that every file of the two crates' `src/` is
//! copied.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use toml::{Table, Value};

/// `gridbox new`'s flags.
#[derive(Args)]
pub(crate) struct NewArgs {
    /// The job's name: its Cargo package, and its module `target/wasm32-wasip1/release/NAME.wasm`.
    name: String,
    /// The folder to write the project in (absent or empty); the default is `./NAME`.
    #[arg(long, value_name = "DIR")]
    path: Option<PathBuf>,
}

/// The project's own files: path in the project, and text with `{{name}}` for the job's name.
const PROJECT_FILES: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../../templates/new/Cargo.toml.in")),
    (".cargo/config.toml", include_str!("../../templates/new/config.toml")),
    ("src/main.rs", include_str!("../../templates/new/main.rs")),
    ("data/data.csv", include_str!("../../templates/new/data/data.csv")),
    ("README.md", include_str!("../../templates/new/README.md")),
    (".gitignore", include_str!("../../templates/new/gitignore")),
];

/// The guest crates copied into every project, by package name: what jobs link.
const VENDORED_CRATES: [&str; 2] = ["gridbox-sdk", "gridbox-abi"];

/// Every source file of the vendored crates, as `CRATE/src/...`. A new file in either crate's
/// `src/` must be added here: the test `every_source_file_is_vendored` fails until it is.
const VENDORED_SOURCES: &[(&str, &str)] = &[
    ("gridbox-sdk/src/lib.rs", include_str!("../../../gridbox-sdk/src/lib.rs")),
    ("gridbox-sdk/src/model_ops.rs", include_str!("../../../gridbox-sdk/src/model_ops.rs")),
    ("gridbox-abi/src/lib.rs", include_str!("../../../gridbox-abi/src/lib.rs")),
];

/// The vendored crates' manifests as they are in this repository (some fields inherited from
/// the workspace), rewritten by [`standalone_manifest`].
const VENDORED_MANIFESTS: [(&str, &str); 2] =
    [("gridbox-sdk", include_str!("../../../gridbox-sdk/Cargo.toml")), ("gridbox-abi", include_str!("../../../gridbox-abi/Cargo.toml"))];

/// The repository's workspace manifest, which holds the fields the crates inherit.
const WORKSPACE_MANIFEST: &str = include_str!("../../../../Cargo.toml");

/// Names a project may not take: the vendored crates' (one workspace cannot hold two packages of
/// one name) and the crates Rust itself provides.
const RESERVED_NAMES: [&str; 8] = ["gridbox-sdk", "gridbox-abi", "std", "core", "alloc", "test", "proc_macro", "proc-macro"];

/// Writes the project and says what to do next.
pub(crate) fn new(args: NewArgs) -> Result<u8> {
    check_name(&args.name)?;
    let dir = args.path.clone().unwrap_or_else(|| PathBuf::from(&args.name));
    write_project(&args.name, &dir)?;
    println!("created {} (a gridbox job; its README.md says what each file is). Next:", dir.display());
    println!("    cd {}", dir.display());
    println!("    cargo build --release");
    println!("    gridbox run target/wasm32-wasip1/release/{}.wasm --capability tensor --dir data::/input --out out", args.name);
    Ok(0)
}

/// Refuses a name Cargo would not take as a package name (or that clashes with the copied crates).
fn check_name(name: &str) -> Result<()> {
    let starts_with_letter = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    let allowed = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !starts_with_letter || !allowed || name.len() > 64 {
        bail!("{name:?} cannot name a job: use 1-64 of a-z, A-Z, 0-9, `-` and `_`, starting with a letter (it is the Cargo package's name)");
    }
    if RESERVED_NAMES.iter().any(|reserved| reserved.eq_ignore_ascii_case(name)) {
        bail!("{name:?} cannot name a job: Rust or the copied gridbox crates use it; choose another");
    }
    Ok(())
}

/// Every file of a project named `name`: path in the project and contents.
fn project_files(name: &str) -> Result<Vec<(String, String)>> {
    let mut files: Vec<(String, String)> = PROJECT_FILES.iter().map(|(path, text)| (path.to_string(), text.replace("{{name}}", name))).collect();
    for (path, text) in VENDORED_SOURCES {
        files.push((path.to_string(), text.to_string()));
    }
    for (crate_name, text) in VENDORED_MANIFESTS {
        files.push((format!("{crate_name}/Cargo.toml"), standalone_manifest(crate_name, text)?));
    }
    Ok(files)
}

/// Writes the project into `dir`, which must be absent or an empty folder: nothing is overwritten.
fn write_project(name: &str, dir: &Path) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!("{} exists and is not empty: choose another name, or a new folder with --path", dir.display());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) if dir.exists() => bail!("{} exists and is not an empty folder ({e})", dir.display()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    }
    for (path, text) in project_files(name)? {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// `crate_name`'s manifest `text` made to build outside this repository: fields inherited from
/// the workspace (`KEY.workspace = true`) replaced by the workspace's values, path dependencies
/// pointed at the sibling copies, and the workspace's lints and the dev-dependencies left out
/// (they serve gridbox's own development; a job's build should neither print the lints nor
/// fetch the dev-dependencies).
fn standalone_manifest(crate_name: &str, text: &str) -> Result<String> {
    let root: Table = toml::from_str(WORKSPACE_MANIFEST).context("the workspace's Cargo.toml")?;
    let workspace = root.get("workspace").and_then(Value::as_table).context("the workspace's Cargo.toml has no [workspace]")?;
    let empty = Table::new();
    let inherited_package = workspace.get("package").and_then(Value::as_table).unwrap_or(&empty);
    let inherited_dependencies = workspace.get("dependencies").and_then(Value::as_table).unwrap_or(&empty);

    let mut manifest: Table = toml::from_str(text).with_context(|| format!("{crate_name}'s Cargo.toml"))?;
    if let Some(package) = manifest.get_mut("package").and_then(Value::as_table_mut) {
        for (key, value) in package.iter_mut() {
            if inherits(value) {
                *value = inherited_package.get(key).cloned().with_context(|| format!("{crate_name}: the workspace has no package.{key}"))?;
            }
        }
    }
    for section in ["dependencies", "build-dependencies"] {
        if let Some(dependencies) = manifest.get_mut(section).and_then(Value::as_table_mut) {
            for (name, value) in dependencies.iter_mut() {
                *value = standalone_dependency(crate_name, name, value, inherited_dependencies)?;
            }
        }
    }
    manifest.remove("dev-dependencies");
    if manifest.get("lints").is_some_and(inherits) {
        manifest.remove("lints");
    }

    let mut out = format!(
        "# {crate_name}, copied from gridbox {} by `gridbox new` so that this project builds offline.\n\
         # Do not edit: a newer `gridbox new` writes a newer copy.\n",
        env!("CARGO_PKG_VERSION")
    );
    write_toml(&mut out, &manifest);
    Ok(out)
}

/// Writes a manifest the way people write them: `[package]` first and its name and version at
/// its top, one `[section]` per table, and deeper tables inline (`gridbox-abi = { path = ... }`),
/// rather than in the map's alphabetical order.
fn write_toml(out: &mut String, manifest: &Table) {
    const FIRST: [&str; 9] = ["package", "name", "version", "edition", "rust-version", "lib", "features", "dependencies", "build-dependencies"];
    fn ordered(table: &Table) -> Vec<(&String, &Value)> {
        let mut entries: Vec<(&String, &Value)> = table.iter().collect();
        entries.sort_by_key(|(key, _)| FIRST.iter().position(|first| first == key).unwrap_or(FIRST.len()));
        entries
    }
    // A key is written bare when TOML allows it, else quoted as a string is.
    let key = |key: &str| {
        let bare = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if bare { key.to_string() } else { Value::String(key.to_string()).to_string() }
    };
    // Top-level values (`cargo-features = [...]`) must come before the first section.
    for (name, value) in ordered(manifest).into_iter().filter(|(_, value)| !value.is_table()) {
        out.push_str(&format!("{} = {value}\n", key(name)));
    }
    for (name, value) in ordered(manifest) {
        if let Value::Table(section) = value {
            out.push_str(&format!("\n[{}]\n", key(name)));
            for (entry, value) in ordered(section) {
                out.push_str(&format!("{} = {value}\n", key(entry)));
            }
        }
    }
}

/// Whether a manifest value is `{ workspace = true }`: inherited from the workspace.
fn inherits(value: &Value) -> bool {
    value.as_table().and_then(|table| table.get("workspace")).and_then(Value::as_bool) == Some(true)
}

/// One dependency of `crate_name` made standalone: inherited from the workspace if it says so
/// (the workspace's entry, plus the crate's own `features`, `optional`...), and a path
/// dependency only on another copied crate, which sits next to this one.
fn standalone_dependency(crate_name: &str, name: &str, value: &Value, inherited: &Table) -> Result<Value> {
    let mut own = match value {
        Value::String(version) => Table::from_iter([("version".to_string(), Value::String(version.clone()))]),
        Value::Table(table) => table.clone(),
        _ => bail!("{crate_name}: dependency {name} is neither a version nor a table"),
    };
    let mut dependency = if own.remove("workspace").and_then(|v| v.as_bool()) == Some(true) {
        let mut base = match inherited.get(name) {
            Some(Value::String(version)) => Table::from_iter([("version".to_string(), Value::String(version.clone()))]),
            Some(Value::Table(table)) => table.clone(),
            _ => bail!("{crate_name}: dependency {name} is inherited, but the workspace does not declare it"),
        };
        for (key, value) in own {
            match (key.as_str(), base.get_mut(&key), value) {
                ("features", Some(Value::Array(features)), Value::Array(more)) => features.extend(more),
                (_, _, value) => {
                    base.insert(key, value);
                }
            }
        }
        base
    } else {
        own
    };
    if dependency.contains_key("path") {
        let package = dependency.get("package").and_then(Value::as_str).unwrap_or(name).to_string();
        if !VENDORED_CRATES.contains(&package.as_str()) {
            bail!("{crate_name} depends on {package} by path, and `gridbox new` does not copy {package}: add it to VENDORED_CRATES");
        }
        dependency.insert("path".to_string(), Value::String(format!("../{package}")));
    }
    Ok(Value::Table(dependency))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The files under `dir`, as paths relative to `base` with `/` separators.
    fn files_under(dir: &Path, base: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files_under(&path, base, found);
            } else {
                let relative = path.strip_prefix(base).unwrap();
                found.push(relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>().join("/"));
            }
        }
    }

    #[test]
    fn every_source_file_is_vendored() {
        let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for crate_name in VENDORED_CRATES {
            let mut found = Vec::new();
            files_under(&crates.join(crate_name).join("src"), &crates, &mut found);
            assert!(!found.is_empty(), "{crate_name} has no sources?");
            for file in found {
                assert!(
                    VENDORED_SOURCES.iter().any(|(path, _)| *path == file),
                    "crates/{file} is not copied into new projects: add it to VENDORED_SOURCES in {}",
                    file!()
                );
            }
        }
        for (path, _) in VENDORED_SOURCES {
            assert!(crates.join(path).is_file(), "VENDORED_SOURCES names crates/{path}, which does not exist");
        }
    }

    #[test]
    fn vendored_manifests_stand_alone() {
        for (crate_name, text) in VENDORED_MANIFESTS {
            let standalone = standalone_manifest(crate_name, text).unwrap();
            assert!(!standalone.contains("workspace"), "{crate_name}:\n{standalone}");
            let parsed: Table = toml::from_str(&standalone).unwrap();
            assert_eq!(parsed["package"]["name"].as_str(), Some(crate_name), "{standalone}");
            assert!(parsed["package"]["version"].is_str() && parsed["package"]["edition"].is_str(), "{standalone}");
            assert!(standalone.trim_start_matches(|c| c != '[').starts_with("[package]"), "{standalone}");
        }
        let sdk: Table = toml::from_str(&standalone_manifest("gridbox-sdk", VENDORED_MANIFESTS[0].1).unwrap()).unwrap();
        assert_eq!(sdk["dependencies"]["gridbox-abi"]["path"].as_str(), Some("../gridbox-abi"));
    }

    #[test]
    fn inherited_dependencies_take_the_workspace_entry_and_their_own_features() {
        let inherited: Table = toml::from_str("serde = { version = \"1\", features = [\"derive\"] }\nhex = \"0.4\"").unwrap();
        let own: Value = toml::from_str::<Table>("x = { workspace = true, features = [\"std\"], optional = true }").unwrap()["x"].clone();
        let serde = standalone_dependency("c", "serde", &own, &inherited).unwrap();
        assert_eq!(serde["version"].as_str(), Some("1"));
        assert_eq!(serde["features"].as_array().unwrap().len(), 2);
        assert_eq!(serde["optional"].as_bool(), Some(true));
        let hex = standalone_dependency("c", "hex", &own, &inherited).unwrap();
        assert_eq!(hex["version"].as_str(), Some("0.4"));
        let path: Value = toml::from_str::<Table>("x = { path = \"../elsewhere\" }").unwrap()["x"].clone();
        assert!(standalone_dependency("c", "elsewhere", &path, &inherited).unwrap_err().to_string().contains("does not copy"));
    }

    #[test]
    fn names_cargo_would_refuse_are_refused() {
        for good in ["stats", "my-first_job2", "A"] {
            check_name(good).unwrap();
        }
        for bad in ["", "2fast", "-x", "a b", "a/b", "../x", "gridbox-sdk", "std", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn a_project_goes_only_into_an_absent_or_empty_folder() {
        let work = tempfile::tempdir().unwrap();
        let fresh = work.path().join("fresh");
        write_project("fresh", &fresh).unwrap();
        for file in ["Cargo.toml", ".cargo/config.toml", "src/main.rs", "data/data.csv", "README.md", ".gitignore", "gridbox-sdk/Cargo.toml"] {
            assert!(fresh.join(file).is_file(), "{file} is missing");
        }
        let manifest = std::fs::read_to_string(fresh.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("name = \"fresh\"") && manifest.contains("gridbox-sdk = { path = \"gridbox-sdk\" }"), "{manifest}");
        assert!(!std::fs::read_to_string(fresh.join("src/main.rs")).unwrap().contains("{{name}}"));

        let error = write_project("fresh", &fresh).unwrap_err().to_string();
        assert!(error.contains("exists and is not empty"), "{error}");

        let empty = work.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        write_project("empty", &empty).unwrap();

        let file = work.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(write_project("file", &file).is_err());
    }
}

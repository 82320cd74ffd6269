//! The canonical TOML text of a manifest (spec/manifest.md, "Canonical form"). Its BLAKE3 is the
//! job's identity, so it is written here by explicit rules a second implementation can follow,
//! not by a TOML library whose quoting choices (literal or multi-line strings, bare or quoted
//! keys) could change between versions.

use crate::limits::LimitKind;
use crate::manifest::Manifest;

/// The manifest as canonical TOML: keys in a fixed order, one `key = value` per line, every
/// string a basic string with the fewest escapes, tables after the plain keys.
pub(crate) fn canonical_text(manifest: &Manifest) -> String {
    let mut out = String::new();
    out += &format!("format = {}\n", manifest.format);
    out += "module = ";
    string(&mut out, &manifest.module.to_string());
    out += "\nargs = ";
    array(&mut out, manifest.args.iter().map(String::as_str));
    out += "\n";
    if let Some(stdin) = &manifest.stdin {
        out += "stdin = ";
        string(&mut out, stdin);
        out += "\n";
    }
    out += &format!("start_time_unix = {}\nseed = {}\ncapabilities = ", manifest.start_time_unix, manifest.seed);
    array(&mut out, manifest.capabilities.iter().map(|c| c.as_str()));
    out += "\n\n[env]\n";
    for (name, value) in &manifest.env {
        entry(&mut out, name, value);
    }
    out += "\n[inputs]\n";
    for (name, digest) in &manifest.inputs {
        entry(&mut out, name, &digest.to_string());
    }
    for (guest, mount) in &manifest.mounts {
        out += "\n[mounts.";
        key(&mut out, guest);
        out += "]\n";
        if let Some(from) = &mount.from {
            entry(&mut out, "from", from);
        }
        out += &format!("writable = {}\n", mount.writable);
    }
    if let Some(tensor) = &manifest.tensor {
        out += "\n[tensor]\nops = ";
        array(&mut out, tensor.ops.iter().map(String::as_str));
        out += "\n";
        entry(&mut out, "trace", tensor.trace.as_str());
    }
    out += "\n[limits]\n";
    for kind in LimitKind::ALL {
        if let Some(value) = manifest.limits.get(kind) {
            out += &format!("{kind} = {value}\n");
        }
    }
    out
}

/// `key = "value"` and a newline.
fn entry(out: &mut String, name: &str, value: &str) {
    key(out, name);
    *out += " = ";
    string(out, value);
    out.push('\n');
}

/// A key: bare when it is non-empty and only `A-Z a-z 0-9 _ -`, else a basic string.
fn key(out: &mut String, name: &str) {
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        out.push_str(name);
    } else {
        string(out, name);
    }
}

/// `["a", "b"]`, or `[]`.
fn array<'a>(out: &mut String, items: impl Iterator<Item = &'a str>) {
    out.push('[');
    for (index, item) in items.enumerate() {
        if index > 0 {
            out.push_str(", ");
        }
        string(out, item);
    }
    out.push(']');
}

/// A basic string: `"` and `\` escaped with a backslash, backspace, tab, newline, form feed and
/// carriage return as `\b \t \n \f \r`, every other control character (U+0000-U+001F, U+007F)
/// as `\uXXXX` with upper-case hex; every other character as itself, in UTF-8.
fn string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if c.is_ascii_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;

    #[test]
    fn strings_are_basic_with_the_fewest_escapes_and_parse_back() {
        let awkward = [
            "plain",
            "with \"quote\"",
            "back\\slash",
            "new\nline",
            "tab\t",
            "ctl\u{1}\u{7f}\u{1f}",
            "it's",
            "ünï \u{2028}",
            "",
            "both ' and \"\"\"",
            "\r\u{8}\u{c}",
        ];
        let mut manifest = Manifest::new(Digest::of(b"module"));
        manifest.args = awkward.iter().map(|s| s.to_string()).collect();
        for (index, name) in ["A_B-1", "a.b", "sp ace", "ü", "", "\"q\""].iter().enumerate() {
            manifest.env.insert(name.to_string(), awkward[index].to_string());
        }
        let text = canonical_text(&manifest);
        assert!(text.contains(r#"args = ["plain", "with \"quote\"", "back\\slash", "new\nline", "tab\t", "ctl\u0001\u007F\u001F", "it's", "ünï  ", "", "both ' and \"\"\"", "\r\b\f"]"#.replace("  ", " \u{2028}").as_str()), "{text}");
        assert!(text.contains("\n\"\" = \"tab\\t\"\n\"\\\"q\\\"\" = \"ctl"), "{text}");
        assert!(text.contains("\nA_B-1 = \"plain\"\n\"a.b\" = "), "{text}");
        let parsed: Manifest = toml::from_str(&text).unwrap();
        assert_eq!(parsed, manifest, "any TOML reader reads the canonical text back");
        assert_eq!(canonical_text(&parsed), text);
    }
}

//! The layer order is written once, in `src/lib.rs`'s table; this test reads
//! it and fails when a module refers (`crate::...`) to a module of a layer
//! below its own. A module's layer is that of the longest table entry its
//! path starts with (`system::firewall::rules` is the derived layer's,
//! the rest of `system` the effect layer's). Test code (`tests.rs`,
//! `testing.rs`, inline `mod tests`) may use every layer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The table of `src/lib.rs`: each module path with its layer's rank (0 =
/// the top: used by all, uses none) and name.
fn layers(lib: &str) -> BTreeMap<String, (usize, String)> {
    let mut out = BTreeMap::new();
    let rows = lib.lines().filter_map(|l| l.strip_prefix("//! |")).filter(|r| !r.starts_with("---") && !r.starts_with(" layer "));
    for (rank, row) in rows.enumerate() {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (name, modules) = (cells[0], cells[1]);
        for module in modules.split("[`").skip(1).filter_map(|m| m.split_once("`]")).map(|(m, _)| m) {
            assert!(out.insert(module.to_string(), (rank, name.to_string())).is_none(), "{module} is in two layers");
        }
    }
    out
}

/// The layer of a module path: its longest entry in the table.
fn layer_of<'a>(layers: &'a BTreeMap<String, (usize, String)>, path: &str) -> Option<(&'a str, &'a (usize, String))> {
    layers
        .iter()
        .filter(|(m, _)| path == m.as_str() || path.starts_with(&format!("{m}::")))
        .max_by_key(|(m, _)| m.len())
        .map(|(m, l)| (m.as_str(), l))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/system/firewall/rules.rs` → `system::firewall::rules`; `mod.rs`
/// is its directory's module.
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(root().join("src")).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

fn is_test_code(file: &Path) -> bool {
    let name = file.file_name().unwrap().to_string_lossy();
    name == "tests.rs" || name == "testing.rs" || file.iter().any(|p| p == "tests")
}

/// The code of a file without comments and without its inline test module.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines().map(|l| l.split_once("//").map_or(l, |(code, _)| code)).collect::<Vec<_>>().join("\n")
}

/// Every path a text names after `crate::`, with `crate::{a, b::c}` groups
/// split into `a` and `b::c` (nested groups: their head).
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        if code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue; // `foo_crate::`
        }
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => out.push(std::mem::take(&mut item)),
                    c if depth == 0 => item.push(c),
                    _ => {}
                }
            }
            out.push(item);
        } else {
            out.push(rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect());
        }
    }
    out.into_iter()
        .map(|p| p.trim().trim_end_matches(':').split(" as ").next().unwrap().trim().to_string())
        .filter(|p| !p.is_empty() && p != "self")
        .collect()
}

/// Each reference to a module of a lower layer, as `FILE: MODULE (layer)
/// uses PATH (layer)`.
fn violations(src_files: &[(PathBuf, String)], layers: &BTreeMap<String, (usize, String)>) -> (Vec<String>, usize) {
    let mut bad = Vec::new();
    let mut checked = 0;
    for (file, text) in src_files {
        if is_test_code(file) {
            continue;
        }
        let module = module_of(file);
        if module == "lib" || module == "main" {
            continue;
        }
        let (_, (rank, name)) =
            layer_of(layers, &module).unwrap_or_else(|| panic!("{module} ({}) is in no layer of src/lib.rs's table", file.display()));
        for path in crate_paths(&code(text)) {
            let Some((_, (used_rank, used_name))) = layer_of(layers, &path) else {
                continue; // a crate-root item (e.g. a macro), not a module
            };
            checked += 1;
            if used_rank > rank {
                bad.push(format!("{}: {module} ({name}) uses crate::{path} ({used_name}, a layer below)", file.display()));
            }
        }
    }
    (bad, checked)
}

fn sources() -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    files.sort();
    files.into_iter().map(|f| (f.clone(), std::fs::read_to_string(&f).unwrap())).collect()
}

#[test]
fn no_module_uses_a_layer_below_its_own() {
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).unwrap();
    let layers = layers(&lib);
    let (bad, checked) = violations(&sources(), &layers);
    assert!(checked > 100, "the scan sees the crate's references ({checked})");
    assert!(bad.is_empty(), "imports against src/lib.rs's layer order:\n{}", bad.join("\n"));
}

#[test]
fn every_top_level_module_has_a_layer() {
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).unwrap();
    let layers = layers(&lib);
    let modules: Vec<&str> = lib.lines().filter_map(|l| l.strip_prefix("pub mod ")).map(|m| m.trim_end_matches(';')).collect();
    assert!(modules.len() > 10);
    for m in modules {
        assert!(layer_of(&layers, m).is_some(), "module {m} is in no layer of src/lib.rs's table");
    }
}

#[test]
fn the_scan_finds_an_import_from_below_and_a_grouped_one() {
    let layers = layers(
        "//! | layer | modules | what |\n//! |---|---|---|\n//! | domain | [`types`] | x |\n//! | effect | [`system`] | y |\n//! | derived | [`system::firewall::rules`] | z |\n",
    );
    let file = |p: &str, t: &str| (root().join("src").join(p), t.to_string());
    let files = [
        file("types.rs", "use crate::{layout, system::Runner};\n// crate::system in a comment\n"),
        file("system/mod.rs", "use crate::types::Cidr;\n#[cfg(test)]\nmod tests {\n    use crate::system::firewall::rules;\n}\n"),
        file("system/firewall/rules.rs", "fn f() { crate::system::Runner::new(); }"),
    ];
    let (bad, checked) = violations(&files, &layers);
    assert_eq!(checked, 3);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(bad[0].contains("types (domain) uses crate::system::Runner (effect"), "{bad:?}");
    assert!(layers.get("system::firewall::rules").is_some_and(|l| l.1 == "derived"));
}

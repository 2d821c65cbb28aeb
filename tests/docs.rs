//! The documentation is part of the contract: every relative link in it
//! leads somewhere (a file, and a heading of it when it names one).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The documents a reader follows links through: README.md, CONTRIBUTING.md,
/// CHANGELOG.md and every docs/*.md.
fn documents() -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = ["README.md", "CONTRIBUTING.md", "CHANGELOG.md"].iter().map(|f| root().join(f)).collect();
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            docs.push(path);
        }
    }
    docs.sort();
    docs
}

/// The lines of a Markdown text outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|l| {
            if l.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// A line without its inline code spans (`[::]:443` is no link).
fn without_code(line: &str) -> String {
    line.split('`').step_by(2).collect::<Vec<_>>().join(" ")
}

/// The anchors GitHub gives a document's headings: lowercased, punctuation
/// but `-` and `_` dropped, spaces made `-`, a repeated one suffixed `-1`, `-2`.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for line in prose(text) {
        let Some(title) = line.strip_prefix('#').map(|t| t.trim_start_matches('#')) else { continue };
        let slug: String = title
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let mut candidate = slug.clone();
        let mut n = 0;
        while seen.contains(&candidate) {
            n += 1;
            candidate = format!("{slug}-{n}");
        }
        seen.insert(candidate);
    }
    seen
}

/// `(target)` of every `[text](target)` in a line.
fn link_targets(line: &str) -> Vec<String> {
    let line = without_code(line);
    let mut targets = Vec::new();
    let mut rest = line.as_str();
    while let Some(i) = rest.find("](") {
        let after = &rest[i + 2..];
        let Some(end) = after.find(')') else { break };
        targets.push(after[..end].trim().to_string());
        rest = &after[end..];
    }
    targets
}

fn broken_links() -> Vec<String> {
    let mut broken = Vec::new();
    for doc in documents() {
        let text = read(&doc);
        let name = doc.strip_prefix(root()).unwrap().display().to_string();
        for (n, line) in prose(&text).into_iter().enumerate() {
            for target in link_targets(line) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                let (file, anchor) = target.split_once('#').unwrap_or((&target, ""));
                let path = if file.is_empty() { doc.clone() } else { doc.parent().unwrap().join(file) };
                if !path.exists() {
                    broken.push(format!("{name} (prose line {}): {target}: no file {}", n + 1, path.display()));
                    continue;
                }
                if !anchor.is_empty() {
                    let known = anchors(&read(&path));
                    if !known.contains(anchor) {
                        broken.push(format!("{name} (prose line {}): {target}: no heading #{anchor} (has {known:?})", n + 1));
                    }
                }
            }
        }
    }
    broken
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let docs = documents();
    for needed in ["getting-started.md", "operating.md", "api.md", "design.md", "benchmarks.md"] {
        assert!(docs.contains(&root().join("docs").join(needed)), "docs/{needed} is missing");
    }
    let broken = broken_links();
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_link_checker_sees_files_and_anchors() {
    let text = "# Getting started\n## A full disk\n## Options\n## Options\n```\n# not a heading\n```\n";
    let a = anchors(text);
    assert_eq!(a, ["getting-started", "a-full-disk", "options", "options-1"].iter().map(|s| s.to_string()).collect());
    assert_eq!(link_targets("see [x](a.md#b), `[::](not)` and ![p](docs/p.png)"), vec!["a.md#b", "docs/p.png"]);
}

/// The ```sh blocks of a document with the `<!-- ci: KIND -->` line above
/// each (None when it has none), as scripts/getting-started.sh reads them.
fn marked_blocks(text: &str) -> Vec<(Option<String>, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i] == "```sh" {
            let kind = i
                .checked_sub(1)
                .and_then(|p| lines[p].strip_prefix("<!-- ci: "))
                .and_then(|k| k.split(|c: char| !c.is_ascii_lowercase()).next())
                .map(str::to_string);
            let end = (i + 1..lines.len()).find(|&j| lines[j] == "```").expect("a closed block");
            blocks.push((kind, lines[i + 1..end].join("\n")));
            i = end;
        }
        i += 1;
    }
    blocks
}

/// CI runs docs/getting-started.md block by block (scripts/getting-started.sh);
/// this checks what it cannot: that no block escapes it and that the steps
/// are the ones the document promises (a network, the node's WireGuard side,
/// HTTPS through the node, a clean-up).
#[test]
fn getting_started_is_all_run_by_ci_and_ends_with_https_through_a_node() {
    let text = read(&root().join("docs/getting-started.md"));
    let blocks = marked_blocks(&text);
    for (kind, block) in &blocks {
        assert!(
            matches!(kind.as_deref(), Some("rustup" | "machine" | "try")),
            "a ```sh block of docs/getting-started.md that CI does not run (no <!-- ci: rustup|machine|try --> above it):\n{block}"
        );
    }
    let run =
        |k: &str| blocks.iter().filter(|(kind, _)| kind.as_deref() == Some(k)).map(|(_, b)| b.as_str()).collect::<Vec<_>>().join("\n");
    assert!(run("rustup").contains("rustup.rs"), "the exact Rust step");
    assert!(run("machine").contains("scripts/install-deps.sh") && run("machine").contains("cargo build --locked"));
    let try_it = run("try");
    for step in [
        "/api/v1/config.json",
        "PublicKey = $(cat try/network.pub)",
        "Endpoint = 192.0.2.1:51820",
        "AllowedIPs = 10.80.0.0/16",
        "wg-quick up",
        "--cacert try/site.crt",
        "https://app.example.com/",
        "rm -rf try",
    ] {
        assert!(try_it.contains(step), "the try blocks lack {step}");
    }
    let script = read(&root().join("scripts/getting-started.sh"));
    assert!(script.contains("doc=docs/getting-started.md") && script.contains("\"$WORK/try.sh\""), "the script runs this document");
    assert!(read(&root().join("scripts/test.sh")).contains("scripts/getting-started.sh"), "and CI runs the script");
}

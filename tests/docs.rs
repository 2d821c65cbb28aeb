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
        "-H 'Host: app.example.com' http://127.0.0.1/",
        "rm -rf try",
    ] {
        assert!(try_it.contains(step), "the try blocks lack {step}");
    }
    let script = read(&root().join("scripts/getting-started.sh"));
    assert!(script.contains("doc=docs/getting-started.md") && script.contains("\"$WORK/try.sh\""), "the script runs this document");
    assert!(read(&root().join("scripts/test.sh")).contains("scripts/getting-started.sh"), "and CI runs the script");
}

// ---------------------------------------------------------------------------
// The options reference (docs/options.md), generated from `gateway --help`.

#[path = "support/golden.rs"]
mod golden;

/// One option as `gateway --help` describes it.
#[derive(Debug, PartialEq)]
struct HelpOption {
    /// `--token <TOKEN>`, `-h, --help`.
    usage: String,
    /// `--token`.
    long: String,
    help: String,
    env: Option<String>,
    default: Option<String>,
    values: Option<String>,
}

/// `gateway --help`, with none of the caller's variables (clap prints their
/// values beside each `[env: ...]`).
fn gateway_help() -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway")).arg("--help").env_clear().output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// Splits the trailing `[env: ...] [default: ...] [possible values: ...]`
/// groups off a help line (a default may hold brackets: `443,[::]:443`).
fn trailing_groups(mut text: &str) -> (String, Vec<(String, String)>) {
    let mut groups = Vec::new();
    loop {
        let t = text.trim_end();
        if !t.ends_with(']') {
            break;
        }
        let mut depth = 0;
        let mut open = None;
        for (i, c) in t.char_indices().rev() {
            match c {
                ']' => depth += 1,
                '[' => {
                    depth -= 1;
                    if depth == 0 {
                        open = Some(i);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(open) = open else { break };
        let inner = &t[open + 1..t.len() - 1];
        let Some((key, value)) = inner.split_once(": ") else { break };
        if !["env", "default", "possible values"].contains(&key) {
            break;
        }
        groups.push((key.to_string(), value.to_string()));
        text = &t[..open];
    }
    groups.reverse();
    (text.trim_end().to_string(), groups)
}

/// The sections of `gateway --help` (`Options`, `Tool paths`), each with its options.
fn parse_help(help: &str) -> Vec<(String, Vec<HelpOption>)> {
    let mut sections: Vec<(String, Vec<HelpOption>)> = Vec::new();
    let mut lines = help.lines();
    while let Some(line) = lines.next() {
        if let Some(title) = line.strip_suffix(':').filter(|t| !t.starts_with(' ')) {
            sections.push((title.to_string(), Vec::new()));
            continue;
        }
        let trimmed = line.trim_start();
        if !(line.starts_with("  ") && trimmed.starts_with('-')) || line.starts_with("          ") {
            continue;
        }
        // The help lines, indented; a blank line between two of them is a
        // paragraph break (clap's long help), kept as one space.
        let mut help_lines = Vec::new();
        loop {
            let mut ahead = lines.clone();
            match (ahead.next(), ahead.next()) {
                (Some(next), _) if next.starts_with("          ") => help_lines.push(next.trim()),
                (Some(""), Some(after)) if after.starts_with("          ") => {}
                _ => break,
            }
            lines.next();
        }
        let (text, groups) = trailing_groups(&help_lines.join(" "));
        let group = |k: &str| groups.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        let long = trimmed.split([',', ' ']).find(|w| w.starts_with("--")).expect("a long name").to_string();
        let env = group("env").map(|e| e.trim_end_matches('=').to_string());
        let option =
            HelpOption { usage: trimmed.to_string(), long, help: text, env, default: group("default"), values: group("possible values") };
        sections.last_mut().expect("a section before the options").1.push(option);
    }
    sections
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The generated part of docs/options.md: one table per section of `--help`.
fn options_reference(help: &str) -> String {
    let mut out = String::new();
    for (title, options) in parse_help(help) {
        out += &format!("\n### {title}\n\n| option | variable | default | what `--help` says |\n|---|---|---|---|\n");
        for o in options {
            let default = match o.default.as_deref() {
                None if !o.usage.contains('<') => String::new(),
                None | Some("\"\"") => "none".to_string(),
                Some(d) => format!("`{d}`"),
            };
            let mut help = cell(&o.help);
            if !help.ends_with('.') {
                help.push('.');
            }
            if let Some(values) = &o.values {
                help += &format!(" One of {}.", values.split(", ").map(|v| format!("`{v}`")).collect::<Vec<_>>().join(", "));
            }
            let env = o.env.as_deref().map(|e| format!("`{e}`")).unwrap_or_default();
            out += &format!("| `{}` | {env} | {} | {help} |\n", cell(&o.usage), cell(&default));
        }
    }
    out
}

const BEGIN: &str = "<!-- Generated from `gateway --help` by `UPDATE_GOLDEN=1 cargo test --test docs`: edit src/cli.rs, not this part. -->";
const END: &str = "<!-- End of the generated part. -->";

#[test]
fn the_options_reference_is_gateway_help() {
    let path = root().join("docs/options.md");
    let text = read(&path);
    let (head, rest) = text.split_once(BEGIN).expect("docs/options.md has the generated part's first marker");
    let (_, tail) = rest.split_once(END).expect("and its last marker");
    let generated = options_reference(&gateway_help());
    let expected = format!("{head}{BEGIN}\n{generated}\n{END}{tail}");
    if golden::rewrite_requested() {
        std::fs::write(&path, &expected).unwrap();
    }
    assert!(
        read(&path) == expected,
        "docs/options.md differs from `gateway --help`: run `UPDATE_GOLDEN=1 cargo test --test docs` and commit it"
    );
}

/// Every option of `--help` is in the reference with its variable, named by
/// the rule (GATEWAY_ and the name in capitals), and every option the
/// reference names (its notes included) is one of `--help`.
#[test]
fn every_option_has_its_variable_and_the_reference_names_no_other() {
    let sections = parse_help(&gateway_help());
    let options: Vec<&HelpOption> = sections.iter().flat_map(|(_, o)| o).collect();
    assert!(options.len() > 30, "{options:?}");
    let reference = read(&root().join("docs/options.md"));
    for o in &options {
        assert!(reference.contains(&format!("`{}", o.usage)), "{} is not in docs/options.md", o.long);
        if ["--help", "--version", "--openapi"].contains(&o.long.as_str()) {
            continue;
        }
        let rule = format!("GATEWAY_{}", o.long.trim_start_matches("--").replace('-', "_").to_uppercase());
        assert_eq!(o.env.as_deref(), Some(rule.as_str()), "{} reads no variable, or another one", o.long);
    }
    let known: BTreeSet<&str> = options.iter().map(|o| o.long.as_str()).collect();
    let mut named = BTreeSet::new();
    for line in prose(&reference) {
        for span in line.split('`').skip(1).step_by(2) {
            if let Some(name) = span.split([' ', '=']).next().filter(|w| w.starts_with("--") && w.len() > 2) {
                named.insert(name.to_string());
            }
        }
    }
    let unknown: Vec<&String> = named.iter().filter(|n| !known.contains(n.as_str())).collect();
    assert!(unknown.is_empty(), "docs/options.md names options `gateway --help` does not know: {unknown:?}");
}

#[test]
fn help_lines_are_split_into_text_and_groups() {
    let (text, groups) = trailing_groups("What it listens on [default: 443,[::]:443; only 443 without IPv6] [env: GATEWAY_HTTPS_LISTEN=]");
    assert_eq!(text, "What it listens on");
    assert_eq!(
        groups,
        vec![("default".into(), "443,[::]:443; only 443 without IPv6".into()), ("env".into(), "GATEWAY_HTTPS_LISTEN=".into())]
    );
    let (text, groups) = trailing_groups("A list `[a]` inside [possible values: a, b]");
    assert_eq!((text.as_str(), groups.len()), ("A list `[a]` inside", 1));
    let parsed = parse_help(
        "Usage: gateway\n\nOptions:\n      --port <PORT>\n          API port [default: 8000] [env: GATEWAY_PORT=]\n  -h, --help\n          Print help\n",
    );
    assert_eq!(parsed.len(), 1);
    assert_eq!(parsed[0].1[0].env.as_deref(), Some("GATEWAY_PORT"));
    assert_eq!(parsed[0].1[1].long, "--help");
    let paragraphs = parse_help("Options:\n      --a <A>\n          One.\n\n          Two [env: GATEWAY_A=]\n\nAfter help.\n");
    assert_eq!((paragraphs[0].1[0].help.as_str(), paragraphs[0].1[0].env.as_deref()), ("One. Two", Some("GATEWAY_A")));
}

/// The metrics table of docs/operating.md lists every family the daemon
/// registers (src/metrics.rs), and no other.
#[test]
fn the_metrics_table_is_what_the_daemon_exports() {
    // With --ha-address, so its series (absent without) is counted too.
    let exposition = gateway::metrics::Metrics::default().with_ha().encode().unwrap();
    let exported: BTreeSet<String> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE gateway_"))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect();
    let guide = read(&root().join("docs/operating.md"));
    let table = guide.split("| series | type | meaning |").nth(1).expect("docs/operating.md has the metrics table");
    let mut documented = BTreeSet::new();
    for row in table.lines().skip(2).take_while(|l| l.starts_with('|')) {
        let first = row.split('|').nth(1).unwrap();
        for name in first.split('`').skip(1).step_by(2) {
            let name = name.split('{').next().unwrap();
            documented.insert(name.strip_suffix("_total").unwrap_or(name).to_string());
        }
    }
    let missing: Vec<_> = exported.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&exported).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/operating.md's metrics table lacks {missing:?} and lists {stale:?}, which the daemon does not export"
    );
}

/// Every operation of the OpenAPI document is in docs/api.md's route
/// table, and every error code the daemon answers (src/api/error.rs) and
/// every detail code (apply errors, readiness reasons) is explained there.
#[test]
fn the_api_guide_has_every_route_and_every_error_code() {
    let guide = read(&root().join("docs/api.md"));
    let spec: serde_json::Value = serde_json::from_str(&read(&root().join("docs/openapi.json"))).unwrap();
    let mut missing = Vec::new();
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys().filter(|m| ["get", "post", "patch", "put", "delete"].contains(&m.as_str())) {
            let row = format!("`{} {path}", method.to_uppercase());
            let either = format!("`POST`/`PATCH {path}");
            let listed = guide.contains(&row) || ["post", "patch"].contains(&method.as_str()) && guide.contains(&either);
            if !listed {
                missing.push(row);
            }
        }
    }
    // The codes as the daemon writes them: `(Status::X, "code"`, a
    // catcher's `=> ("code"`, `error: "code".into()`, `reason("code"`.
    let sources = read(&root().join("src/api/error.rs")) + &read(&root().join("src/model.rs")) + &read(&root().join("src/status.rs"));
    let mut codes = BTreeSet::new();
    for marker in [", \"", "=> (\"", "error: \"", "reason(\"", "Some(\""] {
        for piece in sources.split(marker).skip(1) {
            let code: String = piece.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            if piece[code.len()..].starts_with('"') && code.contains('_')
                || ["unauthorized", "forbidden", "internal", "busy"].contains(&code.as_str())
            {
                codes.insert(code);
            }
        }
    }
    for code in
        ["invalid_config", "apply_failed", "precondition_failed", "not_found", "method_not_allowed", "network_failed", "not_applied"]
    {
        assert!(codes.contains(code), "the code scan misses {code}: {codes:?}");
    }
    for code in &codes {
        if !guide.contains(&format!("`{code}`")) {
            missing.push(code.clone());
        }
    }
    assert!(missing.is_empty(), "docs/api.md lacks {missing:?}");
}

/// The `.rs` files under a directory, recursively, but tests.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() && !path.ends_with("tests") {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("tests.rs") {
            files.push(path);
        }
    }
    files
}

/// Every event the daemon publishes (`events.publish("name", ...)` in
/// src/) is in docs/api.md's event table.
#[test]
fn the_api_guide_has_every_event() {
    let mut events = BTreeSet::new();
    for file in sources(&root().join("src")) {
        let text = read(&file);
        for call in text.split("publish(").skip(1) {
            let Some(args) = call.split(", &").next() else { continue };
            if args.starts_with("&self") || args.contains("fn ") {
                continue;
            }
            for name in args.split('"').skip(1).step_by(2) {
                events.insert(name.to_string());
            }
        }
    }
    for event in ["apply", "drift_repaired", "peer_connected", "route_failed", "store_error"] {
        assert!(events.contains(event), "the scan misses {event}: {events:?}");
    }
    let guide = read(&root().join("docs/api.md"));
    let table = guide.split("| event | data | when |").nth(1).expect("docs/api.md has the event table");
    let table: String = table.lines().skip(2).take_while(|l| l.starts_with('|')).collect::<Vec<_>>().join("\n");
    let missing: Vec<_> = events.iter().filter(|e| !table.contains(&format!("`{e}`"))).collect();
    assert!(missing.is_empty(), "docs/api.md's event table lacks {missing:?}");
}

/// Every `GATEWAY_*` variable the docs name is one an option reads, or one
/// of the scripts' and tests' own (the binary a script runs, the test-only
/// fault injection).
#[test]
fn the_docs_name_only_variables_that_exist() {
    let help = gateway_help();
    let known: BTreeSet<String> = parse_help(&help).into_iter().flat_map(|(_, o)| o).filter_map(|o| o.env).collect();
    let others = ["GATEWAY_BIN", "GATEWAY_FAULT"];
    let mut unknown = Vec::new();
    for doc in documents() {
        let text = read(&doc);
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("GATEWAY_") && word.len() > 8 && !known.contains(word) && !others.contains(&word) {
                unknown.push(format!("{}: {word}", doc.strip_prefix(root()).unwrap().display()));
            }
        }
    }
    assert!(unknown.is_empty(), "variables no option reads: {unknown:?}");
}

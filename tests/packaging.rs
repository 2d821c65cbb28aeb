//! What can be checked of the packaging without a Docker engine: every file
//! the Dockerfile copies exists, the image carries the contract's defaults and
//! a health check, the scripts parse, and CI, README and .ci/run agree on the
//! test command.

use std::path::Path;
use std::process::Command;

fn read(p: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

#[test]
fn dockerfile_copies_only_what_exists_and_sets_the_defaults() {
    let df = read("Dockerfile");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut copied = Vec::new();
    for line in df.lines().map(str::trim).filter(|l| l.starts_with("COPY ") && !l.contains("--from=")) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for src in &parts[1..parts.len() - 1] {
            assert!(root.join(src).exists(), "Dockerfile copies {src}, which does not exist");
            copied.push(*src);
        }
    }
    // What the build needs (cargo's manifest, lock file and build script, the
    // sources, the SQL migrations compiled in) and what the image runs.
    let mut needed = vec!["Cargo.toml", "Cargo.lock", "src", "migrations", "scripts/install-deps.sh", "docker/entrypoint.sh"];
    if root.join("build.rs").exists() {
        needed.push("build.rs");
    }
    for file in needed {
        assert!(copied.contains(&file), "the image needs {file}, but the Dockerfile does not copy it (it copies {copied:?})");
    }
    // cargo refuses to build when a declared target's file is missing.
    let cargo = read("Cargo.toml");
    for (section, dir) in [("[[bench]]", "benches"), ("[[example]]", "examples"), ("[[test]]", "tests")] {
        if cargo.contains(section) {
            assert!(copied.contains(&dir), "Cargo.toml declares {section}: the Dockerfile must copy {dir}/");
        }
    }
    assert!(df.contains("install-deps.sh --runtime"), "the image uses CI's install script");
    // The defaults issue 4 asks the image to set (the daemon's own database default is in memory).
    for default in ["GATEWAY_PORT=8000", "GATEWAY_DATABASE=/tmp/gateway.db", "ROCKET_ADDRESS=0.0.0.0", "RUST_LOG="] {
        assert!(df.contains(default), "Dockerfile lacks {default}");
    }
    assert!(df.contains("HEALTHCHECK") && df.contains("/health"), "health check on /health");
    assert!(df.contains("ENTRYPOINT [\"/usr/bin/tini\", \"--\", \"/usr/local/bin/gateway-entrypoint\"]"), "an init reaps daemons");
    assert!(read("docker/entrypoint.sh").contains("net.ipv4.ip_forward=1"));
}

#[test]
fn scripts_parse() {
    // (scripts/test.sh runs shellcheck on them too; its install step installs it.)
    for s in [
        "scripts/install-deps.sh",
        "scripts/test.sh",
        "scripts/demo.sh",
        "scripts/vm-test.sh",
        "scripts/vm/guest-test.sh",
        "scripts/vm/init",
        "docker/entrypoint.sh",
        ".ci/run",
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(s);
        let out = Command::new("bash").arg("-n").arg(&path).output().unwrap();
        assert!(out.status.success(), "{s}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn ci_readme_and_gitlab_run_the_same_test_command() {
    assert!(read(".ci/run").contains("scripts/test.sh"));
    let gitlab = read(".gitlab-ci.yml");
    for step in ["fmt", "clippy", "test", "vm", "openapi"] {
        assert!(gitlab.contains(&format!("scripts/test.sh {step}")), "GitLab runs the {step} step of the same script");
    }
    let readme = read("README.md");
    let quick = &readme[readme.find("## Quick start").unwrap()..];
    let block = &quick[quick.find("```sh").unwrap() + 5..];
    let block = &block[..block.find("```").unwrap()];
    let commands: Vec<&str> = block.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    assert_eq!(commands.len(), 2, "quick start is exactly two commands: {commands:?}");
    assert!(commands[0].starts_with("scripts/demo.sh"));
    assert!(commands[1].starts_with("scripts/test.sh"));
}

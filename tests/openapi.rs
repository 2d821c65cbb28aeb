//! The committed OpenAPI document (docs/openapi.json) is what `--openapi`
//! prints; CI fails when it drifts. `UPDATE_GOLDEN=1 cargo test --test
//! openapi` rewrites it. scripts/test.sh also runs openapi-spec-validator.

#[path = "support/golden.rs"]
mod golden;

/// The binary with none of the caller's GATEWAY_* or ROCKET_* variables.
fn gateway() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"));
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(|n| n.starts_with("GATEWAY_") || n.starts_with("ROCKET_")) {
            c.env_remove(name);
        }
    }
    c
}

#[test]
fn committed_spec_matches_the_binary() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
    let actual = serde_json::to_string_pretty(&gateway::api::openapi_spec()).unwrap() + "\n";
    if golden::rewrite_requested() {
        std::fs::write(&path, &actual).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap();
    assert!(committed == actual, "docs/openapi.json is stale: run `UPDATE_GOLDEN=1 cargo test --test openapi` and commit it");
}

#[test]
fn binary_prints_the_spec_and_exits_zero() {
    let out = gateway().arg("--openapi").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["openapi"], "3.1.0");
    assert_eq!(v["info"]["title"], "gateway");
}

#[test]
fn help_and_version_read_well() {
    let out = gateway().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for opt in [
        "--token",
        "[env: GATEWAY_TOKEN]",
        "--database",
        "--wireguard-backend",
        "--custom-forwarding",
        "--watchdog",
        "--retention",
        "--nginx-stream-config",
        "--https-listen",
        "[default: 60s]",
        "[default: 24h]",
    ] {
        assert!(help.contains(opt), "--help lacks {opt}:\n{help}");
    }
    let out = gateway().arg("--version").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("gateway {}", env!("CARGO_PKG_VERSION")));
}

//! The committed OpenAPI document (docs/openapi.json) is what `--openapi`
//! prints; CI fails when it drifts. `UPDATE_GOLDEN=1 cargo test --test
//! openapi` rewrites it. scripts/test.sh also runs openapi-spec-validator.

#[test]
fn committed_spec_matches_the_binary() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
    let actual = serde_json::to_string_pretty(&gateway::api::openapi_spec()).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &actual).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap();
    assert!(committed == actual, "docs/openapi.json is stale: run `UPDATE_GOLDEN=1 cargo test --test openapi` and commit it");
}

#[test]
fn binary_prints_the_spec_and_exits_zero() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway")).arg("--openapi").env_remove("GATEWAY_TOKEN").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["openapi"], "3.0.0");
    assert_eq!(v["info"]["title"], "gateway");
}

#[test]
fn help_and_version_read_well() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway")).arg("--help").output().unwrap();
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
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway")).arg("--version").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("gateway {}", env!("CARGO_PKG_VERSION")));
}

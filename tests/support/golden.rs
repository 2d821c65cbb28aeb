//! The one rule for files a test compares with (golden files, the committed
//! OpenAPI document): they are rewritten only when `UPDATE_GOLDEN` is exactly
//! `1`, and never in CI (`CI` set), where a rewrite would hide the difference
//! it exists to show. Included by path from the unit and integration tests.

/// Whether the caller asked for expected files to be rewritten.
pub fn rewrite_requested() -> bool {
    if std::env::var("UPDATE_GOLDEN").as_deref() != Ok("1") {
        return false;
    }
    assert!(std::env::var_os("CI").is_none(), "UPDATE_GOLDEN=1 is refused in CI: expected files are checked there, never rewritten");
    true
}

//! The API's tokens: admin (everything) and read (status, traffic, metrics,
//! events), each given on the command line or in files holding one token
//! per line. The files are read again on SIGHUP ([`TokenSources::load`]),
//! so a token is rotated without a restart and without a window where
//! neither the old nor the new one works.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use subtle::ConstantTimeEq;

/// One API token. Compared in constant time; never printed.
#[derive(Clone)]
pub struct ApiToken(String);

impl ApiToken {
    /// `None` for an empty token: the API is then open.
    pub fn new(token: &str) -> Option<Self> {
        (!token.is_empty()).then(|| ApiToken(token.to_string()))
    }

    pub fn matches(&self, given: &str) -> bool {
        given.as_bytes().ct_eq(self.0.as_bytes()).into()
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(redacted)")
    }
}

/// What a presented token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// status, traffic, metrics, events.
    Read,
    /// Everything, config.json included.
    Admin,
}

/// The tokens in force.
#[derive(Debug, Clone, Default)]
pub struct TokenSet {
    admin: Vec<ApiToken>,
    read: Vec<ApiToken>,
}

impl TokenSet {
    /// No token at all: the API is open (and listens on loopback only).
    pub fn is_open(&self) -> bool {
        self.admin.is_empty()
    }

    /// (admin, read) token counts, for the log.
    pub fn counts(&self) -> (usize, usize) {
        (self.admin.len(), self.read.len())
    }

    /// The scope `given` opens, if any. Every token is compared (no early
    /// exit), so the time taken does not tell which one matched.
    pub fn scope_of(&self, given: &str) -> Option<Scope> {
        let hit = |tokens: &[ApiToken]| tokens.iter().fold(false, |found, t| found | t.matches(given));
        let (admin, read) = (hit(&self.admin), hit(&self.read));
        if admin {
            Some(Scope::Admin)
        } else if read {
            Some(Scope::Read)
        } else {
            None
        }
    }
}

/// Where one kind of token comes from.
#[derive(Debug, Clone, Default)]
enum Source {
    #[default]
    None,
    Given(ApiToken),
    File(PathBuf),
}

impl Source {
    /// From `--X` and `--X-file` (empty values mean none: tests and
    /// wrappers blank the environment's).
    fn from(given: Option<&str>, file: Option<&str>, names: (&str, &str)) -> anyhow::Result<Source> {
        let given = given.filter(|t| !t.is_empty());
        let file = file.filter(|p| !p.is_empty());
        let (opt, file_opt) = names;
        match (given, file) {
            (Some(_), Some(_)) => {
                bail!(
                    "both {opt} and {file_opt} are given: use one (the file keeps the token off command lines and out of the environment)"
                )
            }
            (_, Some(path)) => Ok(Source::File(path.into())),
            (Some(token), None) if token.trim() != token => {
                // A header value loses its surrounding whitespace on the way (HTTP
                // trims it), so such a token could never match: refuse, not guess.
                bail!("the token of {opt} has leading or trailing whitespace, which no client can send in a header: remove it")
            }
            (Some(token), None) => Ok(ApiToken::new(token).map_or(Source::None, Source::Given)),
            (None, None) => Ok(Source::None),
        }
    }

    fn tokens(&self) -> anyhow::Result<Vec<ApiToken>> {
        match self {
            Source::None => Ok(vec![]),
            Source::Given(t) => Ok(vec![t.clone()]),
            Source::File(path) => read_token_file(path),
        }
    }
}

/// Where the admin and read tokens come from; [`Self::load`] reads them.
/// The default: none, the API is open.
#[derive(Debug, Clone, Default)]
pub struct TokenSources {
    admin: Source,
    read: Source,
}

impl TokenSources {
    /// From the admin and the read token options, each a token or a file
    /// (`--token`/`--token-file`, `--read-token`/`--read-token-file`).
    pub fn new(admin: (Option<&str>, Option<&str>), read: (Option<&str>, Option<&str>)) -> anyhow::Result<TokenSources> {
        let admin = Source::from(admin.0, admin.1, ("--token (GATEWAY_TOKEN)", "--token-file (GATEWAY_TOKEN_FILE)"))?;
        let read = Source::from(read.0, read.1, ("--read-token (GATEWAY_READ_TOKEN)", "--read-token-file (GATEWAY_READ_TOKEN_FILE)"))?;
        if matches!(admin, Source::None) && !matches!(read, Source::None) {
            bail!("a read token is given without an admin token (--token or --token-file): the API would be open to writes");
        }
        Ok(TokenSources { admin, read })
    }

    /// Whether any token file is read (SIGHUP then reads it again).
    pub fn has_files(&self) -> bool {
        matches!(self.admin, Source::File(_)) || matches!(self.read, Source::File(_))
    }

    /// The tokens now: the given ones and each file's lines.
    pub fn load(&self) -> anyhow::Result<TokenSet> {
        Ok(TokenSet { admin: self.admin.tokens()?, read: self.read.tokens()? })
    }
}

/// One token per line, surrounding whitespace and blank lines ignored.
/// Refused unless only its owner may access it, or when it holds no token
/// (an empty file would open the API).
fn read_token_file(path: &Path) -> anyhow::Result<Vec<ApiToken>> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let mode = std::fs::metadata(path).with_context(|| format!("token file {shown}"))?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!("token file {shown} is open to group or others (mode {mode:04o}): only its owner may read it, e.g. chmod 600 {shown}");
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("token file {shown}"))?;
    let tokens: Vec<ApiToken> = text.lines().filter_map(|l| ApiToken::new(l.trim())).collect();
    if tokens.is_empty() {
        bail!("token file {shown} is empty");
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn sources(extra: &[&str]) -> anyhow::Result<TokenSources> {
        let mut argv = vec!["gateway"];
        argv.extend(extra);
        let c = crate::daemon::ConfigSource::config(&crate::cli::Args::try_parse_args_only(argv).unwrap()).unwrap();
        TokenSources::new((c.token.as_deref(), c.token_file.as_deref()), (c.read_token.as_deref(), c.read_token_file.as_deref()))
    }

    #[test]
    fn token_file_owner_only_trimmed_and_not_with_a_token() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret\n").unwrap();
        let path = file.to_str().unwrap();
        let parse = |extra: &[&str]| sources(extra).and_then(|s| s.load());
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            let set = parse(&["--token-file", path]).unwrap();
            assert_eq!(set.scope_of("s3cret"), Some(Scope::Admin));
            assert_eq!(set.scope_of("s3cret\n"), None, "the newline is not part of it");
        }
        for mode in [0o644, 0o640, 0o604, 0o620] {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = parse(&["--token-file", path]).expect_err("refused").to_string();
            assert!(err.contains("open to group or others") && err.contains(&format!("{mode:04o}")), "{err}");
        }
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = parse(&["--token-file", path, "--token", "other"]).expect_err("refused").to_string();
        assert!(err.contains("use one"), "{err}");
        assert!(!parse(&["--token-file", path, "--token="]).unwrap().is_open(), "an empty --token is no token");
        assert!(!parse(&["--token-file=", "--token", "t"]).unwrap().is_open(), "an empty --token-file is no file");
        std::fs::write(&file, "\n  \n").unwrap();
        assert!(parse(&["--token-file", path]).expect_err("refused").to_string().contains("is empty"));
        assert!(parse(&["--token-file", "/nonexistent/token"]).is_err());
    }

    #[test]
    fn a_file_holds_several_tokens_one_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let (admin, read) = (dir.path().join("admin"), dir.path().join("read"));
        std::fs::write(&admin, "old-admin\n  new-admin  \n\n").unwrap();
        std::fs::write(&read, "scrape one\nscrape-two").unwrap();
        for f in [&admin, &read] {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let s = sources(&["--token-file", admin.to_str().unwrap(), "--read-token-file", read.to_str().unwrap()]).unwrap();
        assert!(s.has_files());
        let set = s.load().unwrap();
        assert_eq!(set.counts(), (2, 2));
        assert_eq!((set.scope_of("old-admin"), set.scope_of("new-admin")), (Some(Scope::Admin), Some(Scope::Admin)));
        assert_eq!((set.scope_of("scrape one"), set.scope_of("scrape-two")), (Some(Scope::Read), Some(Scope::Read)), "inner space kept");
        for wrong in ["", "scrape", "new-admin ", "old-admin\nnew-admin"] {
            assert_eq!(set.scope_of(wrong), None, "{wrong:?}");
        }
        // Rotation: the file loses the old token; the next load no longer has it.
        std::fs::write(&admin, "new-admin\n").unwrap();
        let set = s.load().unwrap();
        assert_eq!((set.scope_of("old-admin"), set.scope_of("new-admin")), (None, Some(Scope::Admin)));
    }

    #[test]
    fn a_read_token_needs_an_admin_token_and_no_whitespace() {
        let err = sources(&["--read-token", "r"]).expect_err("refused").to_string();
        assert!(err.contains("without an admin token"), "{err}");
        let err = sources(&["--token", "a", "--read-token", "r "]).expect_err("refused").to_string();
        assert!(err.contains("--read-token") && err.contains("whitespace"), "{err}");
        let set = sources(&["--token", "a", "--read-token", "r"]).unwrap().load().unwrap();
        assert_eq!((set.scope_of("a"), set.scope_of("r")), (Some(Scope::Admin), Some(Scope::Read)));
        assert!(sources(&[]).unwrap().load().unwrap().is_open());
    }

    #[test]
    fn tokens_compare_exactly_and_never_print() {
        let t = ApiToken::new("secret").unwrap();
        assert!(t.matches("secret"));
        for other in ["secret ", "secre", "", "Secret"] {
            assert!(!t.matches(other), "{other:?}");
        }
        assert!(ApiToken::new("").is_none(), "an empty token is no token");
        assert!(!format!("{t:?}").contains("secret"));
        let set = TokenSet { admin: vec![t], read: vec![] };
        assert!(!format!("{set:?}").contains("secret"));
    }
}

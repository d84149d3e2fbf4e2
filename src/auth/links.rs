//! Magic links: where they may point (the validation-URL allowlist) and how
//! one is made from a validation URL and a link token.
//!
//! An allowlist entry fixes scheme, host and port exactly and gives a path
//! prefix, compared segment by segment (`/auth` allows `/auth` and
//! `/auth/cb`, never `/authx`). URLs are compared after parsing (so
//! `https://app.example.com.evil.com`, `https://app.example.com@evil.com`
//! and `javascript:` never match an entry for `https://app.example.com`),
//! must carry no user info, and must be https unless the host is loopback.
//! A path holding a percent-encoded `/`, `\` or `.` (`%2F`, `%5C`, `%2E`,
//! any case) or a `.`/`..` segment is refused outright: the allowlist would
//! see one path and many web servers, after decoding, another
//! (`/auth/..%2fadmin` is `/admin` to them).

use url::Url;

/// One allowed validation-URL prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedUrl {
    scheme: String,
    host: String,
    port: u16,
    path: String,
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost" || d.ends_with(".localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Parses and checks a URL the rules allow at all.
pub(crate) fn acceptable(text: &str) -> Result<Url, &'static str> {
    let url = Url::parse(text.trim()).map_err(|_| "is not an absolute URL")?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => return Err("must use https (http only for localhost)"),
        _ => return Err("must be an http(s) URL"),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain user info (`user@`)");
    }
    if url.host().is_none() {
        return Err("must have a host");
    }
    if has_ambiguous_path(&url) {
        return Err(
            "must not contain an encoded `/`, `\\` or `.` (%2F, %5C, %2E) or a `.`/`..` segment in its path",
        );
    }
    Ok(url)
}

/// Whether a path could mean other segments to a web server than it means
/// here: percent-encoded separators or dots, or dot segments (the URL
/// parser resolves literal ones; this is the guard should one remain).
fn has_ambiguous_path(url: &Url) -> bool {
    let path = url.path().to_ascii_lowercase();
    ["%2f", "%5c", "%2e"].iter().any(|e| path.contains(e))
        || path
            .split('/')
            .any(|segment| segment == "." || segment == "..")
}

/// Whether `path` is `prefix` or lies under it, segment by segment.
fn path_within(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some("") => true,
        Some(rest) => prefix.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

impl AllowedUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = acceptable(text).map_err(str::to_owned)?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err("an allowlist entry takes no query or fragment".into());
        }
        Ok(Self {
            scheme: url.scheme().to_owned(),
            host: url.host_str().unwrap_or_default().to_owned(),
            port: url.port_or_known_default().unwrap_or_default(),
            path: url.path().to_owned(),
        })
    }

    fn permits(&self, url: &Url) -> bool {
        url.scheme() == self.scheme
            && url.host_str() == Some(self.host.as_str())
            && url.port_or_known_default() == Some(self.port)
            && path_within(&self.path, url.path())
    }
}

/// The validation URLs a tenant's links may use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allowlist(Vec<AllowedUrl>);

impl Allowlist {
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        entries
            .iter()
            .map(|e| AllowedUrl::parse(e).map_err(|r| format!("{e:?}: {r}")))
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a (request's) validation URL may be used.
    pub fn permits(&self, url: &str) -> bool {
        self.check(url).is_ok()
    }

    /// The URL, parsed, when it is allowed.
    pub fn check(&self, url: &str) -> Result<Url, &'static str> {
        let parsed = acceptable(url)?;
        if parsed.fragment().is_some() {
            return Err("must not have a fragment");
        }
        if self.0.iter().any(|entry| entry.permits(&parsed)) {
            Ok(parsed)
        } else {
            Err("is not on the allowlist")
        }
    }
}

/// The magic link: the validation URL with `token=<link token>` added
/// (replacing any `token` it had).
pub fn magic_link(validation_url: &Url, token: &str) -> String {
    let mut url = validation_url.clone();
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "token")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.set_query(None);
    {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in &kept {
            pairs.append_pair(k, v);
        }
        pairs.append_pair("token", token);
    }
    url.into()
}

/// A language tag as latchkey accepts it: `en`, `de`, `pt-BR`.
pub fn is_locale(tag: &str) -> bool {
    (2..=16).contains(&tag.len())
        && tag.split('-').all(|part| {
            !part.is_empty() && part.len() <= 8 && part.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Allowlist {
        Allowlist::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn the_allowlist_matches_scheme_host_port_and_path_prefix_only() {
        let allow = list(&["https://app.example.com/auth", "http://localhost:3000/"]);
        let cases = [
            ("https://app.example.com/auth", true),
            ("https://app.example.com/auth/callback?next=/home", true),
            ("https://APP.example.com/auth/x", true),
            ("https://app.example.com:443/auth/x", true),
            ("https://app.example.com/authx", false),
            ("https://app.example.com/other", false),
            ("https://app.example.com/auth/../admin", false),
            ("https://app.example.com.evil.com/auth", false),
            ("https://evil.com/app.example.com/auth", false),
            ("https://app.example.com@evil.com/auth", false),
            ("https://user:pass@app.example.com/auth", false),
            ("https://app.example.com:8443/auth", false),
            ("http://app.example.com/auth", false),
            ("javascript:alert(1)//app.example.com/auth", false),
            ("data:text/html,<script>", false),
            ("//app.example.com/auth", false),
            ("/auth", false),
            ("https://app.example.com/auth#frag", false),
            ("http://localhost:3000/verify", true),
            ("http://localhost:3001/verify", false),
            ("https://xn--app-example.com/auth", false),
            // Encoded separators and dots, whatever the case.
            ("https://app.example.com/auth/..%2fadmin", false),
            ("https://app.example.com/auth/..%2Fadmin", false),
            ("https://app.example.com/auth/..%5cadmin", false),
            ("https://app.example.com/auth/..%5Cadmin", false),
            ("https://app.example.com/auth/%2e%2e/admin", false),
            ("https://app.example.com/auth/.%2E/admin", false),
            ("https://app.example.com/auth%2fx", false),
            ("https://app.example.com/auth/a%2fb", false),
            ("https://app.example.com/auth\\..\\admin", false),
            // Elsewhere in the URL they mean nothing to the path.
            ("https://app.example.com/auth/cb?next=%2F..%2Fadmin", true),
            ("https://app.example.com/auth/caf%C3%A9", true),
            // (The parser resolves dot segments, encoded or not, first.)
            ("https://app.example.com/auth/x/..", true),
            ("https://app.example.com/auth/x/%2E", true),
        ];
        for (url, expected) in cases {
            assert_eq!(allow.permits(url), expected, "{url}");
        }
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(path_within("/auth", "/auth"));
        assert!(path_within("/auth", "/auth/cb"));
        assert!(!path_within("/auth", "/authx"));
        assert!(!path_within("/auth", "/aut"));
        assert!(path_within("/auth/", "/auth/cb"));
        assert!(!path_within("/auth/", "/auth"));
        assert!(path_within("/", "/anything"));
    }

    #[test]
    fn allowlist_entries_must_be_https_without_user_info_query_or_fragment() {
        for bad in [
            "http://app.example.com/",
            "ftp://app.example.com/",
            "https://u@app.example.com/",
            "https://app.example.com/?a=b",
            "https://app.example.com/#x",
            "https://app.example.com/a%2fb",
            "https://app.example.com/a%5Cb/",
            "not a url",
        ] {
            assert!(AllowedUrl::parse(bad).is_err(), "{bad}");
        }
        for good in [
            "https://app.example.com",
            "http://127.0.0.1:8000/cb",
            "http://[::1]/",
        ] {
            assert!(AllowedUrl::parse(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn the_link_adds_the_token_and_keeps_other_parameters() {
        let url = Url::parse("https://app.example.com/auth?next=%2Fhome&token=old").unwrap();
        let link = magic_link(&url, "lkl_abc");
        assert_eq!(
            link,
            "https://app.example.com/auth?next=%2Fhome&token=lkl_abc"
        );
    }

    #[test]
    fn locales_are_short_language_tags() {
        for ok in ["en", "de", "pt-BR", "zh-Hant-TW"] {
            assert!(is_locale(ok), "{ok}");
        }
        for bad in ["", "e", "../en", "en_US ", "de/x", "a-"] {
            assert!(!is_locale(bad), "{bad}");
        }
    }
}

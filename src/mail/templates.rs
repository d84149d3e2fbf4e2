//! Email templates (minijinja): a plain-text and an HTML part and a subject
//! for each kind of email, per locale, sharing one HTML layout. English,
//! German and French are built in; an operator's directory
//! (`LATCHKEY_TEMPLATE_DIR`) overrides any file or adds locales, and
//! `tenants/<tenant id>/<locale>/…` in it overrides per tenant. Everything is
//! parsed and test-rendered at start-up, so a broken override stops the
//! service there, not at the first login.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use minijinja::{Environment, UndefinedBehavior, context};

/// A rendered email.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// What a sign-in email says.
#[derive(Clone, Copy, Debug)]
pub struct SignInEmail<'a> {
    pub app_name: &'a str,
    pub email: &'a str,
    pub code: Option<&'a str>,
    pub link: Option<&'a str>,
    /// How long the proof works once the email is accepted.
    pub minutes: i64,
}

/// What an email is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A sign-in code and/or magic link.
    SignIn,
    /// "There is no account for this address" (login-only tenants).
    NoAccount,
    /// "Your sign-in address was changed", to the old address.
    EmailChanged,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::SignIn, Kind::NoAccount, Kind::EmailChanged];

    fn name(self) -> &'static str {
        match self {
            Kind::SignIn => "sign_in",
            Kind::NoAccount => "no_account",
            Kind::EmailChanged => "email_changed",
        }
    }
}

const PARTS: [&str; 3] = ["subject.txt", "txt", "html"];

/// The locale every lookup falls back to.
pub const FALLBACK_LOCALE: &str = "en";

macro_rules! built_in {
    ($($locale:literal),*) => {&[
        ("layout.html", include_str!("../../templates/layout.html")),
        $(
            (concat!($locale, "/sign_in.subject.txt"), include_str!(concat!("../../templates/", $locale, "/sign_in.subject.txt"))),
            (concat!($locale, "/sign_in.txt"), include_str!(concat!("../../templates/", $locale, "/sign_in.txt"))),
            (concat!($locale, "/sign_in.html"), include_str!(concat!("../../templates/", $locale, "/sign_in.html"))),
            (concat!($locale, "/no_account.subject.txt"), include_str!(concat!("../../templates/", $locale, "/no_account.subject.txt"))),
            (concat!($locale, "/no_account.txt"), include_str!(concat!("../../templates/", $locale, "/no_account.txt"))),
            (concat!($locale, "/no_account.html"), include_str!(concat!("../../templates/", $locale, "/no_account.html"))),
            (concat!($locale, "/email_changed.subject.txt"), include_str!(concat!("../../templates/", $locale, "/email_changed.subject.txt"))),
            (concat!($locale, "/email_changed.txt"), include_str!(concat!("../../templates/", $locale, "/email_changed.txt"))),
            (concat!($locale, "/email_changed.html"), include_str!(concat!("../../templates/", $locale, "/email_changed.html"))),
        )*
    ]};
}

const BUILT_IN: &[(&str, &str)] = built_in!("en", "de", "fr");

/// Every template, parsed.
pub struct Templates {
    env: Environment<'static>,
    locales: BTreeSet<String>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("locales", &self.locales)
            .finish_non_exhaustive()
    }
}

impl Templates {
    /// The built-in templates, overridden by `dir` if given. Fails, naming
    /// the file, when a template does not parse or render.
    pub fn load(dir: Option<&Path>) -> anyhow::Result<Self> {
        let mut env = Environment::new();
        // A misspelt variable is an error (caught by the test render below),
        // while `{% if link %}` on an absent one is fine.
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        env.set_keep_trailing_newline(true);
        let mut sources: Vec<(String, String)> = BUILT_IN
            .iter()
            .map(|(n, s)| ((*n).to_owned(), (*s).to_owned()))
            .collect();
        if let Some(dir) = dir {
            let overrides = read_dir_templates(dir)
                .with_context(|| format!("reading templates from {}", dir.display()))?;
            for (name, source) in overrides {
                sources.retain(|(n, _)| *n != name);
                sources.push((name, source));
            }
        }
        let mut locales = BTreeSet::new();
        for (name, source) in sources {
            if let Some((locale, _)) = name.split_once('/')
                && locale != "tenants"
            {
                locales.insert(locale.to_owned());
            }
            env.add_template_owned(name.clone(), source)
                .map_err(|e| anyhow::anyhow!("email template {name}: {e:#}"))?;
        }
        let templates = Self { env, locales };
        templates.check_all()?;
        Ok(templates)
    }

    /// Renders every template that exists with sample values.
    fn check_all(&self) -> anyhow::Result<()> {
        let names: Vec<String> = self
            .env
            .templates()
            .map(|(name, _)| name.to_owned())
            .filter(|n| n != "layout.html")
            .collect();
        for name in names {
            let sample = context! {
                app_name => "Example", email => "someone@example.com", code => "123456",
                new_email => "n***@example.com",
                link => "https://app.example.com/auth?token=lkl_x", minutes => 10, lang => "en",
            };
            self.env
                .get_template(&name)
                .and_then(|t| t.render(&sample))
                .map_err(|e| anyhow::anyhow!("email template {name}: {e:#}"))?;
        }
        for locale in &self.locales {
            for kind in Kind::ALL {
                for part in PARTS {
                    if self.find(None, locale, kind, part).is_none() {
                        bail!(
                            "email templates: no {}.{part} for locale {locale}",
                            kind.name()
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// The locales with templates.
    pub fn locales(&self) -> impl Iterator<Item = &str> {
        self.locales.iter().map(String::as_str)
    }

    /// The template to use: the tenant's own for the locale, the locale's,
    /// then the same for the language (`pt` for `pt-BR`), then English.
    fn find(&self, tenant: Option<&str>, locale: &str, kind: Kind, part: &str) -> Option<String> {
        let language = locale.split('-').next().unwrap_or(locale);
        let file = format!("{}.{part}", kind.name());
        let mut candidates = Vec::new();
        for loc in [locale, language, FALLBACK_LOCALE] {
            if let Some(t) = tenant {
                candidates.push(format!("tenants/{t}/{loc}/{file}"));
            }
            candidates.push(format!("{loc}/{file}"));
        }
        candidates
            .into_iter()
            .find(|name| self.env.get_template(name).is_ok())
    }

    /// The locale an email will be written in: the request's if there are
    /// templates for it or its language, otherwise `fallback`.
    pub fn resolve_locale<'a>(&self, requested: &'a str, fallback: &'a str) -> &'a str {
        let language = requested.split('-').next().unwrap_or(requested);
        if !requested.is_empty()
            && (self.locales.contains(requested) || self.locales.contains(language))
        {
            requested
        } else {
            fallback
        }
    }

    /// Renders one email.
    pub fn render(
        &self,
        tenant: &str,
        locale: &str,
        kind: Kind,
        ctx: minijinja::Value,
    ) -> anyhow::Result<Rendered> {
        let lang = locale.split('-').next().unwrap_or(FALLBACK_LOCALE);
        let ctx = context! { lang => lang, ..ctx };
        let render = |part: &str| -> anyhow::Result<String> {
            let name = self
                .find(Some(tenant), locale, kind, part)
                .ok_or_else(|| anyhow::anyhow!("no template {}.{part}", kind.name()))?;
            Ok(self.env.get_template(&name)?.render(&ctx)?)
        };
        Ok(Rendered {
            subject: render("subject.txt")?.trim().to_owned(),
            text: render("txt")?,
            html: render("html")?,
        })
    }

    /// The sign-in email: a code, a link, or both.
    pub fn sign_in(
        &self,
        tenant: &str,
        locale: &str,
        e: &SignInEmail<'_>,
    ) -> anyhow::Result<Rendered> {
        self.render(
            tenant,
            locale,
            Kind::SignIn,
            context! {
                app_name => e.app_name, email => e.email, code => e.code,
                link => e.link, minutes => e.minutes,
            },
        )
    }

    /// The "no account for this address" notice.
    pub fn no_account(
        &self,
        tenant: &str,
        locale: &str,
        app_name: &str,
        email: &str,
    ) -> anyhow::Result<Rendered> {
        self.render(
            tenant,
            locale,
            Kind::NoAccount,
            context! { app_name, email },
        )
    }
}

impl Templates {
    /// The notice to a user's old address that their sign-in address
    /// changed (`new_email` masked).
    pub fn email_changed(
        &self,
        tenant: &str,
        locale: &str,
        app_name: &str,
        email: &str,
        new_email: &str,
    ) -> anyhow::Result<Rendered> {
        self.render(
            tenant,
            locale,
            Kind::EmailChanged,
            context! { app_name, email, new_email },
        )
    }
}

/// Every template file under `dir`, named by its relative path with `/`.
fn read_dir_templates(dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path
                .strip_prefix(dir)?
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            let known =
                name == "layout.html" || PARTS.iter().any(|p| name.ends_with(&format!(".{p}")));
            if !known {
                continue;
            }
            let source = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            out.push((name, source));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built_in() -> Templates {
        Templates::load(None).unwrap()
    }

    #[test]
    fn every_built_in_template_renders_in_every_locale() {
        let t = built_in();
        assert_eq!(t.locales().collect::<Vec<_>>(), ["de", "en", "fr"]);
    }

    #[test]
    fn the_sign_in_email_shows_what_it_carries() {
        let t = built_in();
        let code = t
            .sign_in(
                "default",
                "en",
                &SignInEmail {
                    app_name: "Acme",
                    email: "a@example.com",
                    code: Some("042917"),
                    link: None,
                    minutes: 10,
                },
            )
            .unwrap();
        assert_eq!(code.subject, "042917 is your Acme sign-in code");
        assert!(code.text.contains("042917") && code.text.contains("10 minutes"));
        assert!(!code.html.contains("href="));
        let link = "https://app.example.com/auth?token=lkl_abc";
        let both = t
            .sign_in(
                "default",
                "en",
                &SignInEmail {
                    app_name: "Acme",
                    email: "a@example.com",
                    code: Some("042917"),
                    link: Some(link),
                    minutes: 10,
                },
            )
            .unwrap();
        assert!(both.text.contains(link) && both.text.contains("042917"));
        // (HTML-escaped: `/` is written `&#x2f;`, which every HTML parser reads back.)
        assert!(
            both.html
                .replace("&#x2f;", "/")
                .contains("href=\"https://app.example.com/auth?token=lkl_abc\"")
        );
        let only_link = t
            .sign_in(
                "default",
                "en",
                &SignInEmail {
                    app_name: "Acme",
                    email: "a@example.com",
                    code: None,
                    link: Some(link),
                    minutes: 10,
                },
            )
            .unwrap();
        assert_eq!(only_link.subject, "Sign in to Acme");
        assert!(!only_link.text.contains("code"));
    }

    #[test]
    fn locales_fall_back_by_language_then_to_english() {
        let t = built_in();
        assert_eq!(t.resolve_locale("de", "en"), "de");
        assert_eq!(t.resolve_locale("de-AT", "en"), "de-AT");
        assert_eq!(t.resolve_locale("sv", "en"), "en");
        assert_eq!(t.resolve_locale("", "fr"), "fr");
        let at = t
            .sign_in(
                "default",
                "de-AT",
                &SignInEmail {
                    app_name: "Acme",
                    email: "a@example.com",
                    code: Some("1"),
                    link: None,
                    minutes: 5,
                },
            )
            .unwrap();
        assert!(at.subject.contains("Anmeldecode"));
        assert!(at.html.contains("lang=\"de\""));
        let fr = t
            .no_account("default", "fr", "Acme", "a@example.com")
            .unwrap();
        assert_eq!(fr.subject, "Tentative de connexion à Acme");
    }

    #[test]
    fn html_escapes_what_it_interpolates_and_loads_nothing_remote() {
        let t = built_in();
        let r = t
            .sign_in(
                "default",
                "en",
                &SignInEmail {
                    app_name: "<b>Acme</b>",
                    email: "a@example.com",
                    code: Some("1"),
                    link: None,
                    minutes: 10,
                },
            )
            .unwrap();
        assert!(r.html.contains("&lt;b&gt;Acme"));
        assert!(!r.html.contains("<b>Acme</b>"));
        for forbidden in ["<img", "src=", "url(", "@import"] {
            assert!(!r.html.contains(forbidden), "{forbidden}");
        }
    }

    #[test]
    fn the_no_account_notice_carries_no_code() {
        let r = built_in()
            .no_account("default", "en", "Acme", "a@example.com")
            .unwrap();
        assert_eq!(r.subject, "Sign-in attempt at Acme");
        assert!(!r.text.chars().any(|c| c.is_ascii_digit()));
    }

    fn dir_with(files: &[(&str, &str)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("latchkey-tpl-{}", uuid::Uuid::now_v7()));
        for (name, source) in files {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, source).unwrap();
        }
        dir
    }

    #[test]
    fn an_override_directory_replaces_files_adds_locales_and_tenants() {
        let dir = dir_with(&[
            (
                "en/sign_in.subject.txt",
                "Your {{ app_name }} code is {{ code }}",
            ),
            (
                "es/sign_in.subject.txt",
                "{{ code }} es tu código de {{ app_name }}",
            ),
            (
                "tenants/shop/en/sign_in.subject.txt",
                "Shop code {{ code }}",
            ),
        ]);
        let t = Templates::load(Some(&dir)).unwrap();
        let subject = |tenant, locale| {
            t.sign_in(
                tenant,
                locale,
                &SignInEmail {
                    app_name: "Acme",
                    email: "a@example.com",
                    code: Some("7"),
                    link: None,
                    minutes: 1,
                },
            )
            .unwrap()
            .subject
        };
        assert_eq!(subject("default", "en"), "Your Acme code is 7");
        assert_eq!(subject("default", "es"), "7 es tu código de Acme");
        assert_eq!(subject("shop", "en"), "Shop code 7");
        assert_eq!(subject("shop", "de"), "7 ist dein Anmeldecode für Acme");
        // (es falls back to English for the parts it does not override.)
        let es = t
            .sign_in(
                "default",
                "es",
                &SignInEmail {
                    app_name: "Acme",
                    email: "a@example.com",
                    code: Some("7"),
                    link: None,
                    minutes: 1,
                },
            )
            .unwrap();
        assert!(es.text.contains("sign-in code"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_broken_override_fails_loading_and_names_the_file() {
        for (file, source) in [
            ("en/sign_in.html", "{% if code %}unclosed"),
            ("en/sign_in.txt", "{{ cod }}"),
            ("layout.html", "{% block content %}"),
        ] {
            let dir = dir_with(&[(file, source)]);
            let err = Templates::load(Some(&dir)).unwrap_err();
            assert!(
                format!("{err:#}").contains(file.rsplit('/').next().unwrap()),
                "{file}: {err:#}"
            );
            std::fs::remove_dir_all(dir).unwrap();
        }
    }
}

//! What `writeback check` says about a configuration beyond its syntax: every secret it names
//! read (each one that cannot be is named, not only the first), and values left from the
//! packaged template (all-zero ids, documentation domains), which would otherwise pass every
//! check and fail only at the first sync.

pub mod online;

use std::path::Path;

use crate::config::{Config, ConfigError};

/// One thing to fix: the key (`ad.bind_dn`, `ad.managed_ous[0]`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`: {}", self.key, self.message)
    }
}

/// The all-zero GUID the template holds for ids.
const ZERO_GUID: &str = "00000000-0000-0000-0000-000000000000";

/// Domains reserved for documentation (RFC 2606): no tenant or forest uses them. `.test`, also
/// reserved, is what test beds use, so it passes.
const DOCUMENTATION_DOMAINS: &[&str] = &["example.com", "example.net", "example.org"];

/// The configuration at `path`, checked as a service start would check it, and more: `Err` when
/// it does not load at all (its syntax, a key, a value), else every finding (an unreadable
/// secret, a placeholder), empty when there is nothing to fix.
pub fn check(path: &Path) -> Result<(Config, Vec<Finding>), ConfigError> {
    let text = crate::config::read_text(path)?;
    let (config, unread) = Config::preflight(path, &text)?;
    let mut out: Vec<Finding> = unread
        .into_iter()
        .map(|e| match e {
            ConfigError::Invalid { key, message, .. } => Finding { key, message },
            other => Finding {
                key: String::new(),
                message: other.to_string(),
            },
        })
        .collect();
    out.extend(placeholders(&text));
    Ok((config, out))
}

/// The values of `text` (a TOML config) left from the template, sorted by key.
pub fn placeholders(text: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Ok(doc) = text.parse::<toml::Table>() {
        walk("", &toml::Value::Table(doc), &mut out);
    }
    out
}

fn walk(key: &str, value: &toml::Value, out: &mut Vec<Finding>) {
    match value {
        toml::Value::String(s) => {
            if let Some(message) = placeholder(s) {
                out.push(Finding {
                    key: key.to_string(),
                    message,
                });
            }
        }
        toml::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                walk(&format!("{key}[{i}]"), v, out);
            }
        }
        toml::Value::Table(t) => {
            for (k, v) in t {
                let k = if key.is_empty() {
                    k.clone()
                } else {
                    format!("{key}.{k}")
                };
                walk(&k, v, out);
            }
        }
        _ => {}
    }
}

/// Why `value` looks like the template's placeholder, if it does.
fn placeholder(value: &str) -> Option<String> {
    if value.trim().eq_ignore_ascii_case(ZERO_GUID) {
        return Some(format!(
            "{value:?} is the template's placeholder: set the id from the app registration (Entra admin center > App registrations > Overview)"
        ));
    }
    let lower = value.to_ascii_lowercase();
    let flat: String = lower.chars().filter(|c| !c.is_whitespace()).collect();
    DOCUMENTATION_DOMAINS.iter().find_map(|d| {
        let (name, tld) = d.split_once('.')?;
        let as_dn = format!("dc={name},dc={tld}");
        let named = flat.contains(&as_dn)
            || lower
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-'))
                .any(|part| part == *d || part.ends_with(&format!(".{d}")));
        named.then(|| {
            format!("{value:?} names {d}, a documentation domain from the template: set your own")
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_values_are_found_by_key() {
        let text = r#"
[graph]
tenant_id = "00000000-0000-0000-0000-000000000000"
client_id = "0b7d9e21-4c6a-4f3b-8e15-a2c4d6e8f001"
[ad]
url = "ldaps://dc1.example.com"
bind_dn = "CN=svc,OU=Service Accounts,DC=Example, DC=COM"
managed_ous = ["OU=Cloud,DC=corp,DC=example,DC=test", "OU=Cloud,DC=example,DC=org"]
[rules.settings]
mail_domain = "contoso.example.net"
note = "examples.community is fine, and so is example.company"
"#;
        let keys: Vec<String> = placeholders(text).into_iter().map(|f| f.key).collect();
        assert_eq!(
            keys,
            [
                "ad.bind_dn",
                "ad.managed_ous[1]",
                "ad.url",
                "graph.tenant_id",
                "rules.settings.mail_domain"
            ]
        );
        let f = placeholders("[graph]\ntenant_id = \"00000000-0000-0000-0000-000000000000\"\n");
        assert!(f[0].to_string().contains("`graph.tenant_id`"), "{}", f[0]);
        assert!(f[0].message.contains("App registrations"), "{}", f[0]);
    }

    #[test]
    fn a_real_configuration_has_nothing_to_say() {
        let text = r#"
[graph]
tenant_id = "5e1f0c2a-6b3d-4a8e-9c71-0d2b4f6a8c10"
[ad]
url = "ldaps://dc1.corp.contoso.com"
managed_ous = ["OU=Cloud,DC=corp,DC=contoso,DC=com"]
"#;
        assert!(placeholders(text).is_empty());
        assert!(placeholders("not toml [").is_empty());
    }
}

//! Browser origins allowed to connect (`--allowed-origins`): exact, or any
//! subdomain of a domain.

use super::Error;

/// An allowed origin: exact (`https://app.example.com`), or any subdomain
/// of a domain (`https://*.example.com`). Compared without regard to case.
#[derive(Debug, Clone)]
pub struct OriginRule {
    /// `https://`; empty in a rule without a scheme, which matches any.
    scheme: String,
    /// The host (and port), or the suffix `.example.com` of a pattern.
    host: String,
    wildcard: bool,
}

impl OriginRule {
    pub fn parse(rule: &str) -> Result<OriginRule, Error> {
        let rule = rule.trim().trim_end_matches('/').to_ascii_lowercase();
        let (scheme, host) = match rule.split_once("://") {
            Some((scheme, host)) => (format!("{scheme}://"), host.to_string()),
            None => (String::new(), rule.clone()),
        };
        let (wildcard, host) = match host.strip_prefix('*') {
            Some(suffix) if suffix.starts_with('.') => (true, suffix.to_string()),
            Some(_) => {
                return Err(Error::Origin {
                    rule,
                    why: "a `*` must be followed by `.`",
                })
            }
            None => (false, host),
        };
        if host.is_empty() || host.contains(['*', '/']) {
            return Err(Error::Origin {
                rule,
                why: "not an origin like https://app.example.com or https://*.example.com",
            });
        }
        Ok(OriginRule { scheme, host, wildcard })
    }

    pub fn matches(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        let (scheme, host) = match origin.split_once("://") {
            Some((scheme, host)) => (format!("{scheme}://"), host),
            None => return false,
        };
        if !self.scheme.is_empty() && scheme != self.scheme {
            return false;
        }
        if self.wildcard {
            host.len() > self.host.len() && host.ends_with(&self.host)
        } else {
            host == self.host
        }
    }
}

//! Where the HTTP embedder may send requests, and when it may send a key. Pure: no PostgreSQL.
//!
//! The worker runs as a superuser and holds the provider's API key (a superuser-only key file, or
//! a Supabase Vault secret). So the host it calls is chosen by a superuser, never by whoever may
//! register an embedder: `quantops.embedding_allowed_hosts` lists the hosts (empty = none), and a
//! key travels only over https, or to a loopback address (a provider on the same machine).

use std::fmt;

/// An embedder's endpoint, as the allowlist sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub https: bool,
    /// lower case; an IPv6 address without its brackets
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressError {
    /// not an http(s) URL with a host, or one with credentials in it
    BadUrl(String),
    /// the host is not in quantops.embedding_allowed_hosts
    NotAllowed { host: String, port: u16 },
    /// a key would be sent in clear text to a host that is not this machine
    KeyInClear { host: String },
    /// a Vault secret outside the ones an embedder may name
    SecretName(String),
}

impl fmt::Display for EgressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EgressError::BadUrl(why) => write!(f, "invalid url: {why}"),
            EgressError::NotAllowed { host, port } => {
                write!(f, "host \"{host}\" (port {port}) is not in quantops.embedding_allowed_hosts")
            }
            EgressError::KeyInClear { host } => {
                write!(f, "an API key is sent only over https (or to a loopback address), not to http://{host}")
            }
            EgressError::SecretName(name) => {
                write!(f, "vault secret \"{name}\" may not be used: an embedder names only secrets whose names start with quantops_")
            }
        }
    }
}

/// Parses an embedder's URL: http or https, a host, no user name or password in it.
pub fn endpoint(url: &str) -> Result<Endpoint, EgressError> {
    let u = url::Url::parse(url).map_err(|e| EgressError::BadUrl(e.to_string()))?;
    let https = match u.scheme() {
        "https" => true,
        "http" => false,
        other => return Err(EgressError::BadUrl(format!("scheme \"{other}\" (http or https)"))),
    };
    if !u.username().is_empty() || u.password().is_some() {
        return Err(EgressError::BadUrl("credentials in the url (name a Vault secret in api_key_secret instead)".into()));
    }
    let host = match u.host() {
        Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        None => return Err(EgressError::BadUrl("no host".into())),
    };
    let port = u.port_or_known_default().unwrap_or(if https { 443 } else { 80 });
    Ok(Endpoint { https, host, port })
}

/// Whether `ep` is on the allowlist: entries separated by commas or spaces, each `host` (any
/// port) or `host:port` (`[v6]:port` for an IPv6 address); case-insensitive; no wildcards.
pub fn allowed(ep: &Endpoint, allowlist: &str) -> bool {
    allowlist.split([',', ' ', '\t', '\n']).map(str::trim).filter(|e| !e.is_empty()).any(|entry| {
        let entry = entry.to_ascii_lowercase();
        let (host, port) = split_entry(&entry);
        host == ep.host && port.is_none_or(|p| p == ep.port)
    })
}

fn split_entry(entry: &str) -> (&str, Option<u16>) {
    if let Some(rest) = entry.strip_prefix('[') {
        // [v6] or [v6]:port
        return match rest.split_once(']') {
            Some((h, tail)) => (h, tail.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (rest, None),
        };
    }
    match entry.rsplit_once(':') {
        // a bare IPv6 address has several colons: then it has no port
        Some((h, p)) if !h.contains(':') => match p.parse() {
            Ok(port) => (h, Some(port)),
            Err(_) => (entry, None),
        },
        _ => (entry, None),
    }
}

/// Whether the host is this machine: `localhost`, 127.0.0.0/8 or ::1.
pub fn is_loopback(host: &str) -> bool {
    if host == "localhost" {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => false,
    }
}

/// The Vault secrets an embedder may name: those whose name starts with `quantops_`. The worker
/// reads the secret as a superuser; a role that may register an embedder must not be able to make
/// it read, and send, any other secret of the database.
pub fn check_secret_name(name: &str) -> Result<(), EgressError> {
    if name.starts_with("quantops_") && name.len() > "quantops_".len() {
        Ok(())
    } else {
        Err(EgressError::SecretName(name.to_string()))
    }
}

/// The check before any request: the host is allowed, and a key goes only over https or to
/// this machine.
pub fn check(url: &str, allowlist: &str, sends_key: bool) -> Result<Endpoint, EgressError> {
    let ep = endpoint(url)?;
    if !allowed(&ep, allowlist) {
        return Err(EgressError::NotAllowed { host: ep.host, port: ep.port });
    }
    if sends_key && !ep.https && !is_loopback(&ep.host) {
        return Err(EgressError::KeyInClear { host: ep.host });
    }
    Ok(ep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = endpoint("https://API.OpenAI.com/v1/embeddings").unwrap();
        assert_eq!(e, Endpoint { https: true, host: "api.openai.com".into(), port: 443 });
        let e = endpoint("http://127.0.0.1:8089/v1/embeddings").unwrap();
        assert_eq!(e, Endpoint { https: false, host: "127.0.0.1".into(), port: 8089 });
        let e = endpoint("http://[::1]:9/x").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 9));
        assert!(matches!(endpoint("ftp://x/y"), Err(EgressError::BadUrl(_))));
        assert!(matches!(endpoint("https://user:pw@api.example.com/v1"), Err(EgressError::BadUrl(_))));
        assert!(matches!(endpoint("not a url"), Err(EgressError::BadUrl(_))));
    }

    #[test]
    fn the_allowlist_decides() {
        let api = endpoint("https://api.openai.com/v1/embeddings").unwrap();
        let local = endpoint("http://127.0.0.1:8089/v1/embeddings").unwrap();
        let meta = endpoint("http://169.254.169.254/latest/meta-data").unwrap();
        assert!(!allowed(&api, ""), "empty = none");
        assert!(allowed(&api, "api.openai.com"));
        assert!(allowed(&api, " 127.0.0.1:8089, API.OPENAI.COM:443 "));
        assert!(!allowed(&api, "api.openai.com:8443"));
        assert!(!allowed(&api, "openai.com"), "no suffix matching");
        assert!(!allowed(&api, "*.openai.com"), "no wildcards");
        assert!(allowed(&local, "127.0.0.1:8089"));
        assert!(!allowed(&local, "127.0.0.1:8090"));
        assert!(allowed(&local, "127.0.0.1"));
        assert!(!allowed(&meta, "127.0.0.1 api.openai.com"));
        let v6 = endpoint("http://[::1]:9/x").unwrap();
        assert!(allowed(&v6, "[::1]:9"));
        assert!(allowed(&v6, "::1"));
        assert!(!allowed(&v6, "[::1]:10"));
    }

    #[test]
    fn keys_travel_only_over_https_or_loopback() {
        assert!(check("https://api.openai.com/v1/embeddings", "api.openai.com", true).is_ok());
        assert!(check("http://127.0.0.1:8089/v1", "127.0.0.1", true).is_ok());
        assert!(check("http://localhost:8089/v1", "localhost", true).is_ok());
        assert_eq!(
            check("http://embed.internal:80/v1", "embed.internal", true),
            Err(EgressError::KeyInClear { host: "embed.internal".into() })
        );
        assert!(check("http://embed.internal:80/v1", "embed.internal", false).is_ok(), "no key, plain http is the operator's choice");
        assert!(matches!(check("https://evil.example/v1", "api.openai.com", false), Err(EgressError::NotAllowed { .. })));
        assert!(is_loopback("127.8.9.10") && is_loopback("::1") && !is_loopback("10.0.0.1") && !is_loopback("localhost.evil.example"));
    }

    #[test]
    fn only_quantops_secrets() {
        assert!(check_secret_name("quantops_openai").is_ok());
        for bad in ["openai", "stripe_live", "quantops_", "QUANTOPS_x", "xquantops_y"] {
            assert!(matches!(check_secret_name(bad), Err(EgressError::SecretName(_))), "{bad}");
        }
    }
}

//! SemVer 2.0 parsing and precedence for the `semver_*` operators.

use std::cmp::Ordering;

// ---------------------------------------------------------------------------------------------
// semver

/// A SemVer 2.0 version; `pre` is the pre-release (empty for a release); build metadata is
/// checked and dropped, as precedence ignores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Semver<'a> {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    pub pre: &'a str,
}

pub(crate) fn numeric_identifier(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

pub(crate) fn valid_identifiers(s: &str, pre_release: bool) -> bool {
    !s.is_empty()
        && s.split('.').all(|id| {
            !id.is_empty()
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !(pre_release && id.len() > 1 && id.starts_with('0') && id.bytes().all(|b| b.is_ascii_digit()))
        })
}

impl<'a> Semver<'a> {
    /// Strict SemVer 2.0: `MAJOR.MINOR.PATCH[-pre][+build]`, no leading `v`, no leading zeros.
    pub fn parse(s: &'a str) -> Option<Semver<'a>> {
        let without_build = match s.find('+') {
            Some(i) => {
                if !valid_identifiers(&s[i + 1..], false) {
                    return None;
                }
                &s[..i]
            }
            None => s,
        };
        let (core, pre) = match without_build.find('-') {
            Some(i) => {
                let pre = &without_build[i + 1..];
                if !valid_identifiers(pre, true) {
                    return None;
                }
                (&without_build[..i], pre)
            }
            None => (without_build, ""),
        };
        let mut parts = core.split('.');
        let major = numeric_identifier(parts.next()?)?;
        let minor = numeric_identifier(parts.next()?)?;
        let patch = numeric_identifier(parts.next()?)?;
        if parts.next().is_some() {
            return None;
        }
        Some(Semver { major, minor, patch, pre })
    }

    /// SemVer 2.0 precedence (section 11).
    pub fn precedence(&self, other: &Semver<'_>) -> Ordering {
        (self.major, self.minor, self.patch).cmp(&(other.major, other.minor, other.patch)).then_with(|| {
            match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => {
                    let mut a = self.pre.split('.');
                    let mut b = other.pre.split('.');
                    loop {
                        match (a.next(), b.next()) {
                            (None, None) => return Ordering::Equal,
                            (None, Some(_)) => return Ordering::Less,
                            (Some(_), None) => return Ordering::Greater,
                            (Some(x), Some(y)) => {
                                let o = compare_identifier(x, y);
                                if o != Ordering::Equal {
                                    return o;
                                }
                            }
                        }
                    }
                }
            }
        })
    }
}

pub(crate) fn compare_identifier(x: &str, y: &str) -> Ordering {
    let xn = x.bytes().all(|b| b.is_ascii_digit());
    let yn = y.bytes().all(|b| b.is_ascii_digit());
    match (xn, yn) {
        // no leading zeros, so the longer number is the larger
        (true, true) => x.len().cmp(&y.len()).then_with(|| x.cmp(y)),
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => x.cmp(y),
    }
}

/// A parsed version that owns its pre-release.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OwnedSemver {
    pub(crate) major: u64,
    pub(crate) minor: u64,
    pub(crate) patch: u64,
    pub(crate) pre: String,
}

impl OwnedSemver {
    pub(crate) fn view(&self) -> Semver<'_> {
        Semver { major: self.major, minor: self.minor, patch: self.patch, pre: &self.pre }
    }
}

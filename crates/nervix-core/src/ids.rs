use std::fmt;

use serde::{Deserialize, Serialize};

use crate::FieldError;

/// An agent's public handle (`agent_id` on the wire): 3–64 chars of `[a-z0-9._-]`,
/// starting with a letter or digit. Valid by construction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct AgentHandle(String);

impl AgentHandle {
    pub const MIN_LEN: usize = 3;
    pub const MAX_LEN: usize = 64;

    pub fn parse(s: &str) -> Result<Self, FieldError> {
        let err = |m: &str| FieldError::new("agent_id", m);
        if s.len() < Self::MIN_LEN || s.len() > Self::MAX_LEN {
            return Err(err("must be 3 to 64 characters long"));
        }
        let mut chars = s.chars();
        if !chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            return Err(err("must start with a lowercase letter or a digit"));
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
        {
            return Err(err("may only contain a-z, 0-9, '.', '_' and '-'"));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl fmt::Display for AgentHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for AgentHandle {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        AgentHandle::parse(&s).map_err(|e| serde::de::Error::custom(e.message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn handles() {
        for ok in ["abc", "alpha-coder", "a.b_c-d", "9lives", &"a".repeat(64)] {
            assert!(AgentHandle::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "ab",
            "-abc",
            ".abc",
            "_abc",
            "Abc",
            "a b c",
            "héllo",
            &"a".repeat(65),
            "abc/",
            "abc\n",
        ] {
            assert!(AgentHandle::parse(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn valid_handles_roundtrip(s in "[a-z0-9][a-z0-9._-]{2,63}") {
            let h = AgentHandle::parse(&s).unwrap();
            prop_assert_eq!(h.as_str(), s.as_str());
        }

        #[test]
        fn parse_never_panics(s in ".*") {
            let _ = AgentHandle::parse(&s);
        }
    }
}

//! User names: the one type every entry point parses a user into.
//!
//! A user name becomes an element of Igor's tree (`identities/<user>`,
//! `sensors/<plugin>/<user>`), so it must be a name Igor writes as itself: an ASCII
//! letter or `_` first, then letters, digits, `-`, `_` and `.`, not Igor's escape
//! element `_e`, and at most [`MAX_LEN`] bytes. That excludes `/` (a path separator),
//! `..`, NUL and every other character that would change which element is meant.
//! Command-line arguments, HTTP parameters and names read back from the store all go
//! through [`UserName::parse`]; tree paths take a `&UserName`, never a plain string.

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

/// The longest user name accepted, in bytes.
pub const MAX_LEN: usize = 64;

/// A checked user name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserName(String);

/// Why a text is not a user name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserNameError {
    /// Nothing given.
    #[error("the user name is empty")]
    Empty,
    /// Longer than [`MAX_LEN`].
    #[error("the user name is {0} bytes long; at most {MAX_LEN} are allowed")]
    TooLong(usize),
    /// Igor's own escape element.
    #[error("`_e` is reserved by Igor and cannot be a user name")]
    Reserved,
    /// Starts with something other than a letter or `_`.
    #[error("a user name starts with an ASCII letter or `_`, not {0:?}")]
    BadStart(char),
    /// Holds a character outside the allowed set.
    #[error("a user name holds only ASCII letters, digits, `-`, `_` and `.`; {0:?} is not allowed")]
    BadChar(char),
}

impl UserName {
    /// Checks `text` as a user name.
    pub fn parse(text: &str) -> Result<UserName, UserNameError> {
        let mut chars = text.chars();
        let first = chars.next().ok_or(UserNameError::Empty)?;
        if text.len() > MAX_LEN {
            return Err(UserNameError::TooLong(text.len()));
        }
        if !(first.is_ascii_alphabetic() || first == '_') {
            return Err(UserNameError::BadStart(first));
        }
        if let Some(bad) =
            chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(UserNameError::BadChar(bad));
        }
        if text == "_e" {
            return Err(UserNameError::Reserved);
        }
        Ok(UserName(text.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for UserName {
    type Err = UserNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UserName::parse(s)
    }
}

impl Deref for UserName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for UserName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn igor_element_names_are_user_names() {
        for ok in ["jack", "_x", "Jack.Smith-2", "a", &"a".repeat(MAX_LEN)] {
            assert_eq!(UserName::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn path_like_and_unrepresentable_names_are_refused() {
        let cases: [(&str, UserNameError); 9] = [
            ("", UserNameError::Empty),
            ("jack/body-weight", UserNameError::BadChar('/')),
            ("../x", UserNameError::BadStart('.')),
            ("1abc", UserNameError::BadStart('1')),
            ("ja\0ck", UserNameError::BadChar('\0')),
            ("jäck", UserNameError::BadChar('ä')),
            ("a b", UserNameError::BadChar(' ')),
            ("_e", UserNameError::Reserved),
            (
                &"a".repeat(MAX_LEN + 1),
                UserNameError::TooLong(MAX_LEN + 1),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(UserName::parse(text), Err(want), "{text:?}");
        }
    }
}

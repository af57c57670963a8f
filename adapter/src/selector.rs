//! Kubernetes label selectors, as sent in `?labelSelector=`: the full grammar of
//! `k8s.io/apimachinery/pkg/labels.Parse`.
//!
//! ```text
//! selector    = [ requirement { "," requirement } ]
//! requirement = key ( "=" | "==" | "!=" ) value
//!             | key ( "in" | "notin" ) "(" value { "," value } ")"
//!             | key ( ">" | "<" ) integer
//!             | key                      (exists)
//!             | "!" key                  (does not exist)
//! ```
//!
//! Keys and values are checked as Kubernetes checks label keys and values, so a selector that
//! kube-apiserver would reject is rejected here with the same kind of message.

use std::collections::BTreeSet;

/// Why a selector did not parse. Each message names the offending token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The selector does not follow the grammar.
    #[error("unable to parse requirement: found {found:?}, expected {expected} (at byte {position})")]
    Syntax {
        /// What was found instead (empty at the end of input).
        found: String,
        /// What the grammar allows at that point.
        expected: &'static str,
        /// Byte offset in the selector.
        position: usize,
    },
    /// A key is not a valid label key.
    #[error("invalid label key {key:?}: {reason}")]
    Key {
        /// The key as written.
        key: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// A value is not a valid label value.
    #[error("invalid label value {value:?}: {reason}")]
    Value {
        /// The value as written.
        value: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// The operand of `>` or `<` is not an integer.
    #[error("for 'gt', 'lt' operators, the value must be an integer, found {value:?}")]
    NotInteger {
        /// The value as written.
        value: String,
    },
}

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value` or `key==value`.
    Equals(String, String),
    /// `key!=value` (also true when the label is absent).
    NotEquals(String, String),
    /// `key in (a,b)`.
    In(String, BTreeSet<String>),
    /// `key notin (a,b)` (also true when the label is absent).
    NotIn(String, BTreeSet<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    DoesNotExist(String),
    /// `key>n`.
    GreaterThan(String, i64),
    /// `key<n`.
    LessThan(String, i64),
}

impl Requirement {
    fn matches<'a>(&self, get: &impl Fn(&str) -> Option<&'a str>) -> bool {
        let int = |k: &str| get(k).and_then(|v| v.parse::<i64>().ok());
        match self {
            Self::Equals(k, v) => get(k) == Some(v.as_str()),
            Self::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Self::In(k, vs) => get(k).is_some_and(|v| vs.contains(v)),
            Self::NotIn(k, vs) => get(k).is_none_or(|v| !vs.contains(v)),
            Self::Exists(k) => get(k).is_some(),
            Self::DoesNotExist(k) => get(k).is_none(),
            Self::GreaterThan(k, n) => int(k).is_some_and(|v| v > *n),
            Self::LessThan(k, n) => int(k).is_some_and(|v| v < *n),
        }
    }
}

/// A parsed selector: all requirements must hold. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector(Vec<Requirement>);

impl Selector {
    /// Parses `input` with the Kubernetes grammar.
    pub fn parse(input: &str) -> Result<Self, Error> {
        Parser { lexer: Lexer::new(input) }.selector().map(Self)
    }

    /// The requirements, in the order written.
    pub fn requirements(&self) -> &[Requirement] {
        &self.0
    }

    /// Whether labels given by `get` (label key -> value) satisfy every requirement.
    pub fn matches<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.0.iter().all(|r| r.matches(&get))
    }
}

impl std::str::FromStr for Selector {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token<'a> {
    Ident(&'a str),
    Not,
    Equals,
    DoubleEquals,
    NotEquals,
    Comma,
    Open,
    Close,
    Greater,
    Less,
    In,
    NotIn,
    End,
}

#[derive(Debug)]
struct Lexer<'a> {
    input: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn new(input: &'a str) -> Self {
        Self { input, pos: 0 }
    }

    fn is_special(c: char) -> bool {
        matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
    }

    /// The next token and the byte offset where it starts.
    fn next(&mut self) -> (Token<'a>, usize) {
        let rest = &self.input[self.pos..];
        let trimmed = rest.trim_start();
        self.pos += rest.len() - trimmed.len();
        let start = self.pos;
        let Some(c) = trimmed.chars().next() else { return (Token::End, start) };
        if Self::is_special(c) {
            let two = trimmed.get(..2);
            let (tok, len) = match (c, two) {
                (_, Some("==")) => (Token::DoubleEquals, 2),
                (_, Some("!=")) => (Token::NotEquals, 2),
                ('=', _) => (Token::Equals, 1),
                ('!', _) => (Token::Not, 1),
                ('(', _) => (Token::Open, 1),
                (')', _) => (Token::Close, 1),
                (',', _) => (Token::Comma, 1),
                ('>', _) => (Token::Greater, 1),
                _ => (Token::Less, 1),
            };
            self.pos += len;
            return (tok, start);
        }
        let len = trimmed.find(|c: char| c.is_whitespace() || Self::is_special(c)).unwrap_or(trimmed.len());
        self.pos += len;
        let word = &trimmed[..len];
        let tok = match word {
            "in" => Token::In,
            "notin" => Token::NotIn,
            _ => Token::Ident(word),
        };
        (tok, start)
    }

    fn peek(&self) -> Token<'a> {
        Lexer { input: self.input, pos: self.pos }.next().0
    }
}

#[derive(Debug)]
struct Parser<'a> {
    lexer: Lexer<'a>,
}

fn syntax(found: &Token<'_>, expected: &'static str, position: usize) -> Error {
    let found = match found {
        Token::Ident(s) => (*s).to_owned(),
        Token::Not => "!".into(),
        Token::Equals => "=".into(),
        Token::DoubleEquals => "==".into(),
        Token::NotEquals => "!=".into(),
        Token::Comma => ",".into(),
        Token::Open => "(".into(),
        Token::Close => ")".into(),
        Token::Greater => ">".into(),
        Token::Less => "<".into(),
        Token::In => "in".into(),
        Token::NotIn => "notin".into(),
        Token::End => String::new(),
    };
    Error::Syntax { found, expected, position }
}

impl Parser<'_> {
    fn selector(&mut self) -> Result<Vec<Requirement>, Error> {
        let mut out = Vec::new();
        if self.lexer.peek() == Token::End {
            return Ok(out);
        }
        loop {
            out.push(self.requirement()?);
            match self.lexer.next() {
                (Token::End, _) => return Ok(out),
                (Token::Comma, _) => {}
                (t, p) => return Err(syntax(&t, "',' or end of selector", p)),
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, Error> {
        let (tok, pos) = self.lexer.next();
        let (negated, key) = match tok {
            Token::Not => match self.lexer.next() {
                (Token::Ident(k), _) => (true, k),
                (t, p) => return Err(syntax(&t, "a label key after '!'", p)),
            },
            Token::Ident(k) => (false, k),
            t => return Err(syntax(&t, "a label key or '!'", pos)),
        };
        let key = validate_key(key)?;
        if negated {
            return Ok(Requirement::DoesNotExist(key));
        }
        match self.lexer.peek() {
            Token::End | Token::Comma => return Ok(Requirement::Exists(key)),
            _ => {}
        }
        let (op, pos) = self.lexer.next();
        match op {
            Token::Equals | Token::DoubleEquals => Ok(Requirement::Equals(key, self.single_value()?)),
            Token::NotEquals => Ok(Requirement::NotEquals(key, self.single_value()?)),
            Token::In => Ok(Requirement::In(key, self.set()?)),
            Token::NotIn => Ok(Requirement::NotIn(key, self.set()?)),
            Token::Greater => Ok(Requirement::GreaterThan(key, self.integer()?)),
            Token::Less => Ok(Requirement::LessThan(key, self.integer()?)),
            t => Err(syntax(&t, "'=', '==', '!=', 'in', 'notin', '>' or '<'", pos)),
        }
    }

    /// A value after `=`, `==` or `!=`; it may be empty (`app=`).
    fn single_value(&mut self) -> Result<String, Error> {
        match self.lexer.peek() {
            Token::End | Token::Comma => Ok(String::new()),
            _ => match self.lexer.next() {
                (Token::Ident(v), _) => validate_value(v),
                // Keywords are fine as values (`tier=in`).
                (Token::In, _) => Ok("in".into()),
                (Token::NotIn, _) => Ok("notin".into()),
                (t, p) => Err(syntax(&t, "a label value", p)),
            },
        }
    }

    fn set(&mut self) -> Result<BTreeSet<String>, Error> {
        match self.lexer.next() {
            (Token::Open, _) => {}
            (t, p) => return Err(syntax(&t, "'(' after 'in' or 'notin'", p)),
        }
        let mut values = BTreeSet::new();
        loop {
            let value = match self.lexer.peek() {
                Token::Comma | Token::Close => String::new(),
                _ => match self.lexer.next() {
                    (Token::Ident(v), _) => validate_value(v)?,
                    (Token::In, _) => "in".into(),
                    (Token::NotIn, _) => "notin".into(),
                    (t, p) => return Err(syntax(&t, "a label value in the set", p)),
                },
            };
            values.insert(value);
            match self.lexer.next() {
                (Token::Comma, _) => {}
                (Token::Close, _) => return Ok(values),
                (t, p) => return Err(syntax(&t, "',' or ')' in the set", p)),
            }
        }
    }

    fn integer(&mut self) -> Result<i64, Error> {
        match self.lexer.next() {
            (Token::Ident(v), _) => v.parse().map_err(|_| Error::NotInteger { value: v.into() }),
            (t, p) => Err(syntax(&t, "an integer", p)),
        }
    }
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63 characters.
fn is_qualified_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A DNS-1123 subdomain: lower-case labels separated by dots, at most 253 characters.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

fn validate_key(key: &str) -> Result<String, Error> {
    let err = |reason| Error::Key { key: key.into(), reason };
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            if !is_dns_subdomain(prefix) {
                return Err(err("the prefix must be a DNS-1123 subdomain"));
            }
            name
        }
        None => key,
    };
    if !is_qualified_name(name) {
        return Err(err("the name must be at most 63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric"));
    }
    Ok(key.into())
}

fn validate_value(value: &str) -> Result<String, Error> {
    if value.is_empty() || is_qualified_name(value) {
        Ok(value.into())
    } else {
        Err(Error::Value {
            value: value.into(),
            reason: "must be empty or at most 63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |k| pairs.iter().find(|(key, _)| *key == k).map(|(_, v)| *v)
    }

    fn matches(selector: &str, pairs: &[(&str, &str)]) -> bool {
        Selector::parse(selector).unwrap().matches(labels(pairs))
    }

    const FRONT: &[(&str, &str)] = &[("app", "shop"), ("service", "frontend")];

    #[test]
    fn empty_matches_everything() {
        assert!(Selector::parse("").unwrap().requirements().is_empty());
        assert!(matches("  ", FRONT));
    }

    #[test]
    fn equality_operators() {
        assert!(matches("app=shop", FRONT));
        assert!(matches("app == shop", FRONT));
        assert!(!matches("app=other", FRONT));
        assert!(matches("app!=other", FRONT));
        assert!(!matches("app!=shop", FRONT));
        // `!=` holds when the label is absent.
        assert!(matches("tier!=web", FRONT));
        assert!(matches("app=shop,service=frontend", FRONT));
        assert!(!matches("app=shop,service=cart", FRONT));
    }

    #[test]
    fn set_operators() {
        assert!(matches("service in (cart, frontend)", FRONT));
        assert!(!matches("service in (cart)", FRONT));
        assert!(matches("service notin (cart,payment)", FRONT));
        assert!(!matches("service notin (frontend)", FRONT));
        // `notin` holds when the label is absent.
        assert!(matches("tier notin (web)", FRONT));
        assert!(!matches("tier in (web)", FRONT));
    }

    #[test]
    fn existence_operators() {
        assert!(matches("app", FRONT));
        assert!(!matches("tier", FRONT));
        assert!(matches("!tier", FRONT));
        assert!(!matches("!app", FRONT));
        assert!(matches("app,!tier,service", FRONT));
    }

    #[test]
    fn numeric_operators() {
        let pods = &[("replicas", "5")];
        assert!(matches("replicas>4", pods));
        assert!(!matches("replicas>5", pods));
        assert!(matches("replicas<6", pods));
        assert!(!matches("app<6", FRONT));
    }

    #[test]
    fn prefixed_keys_and_empty_values() {
        let sel = Selector::parse("app.kubernetes.io/name=shop,tier=").unwrap();
        assert_eq!(
            sel.requirements(),
            &[
                Requirement::Equals("app.kubernetes.io/name".into(), "shop".into()),
                Requirement::Equals("tier".into(), "".into())
            ]
        );
    }

    #[test]
    fn rejects_malformed_selectors_naming_the_problem() {
        let cases = [
            ("app=shop,", "expected a label key"),
            ("app in shop", "expected '(' after 'in'"),
            ("app in (a b)", "expected ',' or ')'"),
            ("app shop", "expected '=', '==', '!=', 'in', 'notin', '>' or '<'"),
            ("=shop", "expected a label key or '!'"),
            ("-app=x", "invalid label key \"-app\""),
            ("Bad_Prefix/app=x", "the prefix must be a DNS-1123 subdomain"),
            ("app=sh@p", "invalid label value \"sh@p\""),
            ("replicas>five", "must be an integer"),
            ("app in (a", "expected ',' or ')'"),
        ];
        for (input, want) in cases {
            let err = Selector::parse(input).expect_err(input).to_string();
            assert!(err.contains(want), "{input:?}: {err:?} does not contain {want:?}");
        }
    }
}

//! Where a key of a TOML file is written, for errors that name the key and its line,
//! and serde's messages in words. Shared by the experiment-config loader and the suite
//! loader ([`crate::suite`]).
//!
//! Keys are dotted, with array indices: `agent.width`, `env[1].set.train.lr`.

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue, Deserializer};
use toml::Spanned;

/// A parsed TOML document with its text, to say where its keys are written.
pub(crate) struct Document<'a> {
    text: &'a str,
    root: Spanned<DeTable<'a>>,
}

/// A TOML syntax error.
pub(crate) struct Syntax {
    /// 1-based line of the error.
    pub line: usize,
    /// 1-based column (in characters) of the error.
    pub column: usize,
    /// What the parser expected and found.
    pub message: String,
}

impl Syntax {
    /// The error `e` of the TOML reader on `text`.
    pub fn new(text: &str, e: &toml::de::Error) -> Self {
        let (line, column) = e.span().map_or((1, 1), |s| line_column(text, s.start));
        Self {
            line,
            column,
            message: e.message().trim().to_string(),
        }
    }
}

impl<'a> Document<'a> {
    /// Parses `text`. (An integer too large for TOML is an error only when it is read.)
    pub fn parse(text: &'a str) -> Result<Self, Syntax> {
        let root = DeTable::parse(text).map_err(|e| Syntax::new(text, &e))?;
        Ok(Self { text, root })
    }

    /// The document read as a `T`; an error carries the span of the key or value at
    /// fault (see [`Document::key_at`]).
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, toml::de::Error> {
        T::deserialize(Deserializer::from(self.root.clone()))
    }

    /// The 1-based line of byte offset `at`.
    pub fn line(&self, at: usize) -> usize {
        line_column(self.text, at).0
    }

    /// The 1-based line where the key `dotted` (an index: where that array element)
    /// is written, if it is.
    pub fn line_of(&self, dotted: &str) -> Option<usize> {
        let mut table = Some(self.root.get_ref());
        let mut start = None;
        for part in dotted.split('.') {
            let mut indices = part.split('[');
            let name = indices.next()?;
            let (key, mut value) = table?.iter().find(|(k, _)| k.get_ref() == name)?;
            start = Some(key.span().start);
            for index in indices {
                let i: usize = index.strip_suffix(']')?.parse().ok()?;
                value = value.get_ref().as_array()?.get(i)?;
                start = Some(value.span().start);
            }
            table = value.get_ref().as_table();
        }
        start.map(|s| self.line(s))
    }

    /// The dotted key of the innermost key, value or array element written at byte
    /// offset `at` (e.g. `suite.seeds[1]`); empty if none is.
    pub fn key_at(&self, at: usize) -> String {
        let mut key = String::new();
        table_holds(self.root.get_ref(), at, &mut key);
        key
    }
}

/// Whether a key of `table` (or its value) is written at `at`; if so, `path` is
/// extended to it. The key comes first: the first element of an array of tables
/// (`[[env]]`) spans its key.
fn table_holds(table: &DeTable<'_>, at: usize, path: &mut String) -> bool {
    for (key, value) in table.iter() {
        let len = path.len();
        if len > 0 {
            path.push('.');
        }
        path.push_str(key.get_ref());
        if key.span().contains(&at) || value_holds(value, at, path) {
            return true;
        }
        path.truncate(len);
    }
    false
}

/// Whether `value` is written at `at`; if so, `path` is extended to the key or array
/// element inside it that is.
fn value_holds(value: &Spanned<DeValue<'_>>, at: usize, path: &mut String) -> bool {
    let inside = match value.get_ref() {
        DeValue::Table(table) => table_holds(table, at, path),
        DeValue::Array(items) => items.iter().enumerate().any(|(i, item)| {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            let holds = value_holds(item, at, path);
            if !holds {
                path.truncate(len);
            }
            holds
        }),
        _ => false,
    };
    inside || value.span().contains(&at)
}

/// 1-based line and column (in characters) of byte offset `at` in `text`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The unknown key and the valid ones of serde's "unknown field `x`, expected one of
/// `a`, `b`", if `message` is one.
pub(crate) fn unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.trim().strip_prefix("unknown field ")?;
    let mut names: Vec<String> = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    if names.is_empty() {
        return None;
    }
    let key = names.remove(0);
    Some((key, names))
}

/// serde's type names at the end of `message` in words.
pub(crate) fn friendly(message: &str) -> String {
    const WORDS: [(&str, &str); 5] = [
        ("expected usize", "expected an integer >= 0"),
        ("expected u64", "expected an integer >= 0"),
        ("expected f64", "expected a number"),
        ("expected a sequence", "expected an array"),
        ("expected a map", "expected a table of keys"),
    ];
    let mut out = message.trim().to_string();
    for (from, to) in WORDS {
        if out.ends_with(from) {
            out = format!("{}{to}", &out[..out.len() - from.len()]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "seed = 1\n[suite]\nseeds = [0, \"one\"]\n\n[[env]]\nid = \"a\"\n\n[[env]]\nid = \"b\"\nset.train.lr = 1e-3\n";

    #[test]
    fn keys_are_found_by_name_and_by_position() {
        let doc = Document::parse(TEXT).ok().unwrap();
        assert_eq!(doc.line_of("seed"), Some(1));
        assert_eq!(doc.line_of("suite.seeds"), Some(3));
        assert_eq!(doc.line_of("env[1]"), Some(8));
        assert_eq!(doc.line_of("env[1].set.train.lr"), Some(10));
        assert_eq!(doc.line_of("env[2]"), None);
        assert_eq!(doc.line_of("suite.tiers"), None);
        assert_eq!(doc.line_of(""), None);
        let at = |s: &str| TEXT.find(s).unwrap();
        assert_eq!(doc.key_at(at("\"one\"")), "suite.seeds[1]");
        assert_eq!(doc.key_at(at("[0,")), "suite.seeds");
        assert_eq!(doc.key_at(at("lr")), "env[1].set.train.lr");
        assert_eq!(doc.key_at(at("\"b\"")), "env[1].id");
        assert_eq!(doc.key_at(at("env")), "env");
        assert_eq!(doc.key_at(TEXT.len()), "");
        assert_eq!(doc.line(at("lr")), 10);
    }
}

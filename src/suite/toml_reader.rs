//! Typed reading of a suite file's TOML table: every error names the file, the full
//! key (with its line when known), what was expected and what was found.

use toml::{Table, Value};

use super::error::SuiteError;

/// One segment of a key path: a table key or an array index.
#[derive(Clone, Debug, PartialEq)]
pub enum Segment {
    /// A key of a table.
    Key(String),
    /// An element of an array (of tables).
    Index(usize),
}

/// A key path with the text it was read from, for errors.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    text: &'a str,
    origin: &'a str,
}

impl<'a> Reader<'a> {
    /// A reader of values parsed from `text`, named `origin` in errors.
    pub fn new(text: &'a str, origin: &'a str) -> Self {
        Self { text, origin }
    }

    /// The error of the value at `path`.
    pub fn error(&self, path: &[Segment], message: impl Into<String>) -> SuiteError {
        SuiteError::Key {
            origin: self.origin.to_string(),
            key: dotted(path),
            line: line_of(self.text, path),
            message: message.into(),
        }
    }

    /// Rejects keys of `table` (at `path`) that are not in `known`.
    pub fn only_keys(
        &self,
        table: &Table,
        path: &[Segment],
        known: &[&str],
    ) -> Result<(), SuiteError> {
        for key in table.keys() {
            if !known.contains(&key.as_str()) {
                let where_ = if path.is_empty() {
                    "at the top level".to_string()
                } else {
                    format!("in `{}`", dotted(path))
                };
                return Err(self.error(
                    &join(path, key),
                    format!("unknown key; valid keys {where_}: {}", known.join(", ")),
                ));
            }
        }
        Ok(())
    }

    /// The table at `path` + `key`, or an empty one when absent.
    pub fn table(&self, parent: &Table, path: &[Segment], key: &str) -> Result<Table, SuiteError> {
        match parent.get(key) {
            None => Ok(Table::new()),
            Some(Value::Table(t)) => Ok(t.clone()),
            Some(other) => Err(self.error(
                &join(path, key),
                format!("expected a table of keys, found {}", kind(other)),
            )),
        }
    }

    /// The array of tables at `path` + `key` (e.g. `[[env]]` sections).
    pub fn tables(
        &self,
        parent: &Table,
        path: &[Segment],
        key: &str,
    ) -> Result<Vec<Table>, SuiteError> {
        let at = join(path, key);
        match parent.get(key) {
            None => Err(self.error(&at, format!("required: one or more `[[{key}]]` sections"))),
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::Table(t) => Ok(t.clone()),
                    other => Err(self.error(
                        &index(&at, i),
                        format!("expected a table, found {}", kind(other)),
                    )),
                })
                .collect(),
            Some(other) => Err(self.error(
                &at,
                format!(
                    "expected one or more `[[{key}]]` sections, found {}",
                    kind(other)
                ),
            )),
        }
    }

    /// An optional string.
    pub fn string(
        &self,
        t: &Table,
        path: &[Segment],
        key: &str,
    ) -> Result<Option<String>, SuiteError> {
        match t.get(key) {
            None => Ok(None),
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
            Some(other) => Err(self.error(
                &join(path, key),
                format!("expected a non-empty string, found {}", kind(other)),
            )),
        }
    }

    /// An optional integer >= `min`.
    pub fn integer(
        &self,
        t: &Table,
        path: &[Segment],
        key: &str,
        min: i64,
    ) -> Result<Option<u64>, SuiteError> {
        match t.get(key) {
            None => Ok(None),
            Some(Value::Integer(i)) if *i >= min => Ok(Some(*i as u64)),
            Some(other) => Err(self.error(
                &join(path, key),
                format!("expected an integer >= {min}, found {}", kind(other)),
            )),
        }
    }

    /// An optional non-empty array of integers >= 0, without repeats.
    pub fn integers(
        &self,
        t: &Table,
        path: &[Segment],
        key: &str,
    ) -> Result<Option<Vec<u64>>, SuiteError> {
        let Some(items) = self.array(t, path, key, "integers >= 0")? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        for (i, v) in items.iter().enumerate() {
            match v {
                Value::Integer(x) if *x >= 0 && !out.contains(&(*x as u64)) => out.push(*x as u64),
                Value::Integer(x) if *x >= 0 => {
                    return Err(self.error(&join(path, key), format!("{x} is listed twice")))
                }
                other => {
                    return Err(self.error(
                        &index(&join(path, key), i),
                        format!("expected an integer >= 0, found {}", kind(other)),
                    ))
                }
            }
        }
        Ok(Some(out))
    }

    /// An optional non-empty array of finite numbers (integers are accepted).
    pub fn numbers(
        &self,
        t: &Table,
        path: &[Segment],
        key: &str,
    ) -> Result<Option<Vec<f64>>, SuiteError> {
        let Some(items) = self.array(t, path, key, "numbers")? else {
            return Ok(None);
        };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Integer(x) => Ok(*x as f64),
                Value::Float(x) if x.is_finite() => Ok(*x),
                other => Err(self.error(
                    &index(&join(path, key), i),
                    format!("expected a finite number, found {}", kind(other)),
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// An optional non-empty array of strings, each one of `allowed`, without repeats.
    pub fn names(
        &self,
        t: &Table,
        path: &[Segment],
        key: &str,
        allowed: &[&str],
    ) -> Result<Option<Vec<String>>, SuiteError> {
        let Some(items) = self.array(t, path, key, "names")? else {
            return Ok(None);
        };
        let mut out: Vec<String> = Vec::new();
        for (i, v) in items.iter().enumerate() {
            match v {
                Value::String(s) if allowed.contains(&s.as_str()) && !out.contains(s) => {
                    out.push(s.clone())
                }
                Value::String(s) if out.contains(s) => {
                    return Err(self.error(&join(path, key), format!("`{s}` is listed twice")))
                }
                other => {
                    return Err(self.error(
                        &index(&join(path, key), i),
                        format!(
                            "expected one of {}, found {}",
                            allowed.join(", "),
                            kind(other)
                        ),
                    ))
                }
            }
        }
        Ok(Some(out))
    }

    fn array<'t>(
        &self,
        t: &'t Table,
        path: &[Segment],
        key: &str,
        what: &str,
    ) -> Result<Option<&'t Vec<Value>>, SuiteError> {
        match t.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) if !items.is_empty() => Ok(Some(items)),
            Some(other) => Err(self.error(
                &join(path, key),
                format!(
                    "expected a non-empty array of {what}, found {}",
                    kind(other)
                ),
            )),
        }
    }
}

/// `path` + `key`.
pub fn join(path: &[Segment], key: &str) -> Vec<Segment> {
    let mut p = path.to_vec();
    p.push(Segment::Key(key.to_string()));
    p
}

/// `path` + `[i]`.
pub fn index(path: &[Segment], i: usize) -> Vec<Segment> {
    let mut p = path.to_vec();
    p.push(Segment::Index(i));
    p
}

/// The path written as `env[1].set.agent.width`.
pub fn dotted(path: &[Segment]) -> String {
    let mut out = String::new();
    for s in path {
        match s {
            Segment::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    if out.is_empty() {
        "(top level)".into()
    } else {
        out
    }
}

/// A value's type and content in words, e.g. `a string ("x")`.
pub fn kind(v: &Value) -> String {
    match v {
        Value::String(s) => format!("the string \"{s}\""),
        Value::Integer(i) => format!("the integer {i}"),
        Value::Float(f) => format!("the number {f}"),
        Value::Boolean(b) => format!("the boolean {b}"),
        Value::Datetime(d) => format!("the date {d}"),
        Value::Array(a) => format!("an array of {} values", a.len()),
        Value::Table(_) => "a table".into(),
    }
}

/// The 1-based line of the key at `path` in `text`, if it can be found.
pub fn line_of(text: &str, path: &[Segment]) -> Option<usize> {
    let doc = toml::de::DeTable::parse(text).ok()?;
    let mut table = doc.get_ref();
    let mut start = None;
    let mut segments = path.iter().peekable();
    while let Some(segment) = segments.next() {
        let Segment::Key(name) = segment else {
            return start.map(|s| line_column(text, s).0);
        };
        let (key, value) = table
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == name.as_str())?;
        start = Some(key.span().start);
        let mut value = value.get_ref();
        if let Some(Segment::Index(i)) = segments.peek() {
            let item = value.as_array().and_then(|a| a.get(*i));
            match item {
                Some(item) => {
                    start = Some(item.span().start);
                    value = item.get_ref();
                    segments.next();
                }
                None => break,
            }
        }
        match value.as_table() {
            Some(t) => table = t,
            None => break,
        }
    }
    start.map(|s| line_column(text, s).0)
}

/// 1-based line and column (in characters) of byte offset `at` in `text`.
pub fn line_column(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Every leaf of `table` as (dotted key, value); a key written with dots inside
/// quotes (`"agent.width" = 64`) is split like a dotted key.
pub fn leaves(table: &Table) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (key, value) in table {
        match value {
            Value::Table(inner) => {
                for (k, v) in leaves(inner) {
                    out.push((format!("{key}.{k}"), v));
                }
            }
            other => out.push((key.clone(), other.clone())),
        }
    }
    out
}

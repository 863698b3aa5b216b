//! Diagnostics that name the file, line, column and field of a configuration error.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based line and column; 0 when the problem has no position (e.g. a missing file).
    pub line: usize,
    pub col: usize,
    /// Dotted path of the offending field, e.g. `l3_rules[2].dst`. Empty when unknown.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.col)?;
        }
        if self.field.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.field, self.message)
        }
    }
}

/// All problems found while loading a configuration. Never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    pub fn single(d: Diagnostic) -> Self {
        Self {
            diagnostics: vec![d],
        }
    }
}

/// Converts byte offsets of one source text into line and column numbers.
#[derive(Debug)]
pub struct Source<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl<'a> Source<'a> {
    pub fn new(path: &'a Path, text: &'a str) -> Self {
        Self { path, text }
    }

    /// 1-based (line, column) of a byte offset; column counts characters.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    }

    pub fn diag(
        &self,
        span: Option<Range<usize>>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Diagnostic {
        let (line, col) = span.map_or((0, 0), |s| self.line_col(s.start));
        Diagnostic {
            file: self.path.to_path_buf(),
            line,
            col,
            field: field.into(),
            message: message.into(),
        }
    }

    /// A diagnostic from a TOML syntax or schema error (unknown field, wrong type, ...).
    pub fn toml_error(&self, e: &toml::de::Error) -> Diagnostic {
        let message = e.message().trim().to_string();
        // serde names the offending key in the message ("unknown field `x`"); report it as
        // the field too so every error has the same shape.
        let field = message
            .split('`')
            .nth(1)
            .filter(|_| {
                message.starts_with("unknown field") || message.starts_with("missing field")
            })
            .unwrap_or("")
            .to_string();
        self.diag(e.span(), field, message)
    }
}

/// Reads a file, mapping I/O errors to a diagnostic that names the file.
pub fn read_file(path: &Path) -> Result<String, Diagnostic> {
    std::fs::read_to_string(path).map_err(|e| Diagnostic {
        file: path.to_path_buf(),
        line: 0,
        col: 0,
        field: String::new(),
        message: format!("cannot read: {e}"),
    })
}

/// Deserialises TOML, reporting the field path and position of the first schema error.
pub fn from_toml<T: DeserializeOwned>(src: &Source<'_>) -> Result<T, ConfigError> {
    let de =
        toml::Deserializer::parse(src.text).map_err(|e| ConfigError::single(src.toml_error(&e)))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let mut d = src.toml_error(e.inner());
        if path != "." && !path.is_empty() {
            d.field = if d.field.is_empty() || path.ends_with(&d.field) {
                path
            } else {
                format!("{path}.{}", d.field)
            };
        }
        ConfigError::single(d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let p = Path::new("x.toml");
        let s = Source::new(p, "a = 1\nbb = 2\n");
        assert_eq!(s.line_col(0), (1, 1));
        assert_eq!(s.line_col(6), (2, 1));
        assert_eq!(s.line_col(8), (2, 3));
    }

    #[test]
    fn display_has_file_line_col_field() {
        let d = Diagnostic {
            file: "p.toml".into(),
            line: 3,
            col: 7,
            field: "tenants[0].subnets".into(),
            message: "invalid CIDR".into(),
        };
        assert_eq!(
            d.to_string(),
            "p.toml:3:7: tenants[0].subnets: invalid CIDR"
        );
    }
}

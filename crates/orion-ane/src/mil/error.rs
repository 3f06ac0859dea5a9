//! The error type of the MIL modules: a message with the source position it concerns.
//!
//! Positions are 1-based (columns count characters). Errors about one statement's meaning carry its
//! line and column 0; errors about a program built in memory carry line 0 and print without a position.

use std::fmt;

/// Something wrong with MIL text or with a MIL program's meaning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MilError {
    /// 1-based line, or 0 when the error has no source position.
    pub line: usize,
    /// 1-based column, or 0 when only the line is known.
    pub column: usize,
    pub message: String,
}

impl MilError {
    /// An error at a source position.
    pub fn at(line: usize, column: usize, message: impl Into<String>) -> MilError {
        MilError {
            line,
            column,
            message: message.into(),
        }
    }

    /// An error without a source position.
    pub fn new(message: impl Into<String>) -> MilError {
        MilError::at(0, 0, message)
    }
}

impl fmt::Display for MilError {
    /// `line:col: message`; `line: message` when only the line is known; just the message without a
    /// position.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (0, _) => f.write_str(&self.message),
            (line, 0) => write!(f, "{line}: {}", self.message),
            (line, column) => write!(f, "{line}:{column}: {}", self.message),
        }
    }
}

impl std::error::Error for MilError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_line_colon_column() {
        assert_eq!(MilError::at(3, 14, "expected ';'").to_string(), "3:14: expected ';'");
        assert_eq!(MilError::at(7, 0, "unknown op").to_string(), "7: unknown op");
        assert_eq!(MilError::new("no function main").to_string(), "no function main");
    }
}

//! Lexer of the text form: turns source text into tokens with 1-based line and column positions.
//!
//! Invariants: never panics on any `&str`; every token records where it starts (columns count
//! characters, not bytes); `#` starts a comment running to the end of the line (outside strings);
//! the last token is always `Eof`, positioned just after the last character. A word is a run of
//! `[A-Za-z0-9_.+-]` (mnemonics, keys, numbers, dtypes, identifiers alike): the parser decides what a
//! word means. A value reference is `%` followed by decimal digits. Strings are double-quoted with the
//! escapes `\"`, `\\`, `\n`, `\r`, `\t` and may not span lines.

use crate::error::{CoreError, Result};

/// What a token is.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum TokenKind {
    /// `%12`: a value id as written in the text (not yet mapped to a graph `ValueId`).
    Value(u64),
    /// A quoted string with escapes resolved.
    Str(String),
    /// A bare word: mnemonic, attribute key, number, dtype name, identifier.
    Word(String),
    Equals,
    Comma,
    Colon,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    Eof,
}

impl TokenKind {
    /// How the token is named in error messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            TokenKind::Value(id) => format!("value %{id}"),
            TokenKind::Str(s) => format!("string {s:?}"),
            TokenKind::Word(w) => format!("'{w}'"),
            TokenKind::Equals => "'='".to_string(),
            TokenKind::Comma => "','".to_string(),
            TokenKind::Colon => "':'".to_string(),
            TokenKind::LBracket => "'['".to_string(),
            TokenKind::RBracket => "']'".to_string(),
            TokenKind::LBrace => "'{'".to_string(),
            TokenKind::RBrace => "'}'".to_string(),
            TokenKind::Eof => "end of input".to_string(),
        }
    }
}

/// A token and the position of its first character.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Token {
    pub kind: TokenKind,
    pub line: usize,
    pub column: usize,
}

/// True for the characters a word is made of.
pub(crate) fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '+')
}

/// A parse error at a position.
pub(crate) fn error_at(line: usize, column: usize, message: impl Into<String>) -> CoreError {
    CoreError::Parse {
        line,
        column,
        message: message.into(),
    }
}

/// Splits `text` into tokens, ending with `Eof`.
pub(crate) fn tokenize(text: &str) -> Result<Vec<Token>> {
    let mut lexer = Lexer {
        chars: text.chars().collect(),
        pos: 0,
        line: 1,
        column: 1,
    };
    let mut tokens = Vec::new();
    loop {
        let token = lexer.next_token()?;
        let done = token.kind == TokenKind::Eof;
        tokens.push(token);
        if done {
            return Ok(tokens);
        }
    }
}

struct Lexer {
    chars: Vec<char>,
    pos: usize,
    line: usize,
    column: usize,
}

impl Lexer {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn skip_blanks_and_comments(&mut self) {
        while let Some(c) = self.peek() {
            if c == '#' {
                while self.peek().is_some_and(|c| c != '\n') {
                    self.bump();
                }
            } else if c.is_whitespace() {
                self.bump();
            } else {
                return;
            }
        }
    }

    fn next_token(&mut self) -> Result<Token> {
        self.skip_blanks_and_comments();
        let (line, column) = (self.line, self.column);
        let token = |kind| Token { kind, line, column };
        let Some(c) = self.bump() else {
            return Ok(token(TokenKind::Eof));
        };
        let kind = match c {
            '=' => TokenKind::Equals,
            ',' => TokenKind::Comma,
            ':' => TokenKind::Colon,
            '[' => TokenKind::LBracket,
            ']' => TokenKind::RBracket,
            '{' => TokenKind::LBrace,
            '}' => TokenKind::RBrace,
            '"' => TokenKind::Str(self.string_body(line, column)?),
            '%' => TokenKind::Value(self.value_id(line, column)?),
            c if is_word_char(c) => {
                let mut word = String::from(c);
                while let Some(c) = self.peek().filter(|&c| is_word_char(c)) {
                    word.push(c);
                    self.bump();
                }
                TokenKind::Word(word)
            }
            other => return Err(error_at(line, column, format!("unexpected character {other:?}"))),
        };
        Ok(token(kind))
    }

    /// The digits after `%`.
    fn value_id(&mut self, line: usize, column: usize) -> Result<u64> {
        let mut digits = String::new();
        while let Some(c) = self.peek().filter(char::is_ascii_digit) {
            digits.push(c);
            self.bump();
        }
        if digits.is_empty() {
            return Err(error_at(line, column, "expected digits after '%'"));
        }
        digits
            .parse::<u64>()
            .map_err(|_| error_at(line, column, format!("value id %{digits} is too large")))
    }

    /// The rest of a string after its opening quote.
    fn string_body(&mut self, line: usize, column: usize) -> Result<String> {
        let mut out = String::new();
        loop {
            match self.peek() {
                None | Some('\n') => return Err(error_at(line, column, "unterminated string")),
                Some('"') => {
                    self.bump();
                    return Ok(out);
                }
                Some('\\') => {
                    let (esc_line, esc_column) = (self.line, self.column);
                    self.bump();
                    let resolved = match self.bump() {
                        Some('"') => '"',
                        Some('\\') => '\\',
                        Some('n') => '\n',
                        Some('r') => '\r',
                        Some('t') => '\t',
                        Some(other) => return Err(error_at(esc_line, esc_column, format!("unknown escape \\{other}"))),
                        None => return Err(error_at(line, column, "unterminated string")),
                    };
                    out.push(resolved);
                }
                Some(c) => {
                    out.push(c);
                    self.bump();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<TokenKind> {
        match tokenize(text) {
            Ok(tokens) => tokens.into_iter().map(|t| t.kind).collect(),
            Err(e) => panic!("lexing {text:?} failed: {e}"),
        }
    }

    #[test]
    fn words_values_strings_and_punctuation() {
        assert_eq!(
            kinds("%3, %4 = split \"a\\\"b\" -1.5e-3 : f32[2] # comment\n}"),
            vec![
                TokenKind::Value(3),
                TokenKind::Comma,
                TokenKind::Value(4),
                TokenKind::Equals,
                TokenKind::Word("split".into()),
                TokenKind::Str("a\"b".into()),
                TokenKind::Word("-1.5e-3".into()),
                TokenKind::Colon,
                TokenKind::Word("f32".into()),
                TokenKind::LBracket,
                TokenKind::Word("2".into()),
                TokenKind::RBracket,
                TokenKind::RBrace,
                TokenKind::Eof,
            ]
        );
    }

    #[test]
    fn positions_are_one_based_lines_and_character_columns() {
        let tokens = tokenize("a\n  bc d").unwrap_or_default();
        let positions: Vec<(usize, usize)> = tokens.iter().map(|t| (t.line, t.column)).collect();
        assert_eq!(positions, vec![(1, 1), (2, 3), (2, 6), (2, 7)]);
        // Columns count characters: the two-byte 'é' inside the string is one column.
        assert_eq!(tokenize("\"é\" @"), Err(error_at(1, 5, "unexpected character '@'")));
    }

    #[test]
    fn lexical_errors_carry_positions() {
        assert_eq!(tokenize("  @"), Err(error_at(1, 3, "unexpected character '@'")));
        assert_eq!(tokenize("\n \"abc"), Err(error_at(2, 2, "unterminated string")));
        assert_eq!(tokenize("%"), Err(error_at(1, 1, "expected digits after '%'")));
        assert!(matches!(
            tokenize("%99999999999999999999999"),
            Err(CoreError::Parse { line: 1, column: 1, .. })
        ));
        assert!(matches!(
            tokenize("\"a\\q\""),
            Err(CoreError::Parse { line: 1, column: 3, .. })
        ));
    }
}

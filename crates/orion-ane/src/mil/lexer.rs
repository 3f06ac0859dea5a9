//! Lexer of MIL text: turns source text into tokens with 1-based line and column positions.
//!
//! Invariants: never panics on any `&str`; iterative (no recursion); every token records where it
//! starts (columns count characters); the last token is always `Eof`. A leading byte-order mark is
//! skipped and whitespace is free. `//` starts a
//! comment to the end of the line and `/* … */` a block comment (CoreML does not write comments; they
//! are accepted for hand-written fixtures). Numbers keep their source text — the parser decides whether
//! a number is a version, an integer or a float — and include an optional leading `-`, decimal
//! (`1e-05`, `0.5`) and hex-float (`-0x1.388p+13`, as the CoreML compiler writes) forms, and `-inf`.
//! Strings are double-quoted with the escapes `\"`, `\\`, `\n`, `\r`, `\t`; any other escaped character
//! stands for itself.

use super::error::MilError;

/// What a token is.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum TokenKind {
    /// `[A-Za-z_][A-Za-z0-9_]*`: names, op names, type names, `true`, `inf`, …
    Ident(String),
    /// A number as written (sign included).
    Number(String),
    /// A quoted string with escapes resolved.
    Str(String),
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    Lt,
    Gt,
    Comma,
    Equals,
    Semicolon,
    Arrow,
    Question,
    Eof,
}

impl TokenKind {
    /// How the token is named in error messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            TokenKind::Ident(s) => format!("'{s}'"),
            TokenKind::Number(s) => format!("number {s}"),
            TokenKind::Str(s) => format!("string {s:?}"),
            TokenKind::LParen => "'('".to_string(),
            TokenKind::RParen => "')'".to_string(),
            TokenKind::LBracket => "'['".to_string(),
            TokenKind::RBracket => "']'".to_string(),
            TokenKind::LBrace => "'{'".to_string(),
            TokenKind::RBrace => "'}'".to_string(),
            TokenKind::Lt => "'<'".to_string(),
            TokenKind::Gt => "'>'".to_string(),
            TokenKind::Comma => "','".to_string(),
            TokenKind::Equals => "'='".to_string(),
            TokenKind::Semicolon => "';'".to_string(),
            TokenKind::Arrow => "'->'".to_string(),
            TokenKind::Question => "'?'".to_string(),
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

/// Splits `text` into tokens, ending with `Eof`.
pub(crate) fn tokenize(text: &str) -> Result<Vec<Token>, MilError> {
    let mut lexer = Lexer {
        chars: text.strip_prefix('\u{feff}').unwrap_or(text).chars().collect(),
        pos: 0,
        line: 1,
        column: 1,
    };
    let mut tokens = Vec::new();
    loop {
        lexer.skip_space_and_comments()?;
        let (line, column) = (lexer.line, lexer.column);
        let Some(c) = lexer.peek(0) else {
            tokens.push(Token {
                kind: TokenKind::Eof,
                line,
                column,
            });
            return Ok(tokens);
        };
        let kind = lexer.token(c, line, column)?;
        tokens.push(Token { kind, line, column });
    }
}

struct Lexer {
    chars: Vec<char>,
    pos: usize,
    line: usize,
    column: usize,
}

impl Lexer {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek(0)?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn skip_space_and_comments(&mut self) -> Result<(), MilError> {
        loop {
            match (self.peek(0), self.peek(1)) {
                (Some(c), _) if c.is_whitespace() => {
                    self.bump();
                }
                (Some('/'), Some('/')) => {
                    while self.peek(0).is_some_and(|c| c != '\n') {
                        self.bump();
                    }
                }
                (Some('/'), Some('*')) => {
                    let (line, column) = (self.line, self.column);
                    self.bump();
                    self.bump();
                    loop {
                        match (self.peek(0), self.peek(1)) {
                            (Some('*'), Some('/')) => {
                                self.bump();
                                self.bump();
                                break;
                            }
                            (Some(_), _) => {
                                self.bump();
                            }
                            (None, _) => return Err(MilError::at(line, column, "unterminated block comment")),
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn token(&mut self, c: char, line: usize, column: usize) -> Result<TokenKind, MilError> {
        let single = match c {
            '(' => Some(TokenKind::LParen),
            ')' => Some(TokenKind::RParen),
            '[' => Some(TokenKind::LBracket),
            ']' => Some(TokenKind::RBracket),
            '{' => Some(TokenKind::LBrace),
            '}' => Some(TokenKind::RBrace),
            '<' => Some(TokenKind::Lt),
            '>' => Some(TokenKind::Gt),
            ',' => Some(TokenKind::Comma),
            '=' => Some(TokenKind::Equals),
            ';' => Some(TokenKind::Semicolon),
            '?' => Some(TokenKind::Question),
            _ => None,
        };
        if let Some(kind) = single {
            self.bump();
            return Ok(kind);
        }
        if c == '"' {
            return self.string(line, column);
        }
        if c == '-' && self.peek(1) == Some('>') {
            self.bump();
            self.bump();
            return Ok(TokenKind::Arrow);
        }
        if c.is_ascii_digit() || (c == '-' && self.peek(1).is_some_and(|n| n.is_ascii_digit() || n == '.')) {
            return Ok(TokenKind::Number(self.number()));
        }
        if c == '-' && self.peek(1).is_some_and(is_ident_start) {
            self.bump();
            let word = self.ident();
            return match word.as_str() {
                "inf" | "nan" => Ok(TokenKind::Number(format!("-{word}"))),
                _ => Err(MilError::at(line, column, format!("unexpected '-' before '{word}'"))),
            };
        }
        if is_ident_start(c) {
            return Ok(TokenKind::Ident(self.ident()));
        }
        Err(MilError::at(line, column, format!("unexpected character {c:?}")))
    }

    fn ident(&mut self) -> String {
        let mut word = String::new();
        while let Some(c) = self.peek(0).filter(|&c| c.is_ascii_alphanumeric() || c == '_') {
            word.push(c);
            self.bump();
        }
        word
    }

    /// Greedy scan of a number's characters; validation is the parser's job.
    fn number(&mut self) -> String {
        let mut text = String::new();
        if self.peek(0) == Some('-') {
            text.push('-');
            self.bump();
        }
        let hex = self.peek(0) == Some('0') && matches!(self.peek(1), Some('x' | 'X'));
        let exponent_marks: &[char] = if hex { &['p', 'P'] } else { &['e', 'E'] };
        while let Some(c) = self.peek(0) {
            let signed_exponent =
                matches!(c, '+' | '-') && text.chars().last().is_some_and(|p| exponent_marks.contains(&p));
            if c.is_ascii_alphanumeric() || c == '.' || signed_exponent {
                text.push(c);
                self.bump();
            } else {
                break;
            }
        }
        text
    }

    fn string(&mut self, line: usize, column: usize) -> Result<TokenKind, MilError> {
        self.bump();
        let mut s = String::new();
        loop {
            match self.bump() {
                None => return Err(MilError::at(line, column, "unterminated string")),
                Some('"') => return Ok(TokenKind::Str(s)),
                Some('\\') => match self.bump() {
                    None => return Err(MilError::at(line, column, "unterminated string")),
                    Some('n') => s.push('\n'),
                    Some('r') => s.push('\r'),
                    Some('t') => s.push('\t'),
                    Some(other) => s.push(other),
                },
                Some(c) => s.push(c),
            }
        }
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<TokenKind> {
        tokenize(text).unwrap().into_iter().map(|t| t.kind).collect()
    }

    #[test]
    fn numbers_keep_their_text() {
        assert_eq!(
            kinds("1.3 -1 1e-05 -0x1.388p+13 -inf"),
            vec![
                TokenKind::Number("1.3".into()),
                TokenKind::Number("-1".into()),
                TokenKind::Number("1e-05".into()),
                TokenKind::Number("-0x1.388p+13".into()),
                TokenKind::Number("-inf".into()),
                TokenKind::Eof
            ]
        );
    }

    #[test]
    fn arrow_comments_and_positions() {
        let tokens = tokenize("} // note\n  -> (y); /* x */").unwrap();
        assert_eq!(tokens[0].kind, TokenKind::RBrace);
        assert_eq!(
            (tokens[1].kind.clone(), tokens[1].line, tokens[1].column),
            (TokenKind::Arrow, 2, 3)
        );
        assert_eq!(tokens[3].kind, TokenKind::Ident("y".into()));
        assert_eq!(tokens.last().map(|t| t.kind.clone()), Some(TokenKind::Eof));
    }

    #[test]
    fn strings_resolve_escapes_and_report_unterminated() {
        assert_eq!(kinds(r#""a\"b""#)[0], TokenKind::Str("a\"b".into()));
        let err = tokenize("x = \"open").unwrap_err();
        assert_eq!((err.line, err.column), (1, 5));
        assert!(tokenize("a $ b").is_err());
        assert_eq!(kinds("\u{feff}x"), vec![TokenKind::Ident("x".into()), TokenKind::Eof]);
    }
}

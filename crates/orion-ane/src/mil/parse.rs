//! Parser of MIL text in both dialects and as the CoreML compiler writes it (`model.mil`).
//!
//! Accepted beyond what Orion prints: scalar shorthand and `tensor<T, []>` spellings anywhere; results
//! with or without parentheses (`(T a, T b) = split(…)` and `T a, T b = split(…)`); statements without
//! an attribute list (`const()[val = …]` without a name, `relu(x = x)`); inline literal arguments;
//! function attribute lists (`func main<ios17>(…) [FlexibleShapeInformation = …] {`); several
//! functions; programs without buildInfo; `?` extents; hex floats, `inf`, `nan`; comments (see
//! `lexer`); an optional `;` after a function's return list.
//!
//! Invariants: never panics on any input; types and literal values nest at most [`MAX_NESTING`] deep
//! (deeper input is an error, not a stack overflow); every error carries the line and column of the
//! token where parsing stopped. Control-flow blocks (`cond`, `while_loop`) are not supported.

use super::ast::{Argument, Dim, Function, Literal, MilDType, MilType, Operation, Param, Program, Value};
use super::error::MilError;
use super::lexer::{tokenize, Token, TokenKind};

/// Deepest nesting of types and literal values the parser accepts.
pub const MAX_NESTING: usize = 64;

/// Parses a whole MIL program.
pub fn parse_program(text: &str) -> Result<Program, MilError> {
    let tokens = tokenize(text)?;
    let mut parser = Parser {
        tokens,
        pos: 0,
        depth: 0,
    };
    let program = parser.program()?;
    parser.expect(&TokenKind::Eof)?;
    Ok(program)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
}

impl Parser {
    // ---- token helpers -------------------------------------------------------------------------

    fn peek(&self) -> &Token {
        self.peek_at(0)
    }

    /// The token `ahead` positions on; the final `Eof` repeats past the end.
    fn peek_at(&self, ahead: usize) -> &Token {
        let last = self.tokens.len().saturating_sub(1);
        &self.tokens[(self.pos + ahead).min(last)]
    }

    fn advance(&mut self) -> Token {
        let token = self.peek().clone();
        if self.pos + 1 < self.tokens.len() {
            self.pos += 1;
        }
        token
    }

    fn at(&self, kind: &TokenKind) -> bool {
        self.peek().kind == *kind
    }

    fn eat(&mut self, kind: &TokenKind) -> bool {
        if self.at(kind) {
            self.advance();
            true
        } else {
            false
        }
    }

    fn error_here(&self, message: impl Into<String>) -> MilError {
        let t = self.peek();
        MilError::at(t.line, t.column, message)
    }

    fn unexpected(&self, wanted: &str) -> MilError {
        self.error_here(format!("expected {wanted}, found {}", self.peek().kind.describe()))
    }

    fn expect(&mut self, kind: &TokenKind) -> Result<Token, MilError> {
        if self.at(kind) {
            Ok(self.advance())
        } else {
            Err(self.unexpected(&kind.describe()))
        }
    }

    fn ident(&mut self, what: &str) -> Result<String, MilError> {
        match &self.peek().kind {
            TokenKind::Ident(s) => {
                let s = s.clone();
                self.advance();
                Ok(s)
            }
            _ => Err(self.unexpected(what)),
        }
    }

    fn keyword(&mut self, word: &str) -> Result<(), MilError> {
        match &self.peek().kind {
            TokenKind::Ident(s) if s == word => {
                self.advance();
                Ok(())
            }
            _ => Err(self.unexpected(&format!("'{word}'"))),
        }
    }

    /// Enters one level of type or value nesting.
    fn enter(&mut self) -> Result<(), MilError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(self.error_here(format!("nesting deeper than {MAX_NESTING} levels")));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    /// Parses `item (',' item)*` up to (not including) `close`; empty when `close` comes first.
    fn list<T>(
        &mut self,
        close: &TokenKind,
        mut item: impl FnMut(&mut Parser) -> Result<T, MilError>,
    ) -> Result<Vec<T>, MilError> {
        let mut items = Vec::new();
        if self.at(close) {
            return Ok(items);
        }
        loop {
            items.push(item(self)?);
            if !self.eat(&TokenKind::Comma) {
                return Ok(items);
            }
        }
    }

    // ---- program structure ---------------------------------------------------------------------

    fn program(&mut self) -> Result<Program, MilError> {
        self.keyword("program")?;
        self.expect(&TokenKind::LParen)?;
        let version = match &self.peek().kind {
            TokenKind::Number(v) => v.clone(),
            _ => return Err(self.unexpected("a program version")),
        };
        self.advance();
        self.expect(&TokenKind::RParen)?;
        let mut build_info = Vec::new();
        if self.at(&TokenKind::LBracket) {
            let start = self.peek().clone();
            for (name, lit) in self.attribute_list()? {
                if name != "buildInfo" {
                    return Err(MilError::at(
                        start.line,
                        start.column,
                        format!("unsupported program attribute '{name}'"),
                    ));
                }
                build_info = string_pairs(&lit)
                    .ok_or_else(|| MilError::at(start.line, start.column, "buildInfo must be a dict of strings"))?;
            }
        }
        self.expect(&TokenKind::LBrace)?;
        let mut functions = Vec::new();
        while !self.eat(&TokenKind::RBrace) {
            functions.push(self.function()?);
        }
        Ok(Program {
            version,
            build_info,
            functions,
        })
    }

    fn function(&mut self) -> Result<Function, MilError> {
        let line = self.peek().line;
        self.keyword("func")?;
        let name = self.ident("a function name")?;
        self.expect(&TokenKind::Lt)?;
        let opset = self.ident("an opset name")?;
        self.expect(&TokenKind::Gt)?;
        self.expect(&TokenKind::LParen)?;
        let params = self.list(&TokenKind::RParen, |p| {
            let ty = p.ty()?;
            let name = p.ident("a parameter name")?;
            Ok(Param { name, ty })
        })?;
        self.expect(&TokenKind::RParen)?;
        let attributes = if self.at(&TokenKind::LBracket) {
            self.attribute_list()?
        } else {
            Vec::new()
        };
        self.expect(&TokenKind::LBrace)?;
        let mut operations = Vec::new();
        while !self.eat(&TokenKind::RBrace) {
            operations.push(self.operation()?);
        }
        self.expect(&TokenKind::Arrow)?;
        self.expect(&TokenKind::LParen)?;
        let outputs = self.list(&TokenKind::RParen, |p| p.ident("a returned variable"))?;
        self.expect(&TokenKind::RParen)?;
        self.eat(&TokenKind::Semicolon);
        Ok(Function {
            name,
            opset,
            params,
            attributes,
            operations,
            outputs,
            line,
        })
    }

    fn operation(&mut self) -> Result<Operation, MilError> {
        let line = self.peek().line;
        let results = if self.eat(&TokenKind::LParen) {
            let results = self.list(&TokenKind::RParen, Parser::result)?;
            self.expect(&TokenKind::RParen)?;
            results
        } else {
            self.list(&TokenKind::Equals, Parser::result)?
        };
        if results.is_empty() {
            return Err(self.error_here("an operation must define at least one variable"));
        }
        self.expect(&TokenKind::Equals)?;
        let op = self.ident("an operation name")?;
        self.expect(&TokenKind::LParen)?;
        let args = self.list(&TokenKind::RParen, |p| {
            let name = p.ident("an argument name")?;
            p.expect(&TokenKind::Equals)?;
            let arg = p.argument()?;
            Ok((name, arg))
        })?;
        self.expect(&TokenKind::RParen)?;
        let attributes = if self.at(&TokenKind::LBracket) {
            self.attribute_list()?
        } else {
            Vec::new()
        };
        self.expect(&TokenKind::Semicolon)?;
        Ok(Operation {
            results,
            op,
            args,
            attributes,
            line,
        })
    }

    fn result(&mut self) -> Result<(String, MilType), MilError> {
        let ty = self.ty()?;
        let name = self.ident("a variable name")?;
        Ok((name, ty))
    }

    fn argument(&mut self) -> Result<Argument, MilError> {
        if self.eat(&TokenKind::LParen) {
            let vars = self.list(&TokenKind::RParen, |p| p.ident("a variable name"))?;
            self.expect(&TokenKind::RParen)?;
            return Ok(Argument::Tuple(vars));
        }
        if self.starts_literal() {
            return Ok(Argument::Literal(self.literal()?));
        }
        Ok(Argument::Var(self.ident("a variable or literal")?))
    }

    /// `[name = LITERAL, …]`.
    fn attribute_list(&mut self) -> Result<Vec<(String, Literal)>, MilError> {
        self.expect(&TokenKind::LBracket)?;
        let attributes = self.list(&TokenKind::RBracket, |p| {
            let name = p.ident("an attribute name")?;
            p.expect(&TokenKind::Equals)?;
            Ok((name, p.literal()?))
        })?;
        self.expect(&TokenKind::RBracket)?;
        Ok(attributes)
    }

    // ---- types and literals --------------------------------------------------------------------

    /// True when the next tokens begin a typed literal (`fp16(`, `tensor<`, `dict<`, …).
    fn starts_literal(&self) -> bool {
        let TokenKind::Ident(word) = &self.peek().kind else {
            return false;
        };
        let next = &self.peek_at(1).kind;
        match word.as_str() {
            "tensor" | "dict" | "tuple" | "state" => *next == TokenKind::Lt,
            w => MilDType::from_name(w).is_some() && *next == TokenKind::LParen,
        }
    }

    fn ty(&mut self) -> Result<MilType, MilError> {
        self.enter()?;
        let result = self.ty_inner();
        self.leave();
        result
    }

    fn ty_inner(&mut self) -> Result<MilType, MilError> {
        let word = self.ident("a type")?;
        match word.as_str() {
            "tensor" => {
                self.expect(&TokenKind::Lt)?;
                let dtype = self.dtype()?;
                self.expect(&TokenKind::Comma)?;
                self.expect(&TokenKind::LBracket)?;
                let shape = self.list(&TokenKind::RBracket, Parser::dim)?;
                self.expect(&TokenKind::RBracket)?;
                self.expect(&TokenKind::Gt)?;
                Ok(MilType::Tensor { dtype, shape })
            }
            "dict" => {
                self.expect(&TokenKind::Lt)?;
                let key = self.ty()?;
                self.expect(&TokenKind::Comma)?;
                let value = self.ty()?;
                self.expect(&TokenKind::Gt)?;
                Ok(MilType::Dict {
                    key: Box::new(key),
                    value: Box::new(value),
                })
            }
            "tuple" => {
                self.expect(&TokenKind::Lt)?;
                let items = self.list(&TokenKind::Gt, Parser::ty)?;
                self.expect(&TokenKind::Gt)?;
                Ok(MilType::Tuple(items))
            }
            "state" => {
                self.expect(&TokenKind::Lt)?;
                let inner = self.ty()?;
                self.expect(&TokenKind::Gt)?;
                Ok(MilType::State(Box::new(inner)))
            }
            other => match MilDType::from_name(other) {
                Some(dtype) => Ok(MilType::scalar(dtype)),
                None => Err(self.previous_error(format!("unknown type '{other}'"))),
            },
        }
    }

    /// An error positioned at the token just consumed.
    fn previous_error(&self, message: String) -> MilError {
        let t = &self.tokens[self.pos.saturating_sub(1)];
        MilError::at(t.line, t.column, message)
    }

    fn dtype(&mut self) -> Result<MilDType, MilError> {
        let word = self.ident("an element type")?;
        MilDType::from_name(&word).ok_or_else(|| self.previous_error(format!("unknown element type '{word}'")))
    }

    fn dim(&mut self) -> Result<Dim, MilError> {
        let token = self.advance();
        match &token.kind {
            TokenKind::Number(text) => text
                .parse::<usize>()
                .map(Dim::Known)
                .map_err(|_| MilError::at(token.line, token.column, format!("invalid extent {text}"))),
            // `?`, or a symbolic extent name as coremltools prints them: both unknown until run time.
            TokenKind::Question | TokenKind::Ident(_) => Ok(Dim::Unknown),
            _ => Err(MilError::at(
                token.line,
                token.column,
                format!("expected an extent, found {}", token.kind.describe()),
            )),
        }
    }

    /// `TYPE(VALUE)`.
    fn literal(&mut self) -> Result<Literal, MilError> {
        let ty = self.ty()?;
        self.expect(&TokenKind::LParen)?;
        let value = self.value()?;
        self.expect(&TokenKind::RParen)?;
        Ok(Literal { ty, value })
    }

    fn value(&mut self) -> Result<Value, MilError> {
        self.enter()?;
        let result = self.value_inner();
        self.leave();
        result
    }

    fn value_inner(&mut self) -> Result<Value, MilError> {
        let token = self.advance();
        match &token.kind {
            TokenKind::Number(text) => number_value(text).map_err(|m| MilError::at(token.line, token.column, m)),
            TokenKind::Str(s) => Ok(Value::Str(s.clone())),
            TokenKind::Ident(word) => match word.as_str() {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                "inf" => Ok(Value::Float(f64::INFINITY)),
                "nan" => Ok(Value::Float(f64::NAN)),
                "BLOBFILE" => self.blob(),
                _ => Err(MilError::at(
                    token.line,
                    token.column,
                    format!("unexpected '{word}' in a value"),
                )),
            },
            TokenKind::LBracket => {
                let items = self.list(&TokenKind::RBracket, Parser::value)?;
                self.expect(&TokenKind::RBracket)?;
                Ok(Value::List(items))
            }
            TokenKind::LParen => {
                let items = self.list(&TokenKind::RParen, Parser::value)?;
                self.expect(&TokenKind::RParen)?;
                Ok(Value::Tuple(items))
            }
            TokenKind::LBrace => {
                let entries = self.list(&TokenKind::RBrace, |p| {
                    p.expect(&TokenKind::LBrace)?;
                    let key = p.value()?;
                    p.expect(&TokenKind::Comma)?;
                    let value = p.value()?;
                    p.expect(&TokenKind::RBrace)?;
                    Ok((key, value))
                })?;
                self.expect(&TokenKind::RBrace)?;
                Ok(Value::Dict(entries))
            }
            other => Err(MilError::at(
                token.line,
                token.column,
                format!("expected a value, found {}", other.describe()),
            )),
        }
    }

    /// The part of `BLOBFILE(path = LIT, offset = LIT)` after the keyword.
    fn blob(&mut self) -> Result<Value, MilError> {
        let open = self.expect(&TokenKind::LParen)?;
        let fields = self.list(&TokenKind::RParen, |p| {
            let name = p.ident("'path' or 'offset'")?;
            p.expect(&TokenKind::Equals)?;
            Ok((name, p.literal()?))
        })?;
        self.expect(&TokenKind::RParen)?;
        let field = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, l)| &l.value);
        let here = |m: &str| MilError::at(open.line, open.column, format!("BLOBFILE {m}"));
        let path = match field("path") {
            Some(Value::Str(s)) => s.clone(),
            _ => return Err(here("needs a string path")),
        };
        let offset = match field("offset") {
            Some(Value::Int(n)) => u64::try_from(*n).map_err(|_| here("offset must not be negative"))?,
            _ => return Err(here("needs an integer offset")),
        };
        Ok(Value::Blob { path, offset })
    }
}

/// The entries of a `dict<string, string>` literal.
fn string_pairs(lit: &Literal) -> Option<Vec<(String, String)>> {
    let Value::Dict(entries) = &lit.value else {
        return None;
    };
    entries
        .iter()
        .map(|(k, v)| match (k, v) {
            (Value::Str(k), Value::Str(v)) => Some((k.clone(), v.clone())),
            _ => None,
        })
        .collect()
}

/// An integer or float from its source text (decimal, hex integer, hex float, `-inf`, `-nan`).
fn number_value(text: &str) -> Result<Value, String> {
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let sign = if negative { -1.0 } else { 1.0 };
    let invalid = || format!("invalid number {text}");
    if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        if hex.contains(['.', 'p', 'P']) {
            return hex_float(hex).map(|v| Value::Float(sign * v)).ok_or_else(invalid);
        }
        let magnitude = i64::from_str_radix(hex, 16).map_err(|_| invalid())?;
        return Ok(Value::Int(if negative { -magnitude } else { magnitude }));
    }
    match body {
        "inf" => return Ok(Value::Float(sign * f64::INFINITY)),
        "nan" => return Ok(Value::Float(f64::NAN)),
        _ => {}
    }
    if !body.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return Err(invalid());
    }
    if body.contains(['.', 'e', 'E']) {
        return text.parse::<f64>().map(Value::Float).map_err(|_| invalid());
    }
    text.parse::<i64>().map(Value::Int).map_err(|_| invalid())
}

/// Value of a hex float without sign and `0x`: `1.388p+13` (the exponent is optional).
fn hex_float(text: &str) -> Option<f64> {
    let (mantissa, exponent) = match text.find(['p', 'P']) {
        Some(i) => (&text[..i], text[i + 1..].parse::<i64>().ok()?),
        None => (text, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    let mut value = 0.0f64;
    for c in int_part.chars().chain(frac_part.chars()) {
        value = value * 16.0 + f64::from(c.to_digit(16)?);
    }
    let scale = exponent.saturating_sub(4 * frac_part.len() as i64).clamp(-2200, 2200) as i32;
    // Split the scaling so that neither factor overflows or underflows on its own.
    let half = scale / 2;
    Some(value * 2f64.powi(half) * 2f64.powi(scale - half))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_by_kind() {
        assert_eq!(number_value("-1"), Ok(Value::Int(-1)));
        assert_eq!(number_value("1e-05"), Ok(Value::Float(1e-5)));
        assert_eq!(number_value("-0x1.388p+13"), Ok(Value::Float(-10000.0)));
        assert_eq!(number_value("0x1p-24"), Ok(Value::Float(2f64.powi(-24))));
        assert_eq!(number_value("0x10"), Ok(Value::Int(16)));
        assert_eq!(number_value("-inf"), Ok(Value::Float(f64::NEG_INFINITY)));
        assert!(number_value("1.2.3").is_err());
        assert!(number_value("12abc").is_err());
        assert!(number_value("99999999999999999999").is_err());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let depth = 100_000;
        let text = format!(
            "program(1.3) {{ func main<ios18>() {{ tensor<int32, [1]> c = const()[val = tensor<int32, [1]>({}{})]; }} -> (c); }}",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let err = parse_program(&text).unwrap_err();
        assert!(err.message.contains("nesting"), "{err}");
    }
}

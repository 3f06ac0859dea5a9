//! Parser of the text form: rebuilds a `Graph` through `Graph::add_node`.
//!
//! Grammar (whitespace, blank lines and `#` comments are free):
//! ```text
//! file      := "graph" (word | string) "{" statement* "}"
//! statement := results "=" mnemonic body ":" type ("," type)*  |  "output" string "=" %id
//! results   := %id ("," %id)*
//! body      := string                      (input)
//!            | "[" literal,* "]"           (const, flat row-major)
//!            | (%id ("," %id)*)? (key "=" (word | "[" word,* "]"))*   (every other op)
//! type      := dtype "[" extent,* "]"
//! ```
//! Invariants: never panics on any input; value ids must be defined before use and never redefined
//! (they are renumbered densely, so a text with gaps still parses); the declared result types must
//! equal the inferred ones; every error is a `CoreError::Parse` with a 1-based line and column.
//! Integers are capped at `verify::MAX_EXTENT` and element counts at `verify::MAX_ELEMENTS`, and the
//! arithmetic of shape inference is checked in advance, so hostile sizes are errors, not overflows.

use crate::error::{CoreError, Result};
use crate::graph::{Graph, ValueId};
use crate::op::{BinaryOp, CompareOp, Op, ReduceOp, UnaryOp};
use crate::tensor::{Tensor, TensorData};
use crate::text::lexer::{error_at, is_word_char, tokenize, Token, TokenKind};
use crate::types::{DType, TensorType};
use crate::verify::{check_inference_sizes, check_type_size, checked_numel, MAX_EXTENT};
use std::collections::HashMap;
use std::sync::Arc;

/// Parses the text form into a graph.
pub fn parse(text: &str) -> Result<Graph> {
    let mut parser = Parser {
        tokens: tokenize(text)?,
        pos: 0,
        graph: Graph::new(""),
        ids: HashMap::new(),
    };
    parser.file()?;
    Ok(parser.graph)
}

/// A source position (line, column).
#[derive(Clone, Copy, Debug)]
struct Pos(usize, usize);

impl Pos {
    fn error(self, message: impl Into<String>) -> CoreError {
        error_at(self.0, self.1, message)
    }
}

/// A word and where it was written.
type Spanned = (String, Pos);

enum AttrValue {
    Word(Spanned),
    List(Vec<Spanned>),
}

struct Attr {
    key: String,
    pos: Pos,
    value: AttrValue,
}

/// The `key=value` attributes of one node, consumed by the op builder.
struct Attrs {
    op: String,
    op_pos: Pos,
    items: Vec<Attr>,
}

/// One parsed node line before it is added to the graph.
struct NodeLine {
    results: Vec<(u64, Pos)>,
    mnemonic: Spanned,
    operands: Vec<ValueId>,
    input_name: Option<String>,
    const_data: Option<(Vec<Spanned>, Pos)>,
    types: Vec<(TensorType, Pos)>,
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    graph: Graph,
    /// Text id -> graph value.
    ids: HashMap<u64, ValueId>,
}

impl Parser {
    fn peek(&self) -> &TokenKind {
        self.tokens.get(self.pos).map_or(&TokenKind::Eof, |t| &t.kind)
    }

    fn here(&self) -> Pos {
        match self.tokens.get(self.pos).or(self.tokens.last()) {
            Some(t) => Pos(t.line, t.column),
            None => Pos(1, 1),
        }
    }

    fn advance(&mut self) -> (TokenKind, Pos) {
        let pos = self.here();
        let kind = self.peek().clone();
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        (kind, pos)
    }

    fn unexpected(&self, expected: &str) -> CoreError {
        self.here()
            .error(format!("expected {expected}, found {}", self.peek().describe()))
    }

    fn expect(&mut self, kind: TokenKind, expected: &str) -> Result<Pos> {
        if *self.peek() == kind {
            Ok(self.advance().1)
        } else {
            Err(self.unexpected(expected))
        }
    }

    fn word(&mut self, expected: &str) -> Result<Spanned> {
        match self.peek() {
            TokenKind::Word(w) => {
                let w = w.clone();
                Ok((w, self.advance().1))
            }
            _ => Err(self.unexpected(expected)),
        }
    }

    fn string(&mut self, expected: &str) -> Result<Spanned> {
        match self.peek() {
            TokenKind::Str(s) => {
                let s = s.clone();
                Ok((s, self.advance().1))
            }
            _ => Err(self.unexpected(expected)),
        }
    }

    fn file(&mut self) -> Result<()> {
        let (keyword, pos) = self.word("'graph'")?;
        if keyword != "graph" {
            return Err(pos.error(format!("expected 'graph', found '{keyword}'")));
        }
        let name = match self.peek() {
            TokenKind::Str(_) => self.string("a graph name")?.0,
            _ => {
                let (name, pos) = self.word("a graph name")?;
                if name.contains('+') || !name.chars().all(is_word_char) {
                    return Err(pos.error(format!("bad graph name '{name}'")));
                }
                name
            }
        };
        self.graph.set_name(name);
        self.expect(TokenKind::LBrace, "'{'")?;
        loop {
            match self.peek() {
                TokenKind::Value(_) => self.node_statement()?,
                TokenKind::Word(w) if w == "output" => self.output_statement()?,
                TokenKind::RBrace => break,
                _ => return Err(self.unexpected("a node, 'output' or '}'")),
            }
        }
        self.advance();
        self.expect(TokenKind::Eof, "end of input after '}'")?;
        Ok(())
    }

    fn output_statement(&mut self) -> Result<()> {
        self.advance();
        let (name, name_pos) = self.string("an output name")?;
        self.expect(TokenKind::Equals, "'='")?;
        let value = self.operand()?;
        self.graph.set_output(name, value).map_err(|e| name_pos.error(plain(e)))
    }

    /// A `%id` that must already be defined.
    fn operand(&mut self) -> Result<ValueId> {
        match self.advance() {
            (TokenKind::Value(id), pos) => match self.ids.get(&id) {
                Some(&v) => Ok(v),
                None => Err(pos.error(format!("undefined value %{id}"))),
            },
            (other, pos) => Err(pos.error(format!("expected a value, found {}", other.describe()))),
        }
    }

    fn node_statement(&mut self) -> Result<()> {
        let (line, attrs) = self.node_line()?;
        let op = build_op(&line, attrs)?;
        let (mnemonic, mnemonic_pos) = &line.mnemonic;
        if op.output_count() != line.results.len() {
            return Err(mnemonic_pos.error(format!(
                "{mnemonic} defines {} value(s), but {} result(s) are named",
                op.output_count(),
                line.results.len()
            )));
        }
        let operand_types: Vec<&TensorType> = line.operands.iter().map(|&v| self.graph.ty(v)).collect();
        check_inference_sizes(&op, &operand_types).map_err(|m| mnemonic_pos.error(format!("{mnemonic}: {m}")))?;
        let outputs = self
            .graph
            .add_node(op, line.operands.clone())
            .map_err(|e| mnemonic_pos.error(plain(e)))?;
        for (&v, (declared, pos)) in outputs.iter().zip(&line.types) {
            let inferred = self.graph.ty(v);
            check_type_size(inferred).map_err(|m| pos.error(m))?;
            if inferred != declared {
                return Err(pos.error(format!(
                    "declared type {declared} differs from inferred type {inferred}"
                )));
            }
        }
        for (&(id, _), &v) in line.results.iter().zip(&outputs) {
            self.ids.insert(id, v);
        }
        Ok(())
    }

    /// The syntax of a node line; operands are resolved, nothing is added to the graph yet.
    fn node_line(&mut self) -> Result<(NodeLine, Attrs)> {
        let results = self.results()?;
        self.expect(TokenKind::Equals, "'='")?;
        let mnemonic = self.word("an op name")?;
        let mut line = NodeLine {
            results,
            mnemonic: mnemonic.clone(),
            operands: Vec::new(),
            input_name: None,
            const_data: None,
            types: Vec::new(),
        };
        let mut attrs = Attrs {
            op: mnemonic.0.clone(),
            op_pos: mnemonic.1,
            items: Vec::new(),
        };
        match mnemonic.0.as_str() {
            "input" => line.input_name = Some(self.string("an input name")?.0),
            "const" => line.const_data = Some(self.const_literals()?),
            _ => {
                line.operands = self.operands()?;
                attrs.items = self.attributes()?;
            }
        }
        let colon = self.expect(TokenKind::Colon, "':' and the result types")?;
        line.types = self.types()?;
        if line.types.len() != line.results.len() {
            return Err(colon.error(format!(
                "{} result(s) but {} type(s)",
                line.results.len(),
                line.types.len()
            )));
        }
        Ok((line, attrs))
    }

    fn results(&mut self) -> Result<Vec<(u64, Pos)>> {
        let mut results: Vec<(u64, Pos)> = Vec::new();
        loop {
            let (id, pos) = match self.advance() {
                (TokenKind::Value(id), pos) => (id, pos),
                (other, pos) => return Err(pos.error(format!("expected a value, found {}", other.describe()))),
            };
            if self.ids.contains_key(&id) || results.iter().any(|&(r, _)| r == id) {
                return Err(pos.error(format!("value %{id} is already defined")));
            }
            results.push((id, pos));
            if *self.peek() != TokenKind::Comma {
                return Ok(results);
            }
            self.advance();
        }
    }

    fn operands(&mut self) -> Result<Vec<ValueId>> {
        let mut operands = Vec::new();
        if !matches!(self.peek(), TokenKind::Value(_)) {
            return Ok(operands);
        }
        loop {
            operands.push(self.operand()?);
            if *self.peek() != TokenKind::Comma {
                return Ok(operands);
            }
            self.advance();
        }
    }

    fn attributes(&mut self) -> Result<Vec<Attr>> {
        let mut items: Vec<Attr> = Vec::new();
        while let TokenKind::Word(_) = self.peek() {
            let (key, pos) = self.word("an attribute")?;
            if items.iter().any(|a| a.key == key) {
                return Err(pos.error(format!("attribute '{key}' is given twice")));
            }
            self.expect(TokenKind::Equals, "'=' after the attribute name")?;
            let value = if *self.peek() == TokenKind::LBracket {
                AttrValue::List(self.word_list()?.0)
            } else {
                AttrValue::Word(self.word("an attribute value")?)
            };
            items.push(Attr { key, pos, value });
        }
        Ok(items)
    }

    /// `[w, w, ...]` (possibly empty) and the position of `[`.
    fn word_list(&mut self) -> Result<(Vec<Spanned>, Pos)> {
        let open = self.expect(TokenKind::LBracket, "'['")?;
        let mut items = Vec::new();
        if *self.peek() == TokenKind::RBracket {
            self.advance();
            return Ok((items, open));
        }
        loop {
            items.push(self.word("a number")?);
            match self.advance() {
                (TokenKind::Comma, _) => {}
                (TokenKind::RBracket, _) => return Ok((items, open)),
                (other, pos) => return Err(pos.error(format!("expected ',' or ']', found {}", other.describe()))),
            }
        }
    }

    fn const_literals(&mut self) -> Result<(Vec<Spanned>, Pos)> {
        if *self.peek() != TokenKind::LBracket {
            return Err(self.unexpected("'[' and the constant's elements"));
        }
        self.word_list()
    }

    fn types(&mut self) -> Result<Vec<(TensorType, Pos)>> {
        let mut types = Vec::new();
        loop {
            let (name, pos) = self.word("a type")?;
            let dtype = DType::from_name(&name).ok_or_else(|| pos.error(format!("unknown element type '{name}'")))?;
            let dims = self
                .word_list()?
                .0
                .iter()
                .map(|(w, p)| parse_extent(w, *p))
                .collect::<Result<Vec<_>>>()?;
            types.push((TensorType::new(dtype, dims), pos));
            if *self.peek() != TokenKind::Comma {
                return Ok(types);
            }
            self.advance();
        }
    }
}

/// The message of an error from the graph API, without the graph-name prefix.
fn plain(e: CoreError) -> String {
    match e {
        CoreError::Graph { message, .. } => message,
        other => other.to_string(),
    }
}

/// The op a node line describes (attributes checked, nothing else).
fn build_op(line: &NodeLine, mut attrs: Attrs) -> Result<Op> {
    let (mnemonic, pos) = &line.mnemonic;
    let op = match mnemonic.as_str() {
        "input" => Op::Input {
            name: line.input_name.clone().unwrap_or_default(),
            ty: line
                .types
                .first()
                .map(|(t, _)| t.clone())
                .unwrap_or_else(|| TensorType::new(DType::F32, [])),
        },
        "const" => const_op(line)?,
        "matmul" => Op::MatMul {
            transpose_a: attrs.boolean("transpose_a")?,
            transpose_b: attrs.boolean("transpose_b")?,
        },
        "conv1x1" => Op::Conv1x1,
        "softmax" => Op::Softmax {
            axis: attrs.extent("axis")?,
        },
        "reshape" => Op::Reshape {
            shape: attrs.extent_list("shape")?,
        },
        "transpose" => Op::Transpose {
            perm: attrs.extent_list("perm")?,
        },
        "slice" => Op::Slice {
            begin: attrs.extent_list("begin")?,
            end: attrs.extent_list("end")?,
        },
        "concat" => Op::Concat {
            axis: attrs.extent("axis")?,
        },
        "split" => Op::Split {
            axis: attrs.extent("axis")?,
            sizes: attrs.extent_list("sizes")?,
        },
        "pad" => Op::Pad {
            before: attrs.extent_list("before")?,
            after: attrs.extent_list("after")?,
            value: attrs.float("value")?,
        },
        "gather" => Op::Gather,
        "scatter_add_rows" => Op::ScatterAddRows {
            rows: attrs.extent("rows")?,
        },
        "broadcast" => Op::Broadcast {
            shape: attrs.extent_list("shape")?,
        },
        "cast" => Op::Cast { to: attrs.dtype("to")? },
        "select" => Op::Select,
        "identity" => Op::Identity,
        name => match ReduceOp::ALL.into_iter().find(|r| r.name() == name) {
            Some(op) => Op::Reduce {
                op,
                axes: attrs.extent_list("axes")?,
                keep_dims: attrs.boolean("keep_dims")?,
            },
            None => elementwise(name).ok_or_else(|| pos.error(format!("unknown op '{name}'")))?,
        },
    };
    attrs.finish()?;
    Ok(op)
}

/// The unary, binary or compare op called `name`, if any.
fn elementwise(name: &str) -> Option<Op> {
    if let Some(u) = UnaryOp::ALL.into_iter().find(|u| u.name() == name) {
        return Some(Op::Unary(u));
    }
    if let Some(b) = BinaryOp::ALL.into_iter().find(|b| b.name() == name) {
        return Some(Op::Binary(b));
    }
    CompareOp::ALL.into_iter().find(|c| c.name() == name).map(Op::Compare)
}

/// A `const` op from its literals and declared type.
fn const_op(line: &NodeLine) -> Result<Op> {
    let (Some((literals, open)), Some((ty, _))) = (&line.const_data, line.types.first()) else {
        return Err(line.mnemonic.1.error("const needs elements and a type"));
    };
    let expected = checked_numel(ty.shape.dims());
    if expected != Some(literals.len() as u64) {
        let needs = expected.map_or_else(|| "too many".to_string(), |n| n.to_string());
        return Err(open.error(format!(
            "const has {} element(s) but its type {ty} holds {needs}",
            literals.len()
        )));
    }
    let data = match ty.dtype {
        DType::F32 | DType::F16 => TensorData::Float(
            literals
                .iter()
                .map(|(w, p)| parse_const_float(w, *p, ty.dtype))
                .collect::<Result<_>>()?,
        ),
        DType::I32 => TensorData::I32(literals.iter().map(|(w, p)| parse_i32(w, *p)).collect::<Result<_>>()?),
        DType::Bool => TensorData::Bool(literals.iter().map(|(w, p)| parse_bool(w, *p)).collect::<Result<_>>()?),
    };
    let tensor = Tensor::new(ty.dtype, ty.shape.clone(), data).map_err(|e| open.error(e.to_string()))?;
    Ok(Op::Const {
        value: Arc::new(tensor),
    })
}

impl Attrs {
    fn take(&mut self, key: &str) -> Result<Attr> {
        match self.items.iter().position(|a| a.key == key) {
            Some(i) => Ok(self.items.remove(i)),
            None => Err(self.op_pos.error(format!("{} needs attribute '{key}'", self.op))),
        }
    }

    fn word(&mut self, key: &str) -> Result<Spanned> {
        let attr = self.take(key)?;
        match attr.value {
            AttrValue::Word(w) => Ok(w),
            AttrValue::List(_) => Err(attr
                .pos
                .error(format!("attribute '{key}' takes a single value, not a list"))),
        }
    }

    fn extent(&mut self, key: &str) -> Result<usize> {
        let (w, pos) = self.word(key)?;
        parse_extent(&w, pos)
    }

    fn boolean(&mut self, key: &str) -> Result<bool> {
        let (w, pos) = self.word(key)?;
        parse_bool(&w, pos)
    }

    fn float(&mut self, key: &str) -> Result<f32> {
        let (w, pos) = self.word(key)?;
        parse_f32(&w, pos)
    }

    fn dtype(&mut self, key: &str) -> Result<DType> {
        let (w, pos) = self.word(key)?;
        DType::from_name(&w).ok_or_else(|| pos.error(format!("unknown element type '{w}'")))
    }

    fn extent_list(&mut self, key: &str) -> Result<Vec<usize>> {
        let attr = self.take(key)?;
        match attr.value {
            AttrValue::List(items) => items.iter().map(|(w, p)| parse_extent(w, *p)).collect(),
            AttrValue::Word(_) => Err(attr.pos.error(format!("attribute '{key}' takes a list [..]"))),
        }
    }

    /// Rejects attributes the op does not have.
    fn finish(self) -> Result<()> {
        match self.items.first() {
            Some(a) => Err(a.pos.error(format!("unknown attribute '{}' for {}", a.key, self.op))),
            None => Ok(()),
        }
    }
}

/// A non-negative decimal integer no larger than [`MAX_EXTENT`].
fn parse_extent(word: &str, pos: Pos) -> Result<usize> {
    if word.is_empty() || !word.chars().all(|c| c.is_ascii_digit()) {
        return Err(pos.error(format!("bad number '{word}': expected a non-negative integer")));
    }
    match word.parse::<u64>() {
        Ok(n) if n <= MAX_EXTENT as u64 => Ok(n as usize),
        _ => Err(pos.error(format!("number {word} is too large (limit {MAX_EXTENT})"))),
    }
}

fn parse_bool(word: &str, pos: Pos) -> Result<bool> {
    match word {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(pos.error(format!("bad boolean '{word}': expected true or false"))),
    }
}

fn parse_i32(word: &str, pos: Pos) -> Result<i32> {
    let digits = word.strip_prefix('-').unwrap_or(word);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(pos.error(format!("bad number '{word}': expected an i32")));
    }
    word.parse::<i32>()
        .map_err(|_| pos.error(format!("number {word} does not fit in i32")))
}

/// A float literal: decimal (`-1.5e-3`) or `nan`, `inf`, `-inf`. A finite literal too large for
/// f32 is an error rather than infinity.
fn parse_f32(word: &str, pos: Pos) -> Result<f32> {
    match word {
        "nan" => return Ok(f32::NAN),
        "inf" => return Ok(f32::INFINITY),
        "-inf" => return Ok(f32::NEG_INFINITY),
        _ => {}
    }
    let unsigned = word.strip_prefix('-').unwrap_or(word);
    let well_formed = unsigned.starts_with(|c: char| c.is_ascii_digit())
        && unsigned
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'));
    let value = match word.parse::<f32>() {
        Ok(v) if well_formed => v,
        _ => return Err(pos.error(format!("bad number '{word}': expected a float"))),
    };
    if value.is_infinite() {
        return Err(pos.error(format!("number {word} is out of range for f32")));
    }
    Ok(value)
}

/// A const element of a floating type; values beyond the f16 range are errors for f16.
fn parse_const_float(word: &str, pos: Pos, dtype: DType) -> Result<f32> {
    let value = parse_f32(word, pos)?;
    if dtype == DType::F16 && value.is_finite() && crate::tensor::round_to_f16(value).is_infinite() {
        return Err(pos.error(format!("number {word} is out of range for f16")));
    }
    Ok(value)
}

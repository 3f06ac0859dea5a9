//! Prints a [`Program`] as MIL text in either dialect, in exactly the layout of ane.md §3.
//!
//! Layout: `program(V)`, the buildInfo line (omitted when the program has none), `{`, each function as
//! `    func NAME<OPSET>(PARAMS) {` with statements indented by 8 spaces and `    } -> (OUTS);`, then `}`
//! and a final newline. Lists are separated by `", "`. The dialect only changes spellings: rank-0 types
//! print as `fp16` (ios18) or `tensor<fp16, []>` (ios16), and so do the scalar literals inside
//! attributes and BLOBFILE references. Everything else is printed in the order stored in the model.
//!
//! Invariants: the output is a pure function of (program, dialect); it parses back to an equal program
//! (`parse_program(print_program(p, d)) == p`). Floats print in Rust's shortest round-trip form
//! (`1e-5`, `0.5`, `2.0`); integers without a decimal point, so their kind survives a round trip.

use super::ast::{Argument, Dim, Function, Literal, MilDType, MilType, Operation, Program, Value};
use super::Dialect;
use orion_core::text::quote;
use std::fmt::Write;

/// The MIL text of `program` in `dialect`.
pub fn print_program(program: &Program, dialect: Dialect) -> String {
    let mut p = Printer {
        out: String::new(),
        dialect,
    };
    p.program(program);
    p.out
}

struct Printer {
    out: String,
    dialect: Dialect,
}

impl Printer {
    fn program(&mut self, program: &Program) {
        let _ = writeln!(self.out, "program({})", program.version);
        if !program.build_info.is_empty() {
            let dict = Literal {
                ty: MilType::string_dict(),
                value: Value::Dict(
                    program
                        .build_info
                        .iter()
                        .map(|(k, v)| (Value::Str(k.clone()), Value::Str(v.clone())))
                        .collect(),
                ),
            };
            self.out.push_str("[buildInfo = ");
            self.literal(&dict);
            self.out.push_str("]\n");
        }
        self.out.push_str("{\n");
        for function in &program.functions {
            self.function(function);
        }
        self.out.push_str("}\n");
    }

    fn function(&mut self, function: &Function) {
        let _ = write!(self.out, "    func {}<{}>(", function.name, function.opset);
        for (i, param) in function.params.iter().enumerate() {
            self.separator(i);
            self.ty(&param.ty);
            let _ = write!(self.out, " {}", param.name);
        }
        self.out.push(')');
        if !function.attributes.is_empty() {
            self.out.push(' ');
            self.attributes(&function.attributes);
        }
        self.out.push_str(" {\n");
        for operation in &function.operations {
            self.operation(operation);
        }
        let _ = writeln!(self.out, "    }} -> ({});", function.outputs.join(", "));
    }

    fn operation(&mut self, op: &Operation) {
        self.out.push_str("        ");
        for (i, (name, ty)) in op.results.iter().enumerate() {
            self.separator(i);
            self.ty(ty);
            let _ = write!(self.out, " {name}");
        }
        let _ = write!(self.out, " = {}(", op.op);
        for (i, (name, arg)) in op.args.iter().enumerate() {
            self.separator(i);
            let _ = write!(self.out, "{name} = ");
            match arg {
                Argument::Var(v) => self.out.push_str(v),
                Argument::Tuple(vars) => {
                    let _ = write!(self.out, "({})", vars.join(", "));
                }
                Argument::Literal(lit) => self.literal(lit),
            }
        }
        self.out.push(')');
        if !op.attributes.is_empty() {
            self.attributes(&op.attributes);
        }
        self.out.push_str(";\n");
    }

    /// `[a = LIT, b = LIT]`.
    fn attributes(&mut self, attributes: &[(String, Literal)]) {
        self.out.push('[');
        for (i, (name, lit)) in attributes.iter().enumerate() {
            self.separator(i);
            let _ = write!(self.out, "{name} = ");
            self.literal(lit);
        }
        self.out.push(']');
    }

    fn separator(&mut self, index: usize) {
        if index > 0 {
            self.out.push_str(", ");
        }
    }

    fn ty(&mut self, ty: &MilType) {
        match ty {
            MilType::Tensor { dtype, shape } => {
                if shape.is_empty() && self.dialect == Dialect::Ios18 {
                    self.out.push_str(dtype.name());
                    return;
                }
                let _ = write!(self.out, "tensor<{}, [", dtype.name());
                for (i, d) in shape.iter().enumerate() {
                    self.separator(i);
                    match d {
                        Dim::Known(n) => {
                            let _ = write!(self.out, "{n}");
                        }
                        Dim::Unknown => self.out.push('?'),
                    }
                }
                self.out.push_str("]>");
            }
            MilType::Dict { key, value } => {
                self.out.push_str("dict<");
                self.ty(key);
                self.out.push_str(", ");
                self.ty(value);
                self.out.push('>');
            }
            MilType::Tuple(items) => {
                self.out.push_str("tuple<");
                for (i, item) in items.iter().enumerate() {
                    self.separator(i);
                    self.ty(item);
                }
                self.out.push('>');
            }
            MilType::State(inner) => {
                self.out.push_str("state<");
                self.ty(inner);
                self.out.push('>');
            }
        }
    }

    /// `TYPE(VALUE)`.
    fn literal(&mut self, lit: &Literal) {
        self.ty(&lit.ty);
        self.out.push('(');
        self.value(&lit.value);
        self.out.push(')');
    }

    fn value(&mut self, value: &Value) {
        match value {
            Value::Bool(b) => self.out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => {
                let _ = write!(self.out, "{i}");
            }
            Value::Float(f) => self.out.push_str(&format_float(*f)),
            Value::Str(s) => self.out.push_str(&quote(s)),
            Value::List(items) => {
                self.out.push('[');
                self.values(items);
                self.out.push(']');
            }
            Value::Tuple(items) => {
                self.out.push('(');
                self.values(items);
                self.out.push(')');
            }
            Value::Dict(entries) => {
                self.out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    self.separator(i);
                    self.out.push('{');
                    self.value(k);
                    self.out.push_str(", ");
                    self.value(v);
                    self.out.push('}');
                }
                self.out.push('}');
            }
            Value::Blob { path, offset } => {
                self.out.push_str("BLOBFILE(path = ");
                self.literal(&Literal::string(path.clone()));
                self.out.push_str(", offset = ");
                self.ty(&MilType::scalar(MilDType::Uint64));
                let _ = write!(self.out, "({offset}))");
            }
        }
    }

    fn values(&mut self, items: &[Value]) {
        for (i, item) in items.iter().enumerate() {
            self.separator(i);
            self.value(item);
        }
    }
}

impl std::fmt::Display for MilType {
    /// The ios18 spelling (`fp16`, `tensor<fp16, [1, 64, 1, 64]>`), for messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut p = Printer {
            out: String::new(),
            dialect: Dialect::Ios18,
        };
        p.ty(self);
        f.write_str(&p.out)
    }
}

/// Shortest text that reads back as the same `f64` and cannot be mistaken for an integer.
pub(crate) fn format_float(f: f64) -> String {
    if f.is_nan() {
        "nan".to_string()
    } else if f.is_infinite() {
        if f > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        // Debug is the shortest round-trip form and always has a '.' or an exponent ("1.0", "1e-5").
        format!("{f:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_in_round_trip_form() {
        assert_eq!(format_float(1e-5), "1e-5");
        assert_eq!(format_float(2.0), "2.0");
        assert_eq!(format_float(-0.5), "-0.5");
        assert_eq!(format_float(f64::NEG_INFINITY), "-inf");
        assert_eq!(format_float(f64::NAN), "nan");
        for v in [0.1, 1e-45, 65504.0, 1e300, -3.25e-7] {
            assert_eq!(format_float(v).parse::<f64>().ok(), Some(v));
        }
    }

    #[test]
    fn strings_escape_quotes_and_backslashes() {
        assert_eq!(quote("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
    }

    #[test]
    fn scalar_types_follow_the_dialect() {
        let lit = Literal::int32(-1);
        let mut p = Printer {
            out: String::new(),
            dialect: Dialect::Ios18,
        };
        p.literal(&lit);
        assert_eq!(p.out, "int32(-1)");
        let mut p = Printer {
            out: String::new(),
            dialect: Dialect::Ios16,
        };
        p.literal(&lit);
        assert_eq!(p.out, "tensor<int32, []>(-1)");
    }
}

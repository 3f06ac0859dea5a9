//! The MIL function under construction: fresh names, named consts, shape bookkeeping, view folding,
//! output naming and dead-code removal.
//!
//! Invariants:
//! - every variable has one definition and a known type; an operation's `name` attribute equals its
//!   result name; internal names are `v<n>_<op>` (operations) and `c<n>_<what>` (consts), so they never
//!   collide with the I/O names `aNN_…`/`zNN_…` chosen by the caller;
//! - every non-tensor argument is a named const (C12), and equal consts are declared once;
//! - view folding: a transpose of a transpose becomes one transpose of the source (or nothing, when the
//!   permutations cancel); a transpose that keeps the order of the non-unit axes becomes a reshape; a
//!   reshape of a reshape reshapes the source. Folding only ever removes work; the intermediate
//!   variables it bypasses are removed by [`Emitter::finish`]'s dead-code pass (C14: only live names
//!   are returned);
//! - every tensor result is checked against the chip's extent caps (C26) when it is created.

use std::collections::{HashMap, HashSet};

use crate::mil::{Argument, Function, Literal, MilDType, MilType, Operation, Param};

/// Extent caps of the chip (C26), checked on every operation result.
#[derive(Debug, Clone, Copy)]
pub(super) struct Caps {
    pub max_spatial: usize,
    pub max_channels: usize,
}

/// Where a variable came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Param,
    Const,
    Op,
}

/// How a variable relates to an earlier one, for folding.
#[derive(Debug, Clone, Default)]
struct View {
    /// `var = transpose(src, perm)` (possibly emitted as a reshape).
    transposed_from: Option<(String, [usize; 4])>,
    /// `var = reshape(src, …)` with `src` not itself a reshape.
    reshaped_from: Option<String>,
}

/// Builds one MIL function.
#[derive(Debug)]
pub(super) struct Emitter {
    function: Function,
    types: HashMap<String, (MilDType, Vec<usize>)>,
    origins: HashMap<String, Origin>,
    views: HashMap<String, View>,
    /// Role and literal (debug form) → the const already declaring it.
    consts: HashMap<String, String>,
    next: usize,
    caps: Caps,
}

impl Emitter {
    pub fn new(name: &str, opset: &str, caps: Caps) -> Emitter {
        Emitter {
            function: Function::new(name, opset),
            types: HashMap::new(),
            origins: HashMap::new(),
            views: HashMap::new(),
            consts: HashMap::new(),
            next: 0,
            caps,
        }
    }

    /// Element type and extents of `var` (empty for scalars and unknown names).
    pub fn shape(&self, var: &str) -> Vec<usize> {
        self.types.get(var).map(|(_, s)| s.clone()).unwrap_or_default()
    }

    /// Element type of `var` (fp16 for unknown names).
    pub fn dtype(&self, var: &str) -> MilDType {
        self.types.get(var).map(|(d, _)| *d).unwrap_or(MilDType::Fp16)
    }

    /// The rank-4 shape of `var`, or an error naming it.
    pub fn shape4(&self, var: &str) -> Result<[usize; 4], String> {
        let s = self.shape(var);
        <[usize; 4]>::try_from(s.as_slice()).map_err(|_| format!("internal: {var} has shape {s:?}, not rank 4"))
    }

    /// Declares a function parameter.
    pub fn param(&mut self, name: &str, dtype: MilDType, shape: &[usize]) -> Result<String, String> {
        self.check_caps(name, shape)?;
        self.function.params.push(Param {
            name: name.to_string(),
            ty: MilType::tensor(dtype, shape),
        });
        self.define(name, dtype, shape, Origin::Param);
        Ok(name.to_string())
    }

    /// A named const holding `value`, declared once per distinct (role, literal) pair so that a name
    /// always says what the const is for.
    pub fn constant(&mut self, what: &str, value: Literal) -> String {
        let key = format!("{what}:{value:?}");
        if let Some(name) = self.consts.get(&key) {
            return name.clone();
        }
        let name = format!("c{}_{what}", self.bump());
        let (dtype, shape) = value.ty.known_tensor().unwrap_or((MilDType::String, Vec::new()));
        self.function.operations.push(Operation::constant(&name, value));
        self.define(&name, dtype, &shape, Origin::Const);
        self.consts.insert(key, name.clone());
        name
    }

    pub fn int_vec(&mut self, what: &str, values: &[usize]) -> String {
        let ints: Vec<i64> = values.iter().map(|&v| v as i64).collect();
        self.constant(what, Literal::int32_vec(&ints))
    }

    /// An int32 scalar const; `value` is an axis or a count (far below `i32::MAX`), saturated otherwise.
    pub fn int_scalar(&mut self, what: &str, value: usize) -> String {
        self.constant(what, Literal::int32(i32::try_from(value).unwrap_or(i32::MAX)))
    }

    pub fn bool_scalar(&mut self, what: &str, value: bool) -> String {
        self.constant(what, Literal::bool(value))
    }

    pub fn string(&mut self, what: &str, value: &str) -> String {
        self.constant(what, Literal::string(value))
    }

    /// An fp16 scalar const (the value is expected to be fp16-representable already).
    pub fn fp16_scalar(&mut self, what: &str, value: f64) -> String {
        self.constant(what, Literal::float(MilDType::Fp16, value))
    }

    /// Appends `result = op(args)` with the given result type (arguments in alphabetical order, as
    /// peers write them); checks the result against the caps.
    pub fn op(
        &mut self,
        op: &str,
        mut args: Vec<(String, Argument)>,
        dtype: MilDType,
        shape: &[usize],
    ) -> Result<String, String> {
        let name = format!("v{}_{op}", self.bump());
        self.check_caps(op, shape)?;
        args.sort_by(|a, b| a.0.cmp(&b.0));
        self.function
            .operations
            .push(Operation::new(&name, MilType::tensor(dtype, shape), op, args));
        self.define(&name, dtype, shape, Origin::Op);
        Ok(name)
    }

    /// `x` with its axes permuted (output axis i = input axis `perm[i]`), folded as described above.
    pub fn transpose(&mut self, x: &str, perm: [usize; 4]) -> Result<String, String> {
        let (src, total) = match self.views.get(x).and_then(|v| v.transposed_from.clone()) {
            Some((src, first)) => (src, compose(first, perm)),
            None => (x.to_string(), perm),
        };
        if total == [0, 1, 2, 3] {
            return Ok(src);
        }
        let from = self.shape4(&src)?;
        let to = total.map(|axis| from[axis]);
        let result = if keeps_unit_free_order(&from, total) {
            self.reshape(&src, &to)?
        } else {
            let perm_const = self.int_vec("perm", &total);
            let dtype = self.dtype(&src);
            let args = vec![var("perm", &perm_const), var("x", &src)];
            self.op("transpose", args, dtype, &to)?
        };
        if result != src {
            self.views.entry(result.clone()).or_default().transposed_from = Some((src, total));
        }
        Ok(result)
    }

    /// True when [`Emitter::transpose`] of `x` by `perm` emits no transpose operation (it cancels or
    /// becomes a reshape).
    pub fn transpose_is_free(&self, x: &str, perm: [usize; 4]) -> bool {
        let (src, total) = match self.views.get(x).and_then(|v| v.transposed_from.clone()) {
            Some((src, first)) => (src, compose(first, perm)),
            None => (x.to_string(), perm),
        };
        match self.shape4(&src) {
            Ok(from) => keeps_unit_free_order(&from, total),
            Err(_) => false,
        }
    }

    /// `x` with a new shape of equal element count (nothing when the shape is unchanged).
    pub fn reshape(&mut self, x: &str, shape: &[usize]) -> Result<String, String> {
        if self.shape(x) == shape {
            return Ok(x.to_string());
        }
        let src = self
            .views
            .get(x)
            .and_then(|v| v.reshaped_from.clone())
            .unwrap_or_else(|| x.to_string());
        if self.shape(&src) == shape {
            return Ok(src);
        }
        let shape_const = self.int_vec("shape", shape);
        let dtype = self.dtype(&src);
        let args = vec![var("shape", &shape_const), var("x", &src)];
        let result = self.op("reshape", args, dtype, shape)?;
        self.views.entry(result.clone()).or_default().reshaped_from = Some(src);
        Ok(result)
    }

    /// Finishes the function: names the outputs (`(variable, output name)` in return order) by renaming
    /// the producing operation or, for parameters, consts and repeated outputs, by an `identity`; then
    /// removes every operation that does not feed an output.
    pub fn finish(mut self, outputs: &[(String, String)]) -> Result<Function, String> {
        let mut renamed: HashMap<String, String> = HashMap::new();
        for (var_name, out_name) in outputs {
            let current = renamed.get(var_name).cloned().unwrap_or_else(|| var_name.clone());
            let is_op = self.origins.get(&current) == Some(&Origin::Op);
            let already_output = self.function.outputs.contains(&current);
            if is_op && !already_output && !renamed.contains_key(var_name) {
                self.rename(&current, out_name);
                renamed.insert(var_name.clone(), out_name.clone());
            } else {
                let dtype = self.dtype(&current);
                let shape = self.shape(&current);
                self.function.operations.push(Operation::new(
                    out_name,
                    MilType::tensor(dtype, &shape),
                    "identity",
                    vec![var("x", &current)],
                ));
            }
            self.function.outputs.push(out_name.clone());
        }
        self.remove_dead();
        Ok(self.function)
    }

    fn rename(&mut self, from: &str, to: &str) {
        for op in &mut self.function.operations {
            for (name, _) in &mut op.results {
                if name == from {
                    *name = to.to_string();
                }
            }
            for (attr, lit) in &mut op.attributes {
                if attr == "name" && *lit == Literal::string(from) {
                    *lit = Literal::string(to);
                }
            }
            for (_, arg) in &mut op.args {
                match arg {
                    Argument::Var(v) if v == from => *v = to.to_string(),
                    Argument::Tuple(vars) => {
                        for v in vars.iter_mut().filter(|v| *v == from) {
                            *v = to.to_string();
                        }
                    }
                    Argument::Var(_) | Argument::Literal(_) => {}
                }
            }
        }
    }

    fn remove_dead(&mut self) {
        let mut live: HashSet<String> = self.function.outputs.iter().cloned().collect();
        let mut keep = vec![false; self.function.operations.len()];
        for (i, op) in self.function.operations.iter().enumerate().rev() {
            if !op.results.iter().any(|(n, _)| live.contains(n)) {
                continue;
            }
            keep[i] = true;
            for (_, arg) in &op.args {
                match arg {
                    Argument::Var(v) => {
                        live.insert(v.clone());
                    }
                    Argument::Tuple(vars) => live.extend(vars.iter().cloned()),
                    Argument::Literal(_) => {}
                }
            }
        }
        let mut index = 0;
        self.function.operations.retain(|_| {
            index += 1;
            keep[index - 1]
        });
    }

    fn define(&mut self, name: &str, dtype: MilDType, shape: &[usize], origin: Origin) {
        self.types.insert(name.to_string(), (dtype, shape.to_vec()));
        self.origins.insert(name.to_string(), origin);
    }

    fn bump(&mut self) -> usize {
        self.next += 1;
        self.next - 1
    }

    /// C26: channel (axis 1) and spatial (axes 2 and 3) extents of a rank-4 tensor.
    fn check_caps(&self, what: &str, shape: &[usize]) -> Result<(), String> {
        if shape.len() != 4 {
            return Ok(());
        }
        if shape[1] > self.caps.max_channels {
            return Err(format!(
                "{what} result {shape:?}: {} channels exceed the chip's cap of {} (limits.max_channels, C26); \
                 split the computation into chunks",
                shape[1], self.caps.max_channels
            ));
        }
        if let Some(&extent) = shape[2..].iter().find(|&&e| e > self.caps.max_spatial) {
            return Err(format!(
                "{what} result {shape:?}: extent {extent} exceeds the chip's spatial cap of {} \
                 (limits.max_spatial, C26); split the computation into chunks",
                self.caps.max_spatial
            ));
        }
        Ok(())
    }
}

/// `(arg, Var(name))`.
pub(super) fn var(arg: &str, name: &str) -> (String, Argument) {
    (arg.to_string(), Argument::Var(name.to_string()))
}

/// The permutation of applying `first`, then `second`.
fn compose(first: [usize; 4], second: [usize; 4]) -> [usize; 4] {
    second.map(|axis| first[axis])
}

/// True when permuting `from` by `perm` only moves unit axes, i.e. is a reshape.
fn keeps_unit_free_order(from: &[usize; 4], perm: [usize; 4]) -> bool {
    let moved: Vec<usize> = perm.iter().copied().filter(|&axis| from[axis] != 1).collect();
    moved.windows(2).all(|w| w[0] < w[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emitter() -> Emitter {
        Emitter::new(
            "main",
            "ios18",
            Caps {
                max_spatial: 16_384,
                max_channels: 65_536,
            },
        )
    }

    #[test]
    fn transposes_fold_and_cancel() {
        let mut em = emitter();
        let x = em.param("a00_x", MilDType::Fp16, &[1, 8, 1, 4]).unwrap();
        let internal = em.transpose(&x, [0, 2, 3, 1]).unwrap();
        assert_eq!(em.shape(&internal), vec![1, 1, 4, 8]);
        let back = em.transpose(&internal, [0, 3, 1, 2]).unwrap();
        assert_eq!(back, x, "inverse permutations must cancel to the source");
    }

    #[test]
    fn unit_axis_transpose_is_a_reshape() {
        let mut em = emitter();
        let x = em.param("a00_w", MilDType::Fp16, &[1, 8, 1, 4]).unwrap();
        let y = em.transpose(&x, [0, 2, 1, 3]).unwrap();
        let f = em.finish(&[(y, "z00_y".to_string())]).unwrap();
        assert_eq!(f.operations.iter().filter(|o| o.op == "reshape").count(), 1);
        assert!(f.operations.iter().all(|o| o.op != "transpose"));
    }

    #[test]
    fn outputs_rename_producers_and_dead_code_goes() {
        let mut em = emitter();
        let x = em.param("a00_x", MilDType::Fp16, &[1, 1, 2, 2]).unwrap();
        let _dead = em.op("exp", vec![var("x", &x)], MilDType::Fp16, &[1, 1, 2, 2]).unwrap();
        let live = em
            .op("relu", vec![var("x", &x)], MilDType::Fp16, &[1, 1, 2, 2])
            .unwrap();
        let f = em
            .finish(&[(live.clone(), "z00_a".into()), (live, "z01_b".into())])
            .unwrap();
        let ops: Vec<(&str, &str)> = f
            .operations
            .iter()
            .map(|o| (o.op.as_str(), o.results[0].0.as_str()))
            .collect();
        assert_eq!(ops, vec![("relu", "z00_a"), ("identity", "z01_b")]);
        assert_eq!(f.operations[0].attribute("name"), Some(&Literal::string("z00_a")));
    }

    #[test]
    fn caps_are_enforced() {
        let mut em = emitter();
        let err = em.param("a00_x", MilDType::Fp16, &[1, 1, 1, 20_000]).unwrap_err();
        assert!(err.contains("C26") && err.contains("20000"), "{err}");
    }
}

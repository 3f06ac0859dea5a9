//! Finite-difference checking of `autodiff::grad` against the reference interpreter, and the input
//! generators the checks need (kink-free, tie-free values).
//!
//! For a graph with outputs `y_j`, random cotangents `r_j` define the scalar `L = Σ_j Σ y_j·r_j`.
//! The analytic gradient comes from `grad(g, wrt, Seed::Cotangents)` fed with the `r_j`; the numeric
//! one is the central difference `(L(x + h·e_i) − L(x − h·e_i)) / (x_i⁺ − x_i⁻)` for every element
//! `i` of every `wrt` input, with `L` summed in f64 from the interpreter's f32 outputs.
//!
//! Choice of `h` and tolerances (f32 evaluation, inputs and cotangents of order one):
//! - truncation error of the central difference is `h²/6 · |∂³L|`, about 2e-5·|∂³L| for h = 1e-2;
//! - rounding error is `≈ c·ε·Σ|y·r| / h` with ε = 2^-24 ≈ 6e-8: each output carries a few ulp of
//!   error and the sums here have at most ~50 terms of order one, so about 4·6e-8·50 / 1e-2 ≈ 1e-3
//!   in the worst case and far less typically (the errors are not all of one sign);
//! - h = 1e-2 balances the two (the optimum `(3ε|L|/|∂³L|)^(1/3)` is ~1e-2 for these magnitudes);
//! - hence abs 2e-3 and rel 1e-2 by default. A wrong VJP (a transposed weight gradient, a missing
//!   factor, a missing accumulation) is off by O(1), far outside this band.
//!
//! Inputs are kept away from kinks by the generators: relu and friends get values at least 0.2 from
//! 0, maximum/minimum/reduce_max get values on grids at least 0.05 apart (> h), so no perturbation
//! crosses a tie.

use orion_core::autodiff::{grad, Seed};
use orion_core::interp::tolerance::{compare, Tolerance};
use orion_core::interp::{interpret, Precision};
use orion_core::{DType, Graph, Tensor, TensorType};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Step and tolerance of one finite-difference check.
#[derive(Clone, Copy, Debug)]
pub struct FdConfig {
    pub h: f32,
    pub tol: Tolerance,
}

impl FdConfig {
    /// f32 graphs of order-one values; see the module header for the derivation.
    pub const DEFAULT: FdConfig = FdConfig {
        h: 1e-2,
        tol: Tolerance { abs: 2e-3, rel: 1e-2 },
    };
}

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// f32 tensor with elements uniform in `lo..hi`.
pub fn uniform(dims: &[usize], lo: f32, hi: f32, seed: u64) -> Tensor {
    let mut r = rng(seed);
    let n: usize = dims.iter().product();
    Tensor::f32(dims.to_vec(), (0..n).map(|_| r.gen_range(lo..hi)).collect())
}

/// f32 tensor with magnitudes in `0.2..1.0` and random signs: at least 0.2 from zero.
pub fn away_from_zero(dims: &[usize], seed: u64) -> Tensor {
    let mut r = rng(seed);
    let n: usize = dims.iter().product();
    let values = (0..n)
        .map(|_| {
            let m: f32 = r.gen_range(0.2..1.0);
            if r.gen_bool(0.5) {
                m
            } else {
                -m
            }
        })
        .collect();
    Tensor::f32(dims.to_vec(), values)
}

/// f32 tensor of pairwise distinct values `offset + 0.1·k` (k a shuffled range centred on 0): any
/// two elements differ by at least 0.1, and differ from any value of another grid with a different
/// `offset` (mod 0.1) by at least that offset difference.
pub fn distinct(dims: &[usize], offset: f32, seed: u64) -> Tensor {
    let mut r = rng(seed);
    let n: usize = dims.iter().product();
    let mut ks: Vec<i32> = (0..n as i32).map(|k| k - n as i32 / 2).collect();
    ks.shuffle(&mut r);
    Tensor::f32(dims.to_vec(), ks.iter().map(|&k| offset + 0.1 * k as f32).collect())
}

/// Random cotangent for an output: uniform in -1..1 for floats (in the output's dtype), zeros for
/// i32/bool outputs (which `grad` ignores).
fn random_cotangent(ty: &TensorType, seed: u64) -> Tensor {
    if !ty.dtype.is_float() {
        return Tensor::zeros(ty);
    }
    let values = uniform(ty.shape.dims(), -1.0, 1.0, seed).to_f32_vec();
    match ty.dtype {
        DType::F16 => Tensor::f16(ty.shape.clone(), values),
        _ => Tensor::f32(ty.shape.clone(), values),
    }
}

/// `L = Σ_j Σ y_j·r_j` over the float outputs, in f64.
fn weighted_sum(outputs: &[Tensor], cotangents: &[Tensor]) -> f64 {
    outputs
        .iter()
        .zip(cotangents)
        .filter(|(y, _)| y.dtype().is_float())
        .flat_map(|(y, r)| y.to_f32_vec().into_iter().zip(r.to_f32_vec()))
        .map(|(y, r)| y as f64 * r as f64)
        .sum()
}

/// The analytic gradients of `L` w.r.t. `wrt` (in order), after checking that the gradient graph
/// reproduces the forward outputs exactly.
pub fn analytic_gradients(g: &Graph, wrt: &[&str], inputs: &[Tensor], cotangents: &[Tensor]) -> Vec<Tensor> {
    let gg = grad(g, wrt, Seed::Cotangents).unwrap_or_else(|e| panic!("grad failed: {e}"));
    orion_core::verify::verify(&gg).unwrap_or_else(|e| panic!("gradient graph does not verify: {e}"));
    let forward = interpret(g, inputs, Precision::F32).unwrap_or_else(|e| panic!("forward failed: {e}"));
    let mut all_inputs = inputs.to_vec();
    all_inputs.extend(cotangents.iter().cloned());
    let results = interpret(&gg, &all_inputs, Precision::F32).unwrap_or_else(|e| panic!("backward failed: {e}"));
    let n_out = g.outputs().len();
    assert_eq!(results.len(), n_out + wrt.len());
    for (j, (a, b)) in results.iter().zip(&forward).enumerate() {
        assert!(a.bitwise_eq(b), "forward output {j} changed by grad");
    }
    results[n_out..].to_vec()
}

/// Central-difference gradient of `L` w.r.t. the graph input at position `index`.
pub fn numeric_gradient(g: &Graph, inputs: &[Tensor], cotangents: &[Tensor], index: usize, h: f32) -> Tensor {
    let x = &inputs[index];
    let base = x.to_f32_vec();
    let loss_at = |values: Vec<f32>| -> f64 {
        let mut perturbed = inputs.to_vec();
        perturbed[index] = Tensor::new(x.dtype(), x.shape().clone(), orion_core::TensorData::Float(values))
            .unwrap_or_else(|e| panic!("{e}"));
        let outputs = interpret(g, &perturbed, Precision::F32).unwrap_or_else(|e| panic!("forward failed: {e}"));
        weighted_sum(&outputs, cotangents)
    };
    let mut numeric = Vec::with_capacity(base.len());
    for i in 0..base.len() {
        let mut plus = base.clone();
        let mut minus = base.clone();
        plus[i] += h;
        minus[i] -= h;
        // the perturbation actually applied (after f32 or f16 rounding of x ± h)
        let step = round_like(x.dtype(), plus[i]) as f64 - round_like(x.dtype(), minus[i]) as f64;
        numeric.push(((loss_at(plus) - loss_at(minus)) / step) as f32);
    }
    Tensor::new(x.dtype(), x.shape().clone(), orion_core::TensorData::Float(numeric)).unwrap_or_else(|e| panic!("{e}"))
}

fn round_like(dtype: DType, v: f32) -> f32 {
    match dtype {
        DType::F16 => orion_core::tensor::round_to_f16(v),
        _ => v,
    }
}

/// Checks the gradient of every `wrt` input against central differences; `inputs` are given for
/// every graph input in order. Also requires some gradient element to be clearly non-zero, so that
/// a check cannot pass vacuously.
pub fn check_grad(g: &Graph, wrt: &[&str], inputs: &[Tensor], cfg: FdConfig) {
    let cotangents: Vec<Tensor> = g
        .outputs()
        .iter()
        .enumerate()
        .map(|(j, o)| random_cotangent(g.ty(o.value), 1000 + j as u64))
        .collect();
    let analytic = analytic_gradients(g, wrt, inputs, &cotangents);
    for (name, got) in wrt.iter().zip(&analytic) {
        let index = g
            .inputs()
            .position(|(n, _, _)| n == *name)
            .unwrap_or_else(|| panic!("no input {name}"));
        let numeric = numeric_gradient(g, inputs, &cotangents, index, cfg.h);
        if let Err(message) = compare(got, &numeric, cfg.tol) {
            panic!("gradient w.r.t. {name}: {message}\nanalytic {got:?}\nnumeric  {numeric:?}");
        }
        let largest = numeric.to_f32_vec().iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(
            largest > 1e-2,
            "gradient w.r.t. {name} is (nearly) zero: the check is vacuous"
        );
    }
}

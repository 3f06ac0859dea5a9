//! Orion's benchmarks: suites that measure (never assume), a result model with JSON and table forms,
//! and the regression gate against a saved baseline. The `orion bench` command is a thin shell over it.
//!
//! - `options`: the request ([`BenchOptions`]) and its resolution into a [`Plan`] (defaults per suite);
//! - `measure`: medians, timed iterations, the [`measure::Instrumented`] backend (records programs,
//!   reads the simulated ANE's cost reports, injects the artificial slowdown);
//! - suites: `kernels` (each program type), `inference` (prefill, first token, decode),
//!   `training` (measured per-phase step breakdown), `compile` (lowering every ANE program);
//! - `result`: [`BenchRun`] and its JSON; `compare`: the baseline gate; `table`: text rendering.
//!
//! Invariants: every figure comes from a clock or a count on the graph that ran; timing figures are
//! medians over repeated runs after a warm-up; FLOPs follow `orion_core::flops`.

pub mod compare;
pub mod compile;
pub mod error;
pub mod inference;
pub mod kernels;
pub mod measure;
pub mod options;
pub mod result;
pub mod table;
pub mod training;

pub use compare::{compare, Comparison, FigureChange, Verdict};
pub use error::{BenchError, Result};
pub use options::{BenchOptions, Plan};
pub use result::{BenchRun, Better, Device, Figure, ProductsChoice, Row, RunConfig, Strategy, Suite, WeightsChoice};

/// Resolves `options` and runs the suite.
pub fn run(options: &BenchOptions) -> Result<BenchRun> {
    let plan = Plan::resolve(options)?;
    let mut run = match plan.config.suite {
        Suite::Kernels => kernels::run_kernels(&plan),
        Suite::Inference => inference::run_inference(&plan),
        Suite::Training => training::run_training(&plan),
        Suite::Compile => compile::run_compile(&plan),
    }?;
    if plan.config.suite == Suite::Inference && plan.config.device == Device::Cpu {
        run.notes.push(format!(
            "cpu matrix-vector products: {}",
            orion_core::cpu::kernels::gemv_kernel()
        ));
    }
    if plan.config.products == ProductsChoice::Bf16 {
        if orion_core::cpu::kernels::bf16_products_available() {
            run.notes.push(format!(
                "products bf16: {}",
                orion_core::cpu::kernels::bf16_product_kernel()
            ));
        } else {
            run.notes.push(
                "products bf16: this CPU has no AVX512_BF16, so every product ran in f32 (as with --products f32)"
                    .into(),
            );
        }
    }
    Ok(run)
}

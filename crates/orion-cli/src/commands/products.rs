//! `--products f32|bf16`, the arithmetic of the CPU's large matrix products, as `orion train`,
//! `orion generate` and `orion bench` take it.

use clap::ValueEnum;
use orion_core::cpu::{CpuBackend, CpuOptions, ProductPrecision};

/// The arithmetic of the CPU's large matrix products.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProductsArg {
    /// f32 operands and f32 multiply-adds.
    F32,
    /// Both operands rounded to bfloat16, products summed in f32: about twice the multiply-add rate
    /// where the CPU has AVX512_BF16 (elsewhere the same as f32).
    Bf16,
}

impl ProductsArg {
    pub fn precision(self) -> ProductPrecision {
        match self {
            ProductsArg::F32 => ProductPrecision::F32,
            ProductsArg::Bf16 => ProductPrecision::Bf16,
        }
    }

    /// The CPU backend computing its products in this precision.
    pub fn cpu_backend(self) -> CpuBackend {
        CpuBackend::new(CpuOptions {
            products: self.precision(),
            ..CpuOptions::default()
        })
    }
}

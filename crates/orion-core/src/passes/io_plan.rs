//! I/O planning analysis: the buffer size to allocate for every graph input and output.
//!
//! A slot's dense size is its element count times `DType::size_bytes`. Its allocation is
//! `max(dense, min_surface_bytes)` rounded up to a multiple of `align_bytes`; when `uniform` (the
//! device requires every buffer on one side to have the same size) every input gets the largest
//! input allocation and every output the largest output allocation. Totals are the sums over a
//! side. This analysis only plans sizes; it allocates nothing and does not change the graph.

use crate::error::{CoreError, Result};
use crate::graph::Graph;
use crate::types::TensorType;
use std::fmt;

/// How buffers are sized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoPlanOptions {
    /// Smallest buffer the device accepts.
    pub min_surface_bytes: u64,
    /// Buffer sizes are multiples of this (must be at least 1).
    pub align_bytes: u64,
    /// Every buffer of one side gets the same size.
    pub uniform: bool,
}

impl Default for IoPlanOptions {
    fn default() -> IoPlanOptions {
        IoPlanOptions {
            min_surface_bytes: 49_152,
            align_bytes: 64,
            uniform: true,
        }
    }
}

/// One graph input or output and its buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoSlot {
    pub name: String,
    pub ty: TensorType,
    /// Dense size of the value.
    pub bytes: u64,
    /// Size of the buffer to allocate (at least `bytes`).
    pub alloc_bytes: u64,
}

/// Buffers for every input (declaration order) and output (output order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoPlan {
    pub options: IoPlanOptions,
    pub inputs: Vec<IoSlot>,
    pub outputs: Vec<IoSlot>,
    /// Sum of the input allocations.
    pub input_alloc_bytes: u64,
    /// Sum of the output allocations.
    pub output_alloc_bytes: u64,
}

/// Plans the input and output buffers of `g`.
pub fn io_plan(g: &Graph, options: &IoPlanOptions) -> Result<IoPlan> {
    if options.align_bytes == 0 {
        return Err(CoreError::Pass {
            pass: "io-plan".to_string(),
            message: "align_bytes must be at least 1".to_string(),
        });
    }
    let inputs = g.inputs().map(|(name, _, ty)| (name.to_string(), ty.clone())).collect();
    let outputs = g
        .outputs()
        .iter()
        .map(|o| Ok((o.name.clone(), g.try_ty(o.value)?.clone())))
        .collect::<Result<Vec<_>>>()?;
    let inputs = plan_side(inputs, options);
    let outputs = plan_side(outputs, options);
    Ok(IoPlan {
        options: options.clone(),
        input_alloc_bytes: inputs.iter().map(|s| s.alloc_bytes).sum(),
        output_alloc_bytes: outputs.iter().map(|s| s.alloc_bytes).sum(),
        inputs,
        outputs,
    })
}

fn plan_side(values: Vec<(String, TensorType)>, options: &IoPlanOptions) -> Vec<IoSlot> {
    let mut slots: Vec<IoSlot> = values
        .into_iter()
        .map(|(name, ty)| {
            let bytes = ty.size_bytes() as u64;
            let alloc_bytes = round_up(bytes.max(options.min_surface_bytes), options.align_bytes);
            IoSlot {
                name,
                ty,
                bytes,
                alloc_bytes,
            }
        })
        .collect();
    if options.uniform {
        let widest = slots.iter().map(|s| s.alloc_bytes).max().unwrap_or(0);
        slots.iter_mut().for_each(|s| s.alloc_bytes = widest);
    }
    slots
}

/// `bytes` rounded up to a multiple of `align` (`align >= 1`).
fn round_up(bytes: u64, align: u64) -> u64 {
    bytes.div_ceil(align).saturating_mul(align)
}

impl fmt::Display for IoPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        let mode = if o.uniform { "uniform" } else { "per-slot" };
        writeln!(
            f,
            "io plan ({mode}, min {} bytes, align {} bytes):",
            o.min_surface_bytes, o.align_bytes
        )?;
        for (side, slots) in [("input", &self.inputs), ("output", &self.outputs)] {
            for s in slots {
                writeln!(
                    f,
                    "  {side} {:?} {}: {} bytes -> {} allocated",
                    s.name, s.ty, s.bytes, s.alloc_bytes
                )?;
            }
        }
        writeln!(
            f,
            "  total: inputs {} bytes, outputs {} bytes",
            self.input_alloc_bytes, self.output_alloc_bytes
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::DType;

    fn sample() -> Graph {
        let mut g = Graph::new("io");
        let x = g.input("x", TensorType::new(DType::F32, [4, 8])).unwrap();
        let _big = g.input("big", TensorType::new(DType::F16, [100, 301])).unwrap();
        g.set_output("y", x).unwrap();
        g
    }

    #[test]
    fn uniform_sizes_take_the_largest_slot() {
        let plan = io_plan(&sample(), &IoPlanOptions::default()).unwrap();
        // x: 4*8*4 = 128 B -> raised to 49152 (a multiple of 64); big: 100*301*2 = 60200 B ->
        // 60224 (941 * 64). Uniform: both inputs get 60224. The output y alone: 49152.
        let bytes: Vec<u64> = plan.inputs.iter().map(|s| s.bytes).collect();
        assert_eq!(bytes, vec![128, 60200]);
        assert!(plan.inputs.iter().all(|s| s.alloc_bytes == 60224));
        assert_eq!(plan.input_alloc_bytes, 2 * 60224);
        assert_eq!(plan.outputs[0].alloc_bytes, 49152);
        assert_eq!(plan.output_alloc_bytes, 49152);
    }

    #[test]
    fn per_slot_sizes_when_not_uniform() {
        let options = IoPlanOptions {
            min_surface_bytes: 0,
            align_bytes: 100,
            uniform: false,
        };
        let plan = io_plan(&sample(), &options).unwrap();
        let alloc: Vec<u64> = plan.inputs.iter().map(|s| s.alloc_bytes).collect();
        assert_eq!(alloc, vec![200, 60200]);
    }

    #[test]
    fn zero_alignment_is_an_error() {
        let options = IoPlanOptions {
            align_bytes: 0,
            ..IoPlanOptions::default()
        };
        assert!(io_plan(&sample(), &options).is_err());
    }
}

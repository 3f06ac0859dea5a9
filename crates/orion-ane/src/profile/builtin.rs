//! The built-in profiles of M1..M5, every value with its source (catalogue id, ane.md section).
//!
//! Settings shared by all chips come from [`shared`]; each chip function sets only what differs and the
//! sources for it. `[C]` items (contradicted evidence) take the conservative setting: the one under which
//! generated programs still work if the pessimistic report is true. `MB` here means 10⁶ bytes, as the
//! sources quote SRAM sizes (the knee is fuzzy to far more than the MB/MiB difference).

use std::collections::BTreeMap;

use super::{ChipId, ChipProfile, CostModel, IoBindingOrder, Limits, MilDialect, Numerics, OpSupport};

const MB: u64 = 1_000_000;

/// The built-in profile of `id`.
pub(super) fn profile(id: ChipId) -> ChipProfile {
    match id {
        ChipId::M1 => m1(),
        ChipId::M2 => m2(),
        ChipId::M3 => m3(),
        ChipId::M4 => m4(),
        ChipId::M5 => m5(),
    }
}

/// Values that differ between chips; everything else comes from [`shared`].
struct ChipValues {
    id: ChipId,
    arch: &'static str,
    name: &'static str,
    max_extent: usize,
    last_axis_alignment_bytes: usize,
    sram_budget_bytes: u64,
    dialect: MilDialect,
    fp32_io_cast: bool,
    multi_record_blobs: bool,
    sin_cos: bool,
    /// C36: the width-offset slice gain (pre-A16 chips).
    width_offset_slice_gain: bool,
    cost: CostModel,
    sources: [(&'static str, &'static str); 16],
}

/// Builds a profile from chip-specific values plus the settings every chip shares.
fn shared(v: ChipValues) -> ChipProfile {
    let limits = Limits {
        max_spatial: v.max_extent,
        max_contraction: v.max_extent,
        max_channels: 65_536,
        min_surface_bytes: 49_152,
        surface_alignment_bytes: 64,
        last_axis_alignment_bytes: v.last_axis_alignment_bytes,
        uniform_io_sizes: true,
        io_binding_order: IoBindingOrder::Alphabetical,
        compile_budget: 100,
        sram_budget_bytes: v.sram_budget_bytes,
        dialect: v.dialect,
        ops: OpSupport {
            concat: false,
            gelu: false,
            sdpa_mask_honoured: false,
            conv_bias: false,
            fp32_io_cast: v.fp32_io_cast,
            multi_record_blobs: v.multi_record_blobs,
            matmul_inner_multiple: 32,
            sin_cos: v.sin_cos,
            layer_norm: false,
            weights_reload_takes_effect: false,
            baked_linear_as_conv: true,
        },
        numerics: Numerics {
            matmul_overflow_to_inf: true,
            width_offset_slice_gain: v.width_offset_slice_gain,
        },
    };
    let shared_sources = [
        ("limits.max_channels", "C26 [V] (ane.md §5): channels up to 65,536 (ANEForge)"),
        ("limits.min_surface_bytes", "C21 [C] (ane.md §2, §5): Orion saw < ~49 KB fail (0x1d), maderix/PR #22 ran 8 KB; conservative: allocate >= 49,152 B"),
        ("limits.surface_alignment_bytes", "ane.md §2: strides multiple of 0x40 (tinygrad), 64-byte row stride (H3)"),
        ("limits.uniform_io_sizes", "C18 [C] (ane.md §2): Orion needs equal AllocSize per side; maderix #47 (M1) wants ascending/descending; conservative: equal sizes (probe on M1)"),
        ("limits.io_binding_order", "C19 [C] (ane.md §2): Orion: ascending name order (only permutation that worked); positional evidence cannot tell the orders apart; names are chosen so both orders coincide"),
        ("limits.compile_budget", "C06 [V] (ane.md §5, §8): ~119 compiles per process (119-132 on M4); budget 100 as maderix MAX_COMPILES"),
        ("limits.ops.concat", "C09 [C] (ane.md §5): rejected per Orion #1, works per maderix/pmetal/ANEForge; conservative: off until a probe says otherwise"),
        ("limits.ops.gelu", "C10 [C] (ane.md §5): rejected per Orion #10, native per ANEForge; conservative: emit the tanh form"),
        ("limits.ops.sdpa_mask_honoured", "C11 [V] (ane.md §5): SDPA ignores attn_mask (maderix, Orion T022)"),
        ("limits.ops.conv_bias", "C13 [S] (ane.md §5): conv bias= not accepted (Orion README)"),
        ("limits.ops.matmul_inner_multiple", "C23 [S] (ane.md §5): K not a multiple of 32 gives zeros on M1 (maderix #47); padded on every chip"),
        ("limits.ops.layer_norm", "C28 [S] (ane.md §5): layer_norm fails value-dependently on M1/M2 (compile) and M5 (eval); never emitted"),
        ("limits.ops.weights_reload_takes_effect", "C07 [C] (ane.md §5, §6): reload changed nothing on M5 and M4; conservative: reload does not take effect"),
        ("limits.numerics.matmul_overflow_to_inf", "C35 [S, C: inf vs 0] (ane.md §5): matmul outputs beyond ~32,752 become inf on M5 (ANEForge #115); a second report says 0 on M3 Ultra; conservative: inf on every chip"),
        ("limits.numerics.width_offset_slice_gain", "C36 [S] (ane.md §5): a non-zero last-axis slice offset applies a x16 gain on pre-A16 chips (M1/A14; M2 per the catalogue), exact on M5"),
        ("limits.ops.baked_linear_as_conv", "C41 [S] (ane.md §5): 1x1 conv ~3x faster than matmul for linears with baked weights (maderix Part 2); no chip reported otherwise, so on for all until a probe measures it"),
        ("cost.spill_exponent", "ane.md §8: fit to M4 Max 12.5 -> 32 MB x0.54, -> 128 MB x0.29"),
        ("cost.shape_ref_spatial", "ane.md §8: e_shape saturates at S = 2048 (M3 Pro 16.77 TF at S=2048)"),
        ("cost.shape_ref_channels", "ane.md §8: e_shape saturates at C = 512 (M4 Max 256-ch = 0.55 x 512-ch)"),
    ];
    let sources: BTreeMap<String, String> = shared_sources
        .iter()
        .chain(v.sources.iter())
        .map(|(key, text)| (key.to_string(), text.to_string()))
        .collect();
    ChipProfile {
        id: v.id,
        arch: v.arch.to_string(),
        name: v.name.to_string(),
        limits,
        cost: v.cost,
        sources,
    }
}

fn m1() -> ChipProfile {
    shared(ChipValues {
        id: ChipId::M1,
        arch: "h13",
        name: "Apple M1 family (M1, Pro, Max, Ultra)",
        max_extent: 16_384,
        last_axis_alignment_bytes: 64,
        sram_budget_bytes: 2 * MB,
        dialect: MilDialect::Ios16Program10,
        fp32_io_cast: false,
        multi_record_blobs: false,
        sin_cos: false,
        width_offset_slice_gain: true,
        cost: CostModel {
            dispatch_floor_ms: 0.1,
            isolated_eval_ms: 0.22,
            effective_tflops: 3.25,
            bandwidth_gb_s: 9.0,
            sram_knee_bytes: 4 * MB,
            spill_exponent: 0.6,
            shape_ref_spatial: 2048,
            shape_ref_channels: 512,
            spatial_exponent: 0.0,
            channel_exponent: 0.0,
            compile_ms_per_kernel: 140.0,
        },
        sources: [
            ("limits.max_spatial", "C26 [V] (ane.md §5): 16,384 through M3 (ANEForge)"),
            ("limits.max_contraction", "C26 [V] (ane.md §5): 16,384 through M3 (ANEForge)"),
            ("limits.last_axis_alignment_bytes", "C22 [V] (ane.md §2, §5): 64-byte last axis (ml-ane-transformers, H3, tinygrad)"),
            ("limits.sram_budget_bytes", "C39 [V] (ane.md §5, §8): 4 MB L2 (tinygrad), ~2 MB knee (ane-guide); conservative: 2 MB"),
            ("limits.dialect", "C15 [C] (ane.md §3): PR #6 says only ios16 verbose compiles on M1/M2, maderix trained with ios18 shorthand; conservative: ios16"),
            ("limits.ops.fp32_io_cast", "C16 [S] (ane.md §2, §5): fp32 I/O via cast fails on M1/M2 (maderix PR #6)"),
            ("limits.ops.multi_record_blobs", "C17 [C] (ane.md §4, §5): multi-record files fail on M1 per benchmark report, compile per PR #6; conservative: one tensor per file"),
            ("limits.ops.sin_cos", "C31 [S] (ane.md §5): sin/cos native only from M3 (ANEForge)"),
            ("cost.dispatch_floor_ms", "ane.md §8 t_floor <= 0.2 ms fitted; 0.1 puts Stories110M (72 evals, ~38 ms of weight streaming) near the 32-45 ms M1 Pro/Max target"),
            ("cost.isolated_eval_ms", "C40 (ane.md §8): 0.22-0.23 ms (Part 2, ane-guide)"),
            ("cost.effective_tflops", "ane.md §8: 3.25 TF effective (ane-guide); 2.70 GEMM (ANEForge)"),
            ("cost.bandwidth_gb_s", "ane.md §8: 9 GB/s engine streaming (ANEForge)"),
            ("cost.sram_knee_bytes", "C39 (ane.md §8): K_sram 2-4 MB; 4 MB (tinygrad L2) keeps M1 bandwidth-bound as §8's calibration says"),
            ("cost.spatial_exponent", "ane.md §8: M1/M2 rows use e_shape = 1"),
            ("cost.channel_exponent", "ane.md §8: M1/M2 rows use e_shape = 1"),
            ("cost.compile_ms_per_kernel", "C42 (ane.md §8): 120-140 ms per training kernel (M1 Pro/Max, report); pessimistic end"),
        ],
    })
}

fn m2() -> ChipProfile {
    shared(ChipValues {
        id: ChipId::M2,
        arch: "h14",
        name: "Apple M2 family (M2, Pro, Max, Ultra)",
        max_extent: 16_384,
        last_axis_alignment_bytes: 64,
        sram_budget_bytes: 4 * MB,
        dialect: MilDialect::Ios16Program10,
        fp32_io_cast: false,
        multi_record_blobs: false,
        sin_cos: false,
        width_offset_slice_gain: true,
        cost: CostModel {
            dispatch_floor_ms: 0.1,
            isolated_eval_ms: 0.22,
            effective_tflops: 3.3,
            bandwidth_gb_s: 15.0,
            sram_knee_bytes: 4 * MB,
            spill_exponent: 0.6,
            shape_ref_spatial: 2048,
            shape_ref_channels: 512,
            spatial_exponent: 0.0,
            channel_exponent: 0.0,
            compile_ms_per_kernel: 140.0,
        },
        sources: [
            ("limits.max_spatial", "C26 [V] (ane.md §5): 16,384 through M3 (ANEForge)"),
            ("limits.max_contraction", "C26 [V] (ane.md §5): 16,384 through M3 (ANEForge)"),
            ("limits.last_axis_alignment_bytes", "C22 [V] (ane.md §2, §5): 64-byte last axis"),
            ("limits.sram_budget_bytes", "C39 (ane.md §8): K_sram 4 MB (guess, no M2 measurement)"),
            ("limits.dialect", "C15 [C] (ane.md §3): PR #6 says ios16 verbose works on M1/M2, ios18 shorthand does not; conservative: ios16"),
            ("limits.ops.fp32_io_cast", "C16 [S] (ane.md §2, §5): fp32 I/O via cast fails on M1/M2 (maderix PR #6)"),
            ("limits.ops.multi_record_blobs", "C17 [C] (ane.md §4): no M2 evidence, multi-record reported failing on M1; conservative: one tensor per file"),
            ("limits.ops.sin_cos", "C31 [S] (ane.md §5): sin/cos native only from M3 (ANEForge)"),
            ("cost.dispatch_floor_ms", "ane.md §8: no M2 value; assumed equal to M1"),
            ("cost.isolated_eval_ms", "ane.md §8: 0.22 ms (assumed, as M1)"),
            ("cost.effective_tflops", "ane.md §8: 3.26 TF GEMM on M2 Pro (ANEForge), rounded 3.3"),
            ("cost.bandwidth_gb_s", "ane.md §8: ~15 GB/s (guess)"),
            ("cost.sram_knee_bytes", "ane.md §8: K_sram 4 MB (guess)"),
            ("cost.spatial_exponent", "ane.md §8: M1/M2 rows use e_shape = 1"),
            ("cost.channel_exponent", "ane.md §8: M1/M2 rows use e_shape = 1"),
            ("cost.compile_ms_per_kernel", "ane.md §8: no M2 value; assumed equal to M1 (140 ms)"),
        ],
    })
}

fn m3() -> ChipProfile {
    shared(ChipValues {
        id: ChipId::M3,
        arch: "h15",
        name: "Apple M3 family (M3, Pro, Max, Ultra)",
        max_extent: 16_384,
        last_axis_alignment_bytes: 64,
        sram_budget_bytes: 16 * MB,
        dialect: MilDialect::Ios18Program13,
        fp32_io_cast: true,
        multi_record_blobs: true,
        sin_cos: true,
        width_offset_slice_gain: false,
        cost: CostModel {
            dispatch_floor_ms: 0.075,
            isolated_eval_ms: 0.15,
            effective_tflops: 16.8,
            bandwidth_gb_s: 40.0,
            sram_knee_bytes: 16 * MB,
            spill_exponent: 0.6,
            shape_ref_spatial: 2048,
            shape_ref_channels: 512,
            spatial_exponent: 0.15,
            channel_exponent: 0.85,
            compile_ms_per_kernel: 62.0,
        },
        sources: [
            (
                "limits.max_spatial",
                "C26 [V] (ane.md §5): 16,384 through M3 (ANEForge)",
            ),
            (
                "limits.max_contraction",
                "C26 [V] (ane.md §5): 16,384 through M3 (ANEForge)",
            ),
            (
                "limits.last_axis_alignment_bytes",
                "C22 [V] (ane.md §2, §5): 64-byte last axis (H3 measured on M3 Ultra)",
            ),
            ("limits.sram_budget_bytes", "C39 (ane.md §8): K_sram 16 MB (guess)"),
            (
                "limits.dialect",
                "C15 (ane.md §3): ios18 shorthand compiles on M3/M4/M5 [V]",
            ),
            (
                "limits.ops.fp32_io_cast",
                "C16 (ane.md §2): the cast failure is reported only for M1/M2; fp16 I/O stays the default",
            ),
            (
                "limits.ops.multi_record_blobs",
                "C17 (ane.md §4): maderix multi-record files compile on M3-M5",
            ),
            (
                "limits.ops.sin_cos",
                "C31 [S] (ane.md §5): sin/cos native from M3 (ANEForge)",
            ),
            (
                "cost.dispatch_floor_ms",
                "ane.md §8: no M3 value; assumed half the isolated latency, the M4 ratio (0.05/0.095)",
            ),
            ("cost.isolated_eval_ms", "ane.md §8: 0.15 ms (assumed)"),
            (
                "cost.effective_tflops",
                "ane.md §8: 16.77 TF at S=2048, 512-ch conv chain (M3 Pro, maderix report)",
            ),
            ("cost.bandwidth_gb_s", "ane.md §8: ~40 GB/s (guess)"),
            ("cost.sram_knee_bytes", "ane.md §8: K_sram 16 MB (guess)"),
            (
                "cost.spatial_exponent",
                "ane.md §8: fit S 64 -> 2048 = x1.68 (M3 Pro 9.98 -> 16.77 TF)",
            ),
            (
                "cost.channel_exponent",
                "ane.md §8: fit 256-ch = 0.55 x 512-ch (M4 Max)",
            ),
            (
                "cost.compile_ms_per_kernel",
                "C42 (ane.md §8): ~62 ms per training kernel (M3 Ultra)",
            ),
        ],
    })
}

fn m4() -> ChipProfile {
    shared(ChipValues {
        id: ChipId::M4,
        arch: "h16",
        name: "Apple M4 family (M4, Pro, Max)",
        max_extent: 65_536,
        last_axis_alignment_bytes: 64,
        sram_budget_bytes: 12_500_000,
        dialect: MilDialect::Ios18Program13,
        fp32_io_cast: true,
        multi_record_blobs: true,
        sin_cos: true,
        width_offset_slice_gain: false,
        cost: CostModel {
            dispatch_floor_ms: 0.05,
            isolated_eval_ms: 0.095,
            effective_tflops: 18.6,
            bandwidth_gb_s: 50.0,
            sram_knee_bytes: 12_500_000,
            spill_exponent: 0.6,
            shape_ref_spatial: 2048,
            shape_ref_channels: 512,
            spatial_exponent: 0.15,
            channel_exponent: 0.85,
            compile_ms_per_kernel: 62.0,
        },
        sources: [
            ("limits.max_spatial", "C26 [V] (ane.md §5): 65,536 on M4/M5 (ANEForge)"),
            ("limits.max_contraction", "C26 [V] (ane.md §5): 65,536 on M4/M5 (ANEForge)"),
            ("limits.last_axis_alignment_bytes", "C22 [V] (ane.md §2, §5): 64-byte last axis"),
            ("limits.sram_budget_bytes", "C39 [V] (ane.md §5, §8): M4 Max best at 12.5 MB, spill at 32 MB; lower end of the 12.5-32 MB knee"),
            ("limits.dialect", "C15 (ane.md §3): ios18 shorthand compiles on M3/M4/M5 [V]"),
            ("limits.ops.fp32_io_cast", "C16 (ane.md §2): Orion GPT-2 inference uses fp32 surfaces + cast on M4 Max; fp16 I/O stays the default"),
            ("limits.ops.multi_record_blobs", "C17 (ane.md §4): maderix multi-record files compile on M3-M5"),
            ("limits.ops.sin_cos", "C31 [S] (ane.md §5): sin/cos native from M3 (ANEForge)"),
            ("cost.dispatch_floor_ms", "C40 (ane.md §8): t_floor ~0.05 ms fitted to 8.9-10.2 ms for 72 evals (M4 Pro/Max)"),
            ("cost.isolated_eval_ms", "C40 (ane.md §8): 0.095 ms on M4 (Part 2); 0.175 ms on M4 Max standard path (PR #40)"),
            ("cost.effective_tflops", "ane.md §8: 18.6 TF, 128 chained 512-ch 1x1 convs (M4)"),
            ("cost.bandwidth_gb_s", "ane.md §8: ~50 GB/s (guess)"),
            ("cost.sram_knee_bytes", "C39 (ane.md §8): knee 12.5-32 MB; 12.5 MB reproduces the measured x0.54 at 32 MB with exponent 0.6 (the §8 table's 16 MB gives x0.66)"),
            ("cost.spatial_exponent", "ane.md §8: fit S 64 -> 2048 = x1.68 (M3 Pro)"),
            ("cost.channel_exponent", "ane.md §8: fit 256-ch = 0.55 x 512-ch (M4 Max)"),
            ("cost.compile_ms_per_kernel", "C42 (ane.md §8): 55-62 ms per training kernel; pessimistic end"),
        ],
    })
}

fn m5() -> ChipProfile {
    shared(ChipValues {
        id: ChipId::M5,
        arch: "h17",
        name: "Apple M5 family (M5, Pro, Max)",
        max_extent: 65_536,
        last_axis_alignment_bytes: 128,
        sram_budget_bytes: 16 * MB,
        dialect: MilDialect::Ios18Program13,
        fp32_io_cast: true,
        multi_record_blobs: true,
        sin_cos: true,
        width_offset_slice_gain: false,
        cost: CostModel {
            dispatch_floor_ms: 0.04,
            isolated_eval_ms: 0.11,
            effective_tflops: 19.3,
            bandwidth_gb_s: 57.0,
            sram_knee_bytes: 16 * MB,
            spill_exponent: 0.6,
            shape_ref_spatial: 2048,
            shape_ref_channels: 512,
            spatial_exponent: 0.15,
            channel_exponent: 0.85,
            compile_ms_per_kernel: 55.0,
        },
        sources: [
            ("limits.max_spatial", "C26 [V] (ane.md §5): 65,536 on M4/M5 (ANEForge)"),
            ("limits.max_contraction", "C26 [V] (ane.md §5): 65,536 on M4/M5 (ANEForge)"),
            ("limits.last_axis_alignment_bytes", "C22 [S] (ane.md §2, §5): 128-byte alignment on M5 (maderix PR #35, unreliable); conservative: 128"),
            ("limits.sram_budget_bytes", "C39 (ane.md §8): K_sram 16 MB (guess)"),
            ("limits.dialect", "C15 (ane.md §3): ios18 shorthand compiles on M3/M4/M5 [V]; PR #35's program(1.5) claim is unreliable"),
            ("limits.ops.fp32_io_cast", "C16 (ane.md §2): maderix m5result.md evaluates fp32 surfaces on M5; fp16 I/O stays the default"),
            ("limits.ops.multi_record_blobs", "C17 (ane.md §4): maderix multi-record files compile on M3-M5"),
            ("limits.ops.sin_cos", "C31 [S] (ane.md §5): sin/cos native from M3 (ANEForge)"),
            ("cost.dispatch_floor_ms", "C40 (ane.md §8): t_floor ~0.04 ms fitted to 9.1-9.8 ms for 72 evals"),
            ("cost.isolated_eval_ms", "C40 (ane.md §8): 0.07 ms (maderix), 110 us (ANEForge); pessimistic end"),
            ("cost.effective_tflops", "ane.md §8: 19.27 TF M5 Max (PR #50); base M5 12.4 at S=64 extrapolates to ~20; ANEForge's 8.9 cannot meet the 9.1-9.8 ms target"),
            ("cost.bandwidth_gb_s", "ane.md §8: 57 GB/s (ANEForge)"),
            ("cost.sram_knee_bytes", "ane.md §8: K_sram 16 MB (guess)"),
            ("cost.spatial_exponent", "ane.md §8: fit S 64 -> 2048 = x1.68 (M3 Pro)"),
            ("cost.channel_exponent", "ane.md §8: fit 256-ch = 0.55 x 512-ch (M4 Max)"),
            ("cost.compile_ms_per_kernel", "C42 (ane.md §8): ~55 ms per training kernel (PR #23)"),
        ],
    })
}

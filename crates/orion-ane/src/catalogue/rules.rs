//! The table of rules C01..C43, restated from ane.md §5 (details from the sections each rule cites).
//!
//! Invariant: rules appear in id order, `C01` first, with no gaps; each has at least one source and chip.
//! Edit here, then regenerate `docs/CONSTRAINTS.md` (`ORION_BLESS=1 cargo test -p orion-ane --test catalogue`).

use super::{Confidence, Rule, Symptom};
use crate::profile::ChipId::{self, M1, M2, M3, M5};

const ALL: &[ChipId] = &ChipId::ALL;
const CF: Symptom = Symptom::CompileFailure;
/// Every reported eval failure carries status 0x1d ("Program Inference error", ane.md §2, §5).
const EF: Symptom = Symptom::EvalFailure { status: 0x1d };
const SW: Symptom = Symptom::SilentWrong;
const CR: Symptom = Symptom::Crash;
const LEAK: Symptom = Symptom::Leak;
const P: Symptom = Symptom::Performance;
const V: Confidence = Confidence::Verified;
const S: Confidence = Confidence::Single;
const C: Confidence = Confidence::Contradicted;

pub(super) const RULES: &[Rule] = &[
    Rule {
        id: "C01",
        title: "MIL text is passed as NSData (UTF-8 bytes)",
        statement: "`modelWithMILText:weights:optionsPlist:` takes the program text as NSData of UTF-8 bytes; \
            passing an NSString crashes or fails silently (ane.md §1 step 1).",
        symptoms: &[CR],
        sources: &["Orion constraint #9", "maderix"],
        confidence: V,
        chips: ALL,
        auto: "The device layer always passes UTF-8 bytes.",
    },
    Rule {
        id: "C02",
        title: "The weight dictionary is never nil; `@{}` when empty",
        statement: "The `weights` argument must be an NSDictionary even for weight-free programs; nil crashes or \
            makes the compile fail silently (ane.md §1 step 1).",
        symptoms: &[CR, CF],
        sources: &["Orion constraint #11", "maderix (INT8 commit fix)"],
        confidence: V,
        chips: ALL,
        auto: "The device layer always passes a dictionary, empty when the program has no weights.",
    },
    Rule {
        id: "C03",
        title: "BLOBFILE offset is the record's metadata offset; dictionary offset 0",
        statement: "`BLOBFILE(path, offset)` names the offset of a record's 64-byte metadata block (64 for the first \
            record, 192 for the second in the ane.md §4 example), not 0 and not the data offset; the weight \
            dictionary entry has `offset` 0 and `data` = the whole file. A wrong offset gives silent garbage.",
        symptoms: &[SW],
        sources: &["Orion constraint #8", "maderix", "coremltools blob storage format"],
        confidence: V,
        chips: ALL,
        auto: "The blob writer returns each record's MIL offset; nothing else computes offsets.",
    },
    Rule {
        id: "C04",
        title: "Temp directory with model.mil and weight files exists before compile",
        statement: "`NSTemporaryDirectory()/<hexStringIdentifier>/` must hold `model.mil` and every weight file at \
            its `@model_path`-relative path before `compileWithQoS:` (ane.md §1 step 3).",
        symptoms: &[CF],
        sources: &["Orion", "maderix", "maderix issue #54"],
        confidence: V,
        chips: ALL,
        auto: "The runtime writes the directory before compiling.",
    },
    Rule {
        id: "C05",
        title: "Unload every loaded program",
        statement: "A program that is loaded and never unloaded leaks ANE resources (ane.md §1 step 9).",
        symptoms: &[LEAK],
        sources: &["Orion"],
        confidence: S,
        chips: ALL,
        auto: "Loaded programs unload on drop (RAII).",
    },
    Rule {
        id: "C06",
        title: "About 119 compiles per process",
        statement: "After ~119 compiles in one process (119-132 measured on M4) further compiles fail silently or the \
            process becomes unstable; one explanation is a leak in the `_ANEInMemoryModel` compile wrapper \
            (maderix #54, unverified).",
        symptoms: &[CF],
        sources: &["maderix Part 2", "Orion constraint #5", "maderix PR #23"],
        confidence: V,
        chips: ALL,
        auto: "Count compiles against a per-process budget of 100; cache programs; compile once per shape; \
            checkpoint and exec-restart when the budget would be exceeded.",
    },
    Rule {
        id: "C07",
        title: "Weights are baked at compile time; reloading files does not change output",
        statement: "Overwriting the weight files and unloading/loading the same model left the output unchanged on \
            M5 (`m5result.md`, max diff 0.0) and M4 (PR #23), and Orion's own constraint #7 agrees; Orion's \
            README and v2 training rely on the reload working, without a test (ane.md §6).",
        symptoms: &[SW],
        sources: &["maderix m5result.md (M5)", "maderix PR #23 (M4)", "Orion constraint #7", "Orion README / v2 (contra)"],
        confidence: C,
        chips: ALL,
        auto: "Never trust a weight reload without an equality check against the CPU reference; prefer weights as \
            inputs for training.",
    },
    Rule {
        id: "C08",
        title: "`_ANERequest.weightsBuffer` is ignored",
        statement: "A request whose `weightsBuffer` surface holds different weights produces the same output; on \
            macOS 26.5 the feature is reported as gated by an entitlement (ane.md §1).",
        symptoms: &[SW],
        sources: &["maderix m5result.md"],
        confidence: S,
        chips: ALL,
        auto: "Always pass nil.",
    },
    Rule {
        id: "C09",
        title: "`concat` rejected",
        statement: "All seven Orion training kernels that used `concat` failed to compile, while maderix's static \
            trainer (ios18 and ios16, M1-M5), maderix dynamic, pmetal and ANEForge use `concat` successfully.",
        symptoms: &[CF],
        sources: &["Orion constraint #1", "maderix static and dynamic trainers (contra)", "pmetal (contra)", "ANEForge (contra)"],
        confidence: C,
        chips: ALL,
        auto: "Chip profiles default to no concat (conservative); fallback is multi-output plus CPU packing; a \
            probe can enable it.",
    },
    Rule {
        id: "C10",
        title: "`gelu` rejected",
        statement: "Orion reports the `gelu` op failing to compile; ANEForge runs exact GELU natively.",
        symptoms: &[CF],
        sources: &["Orion constraint #10", "ANEForge (contra)"],
        confidence: C,
        chips: ALL,
        auto: "Emit the tanh form 0.5·x·(1 + tanh(0.79788456·(x + 0.044715·x³))).",
    },
    Rule {
        id: "C11",
        title: "SDPA ignores `attn_mask`",
        statement: "`scaled_dot_product_attention` runs unmasked whatever `attn_mask` holds.",
        symptoms: &[SW],
        sources: &["maderix", "Orion T022"],
        confidence: V,
        chips: ALL,
        auto: "Never emit SDPA: matmul, scale, add mask, softmax, matmul.",
    },
    Rule {
        id: "C12",
        title: "Non-tensor arguments must be named consts",
        statement: "transpose flags, axes, strings, shapes and perms must be separately declared named `const`s; \
            inline literals such as `transpose_x = false` are rejected (ane.md §3).",
        symptoms: &[CF],
        sources: &["Orion README", "all peers emit named consts"],
        confidence: V,
        chips: ALL,
        auto: "The MIL printer always declares them as named consts.",
    },
    Rule {
        id: "C13",
        title: "`conv` does not accept `bias=`",
        statement: "A `conv` with a `bias` argument fails to compile.",
        symptoms: &[CF],
        sources: &["Orion README"],
        confidence: S,
        chips: ALL,
        auto: "Emit a separate `add` of a `[1, C, 1, 1]` bias.",
    },
    Rule {
        id: "C14",
        title: "Returned names must be live variables",
        statement: "A function returning a removed or dead variable name fails with `InvalidMILProgram`.",
        symptoms: &[CF],
        sources: &["Orion README"],
        confidence: S,
        chips: ALL,
        auto: "Verify the program before printing it.",
    },
    Rule {
        id: "C15",
        title: "Dialect: ios18 shorthand vs ios16 verbose on M1/M2",
        statement: "program(1.3)/ios18 shorthand compiles on M3/M4/M5; maderix's static trainer (shorthand) trained on \
            M1 Pro/Max, but PR #6 (M1 Pro, macOS 26.3) says shorthand only compiles on M4 and program(1.0)/ios16 \
            verbose works on M1/M2 (ane.md §3).",
        symptoms: &[CF],
        sources: &["maderix benchmark report", "maderix issue #3", "maderix PR #6 (contra)"],
        confidence: C,
        chips: &[M1, M2],
        auto: "One printer emits both dialects; M1/M2 profiles default to ios16; a startup probe per chip and OS \
            build picks the dialect.",
    },
    Rule {
        id: "C16",
        title: "fp32 I/O via `cast` fails on M1/M2",
        statement: "Programs with fp32 surfaces and an in-program `cast` to fp16 fail to compile on M1/M2; the peak \
            benchmark with cast fails on M1 (ane.md §2).",
        symptoms: &[CF],
        sources: &["maderix PR #6", "maderix peak benchmark"],
        confidence: S,
        chips: &[M1, M2],
        auto: "fp16 I/O by default on every chip.",
    },
    Rule {
        id: "C17",
        title: "Multi-record blob files fail on M1",
        statement: "The benchmark report says multi-record (\"single-blob\") weight files fail on M1, while PR #6 made \
            the same multi-record benchmark compile on M1 by switching dialect and dropping `cast` (ane.md §4).",
        symptoms: &[CF],
        sources: &["maderix benchmark report", "maderix PR #6 (contra)"],
        confidence: C,
        chips: &[M1],
        auto: "One tensor per weight file, always with the true count and full u64 fields.",
    },
    Rule {
        id: "C18",
        title: "Uniform AllocSize across inputs and across outputs",
        statement: "All input surfaces of a program must share one allocation size, and all outputs another; \
            otherwise eval fails with status 0x1d. maderix #47 (M1, two runtime matmul operands) instead reports \
            inputs must be strictly ascending and outputs descending in size, else silent zeros (ane.md §2).",
        symptoms: &[EF],
        sources: &["Orion constraints #2, #12", "maderix issue #47 (contra, M1)"],
        confidence: C,
        chips: ALL,
        auto: "Allocate every surface on a side at the largest size; probe the M1 variant.",
    },
    Rule {
        id: "C19",
        title: "I/O binds in ascending name order, not declaration order",
        statement: "Outputs bind in ascending order of MIL output variable names and inputs in ascending order of \
            parameter names (Orion, M4 Max); Orion's API doc, its training code and maderix PR #22 use positional \
            order, but PR #22's test cannot tell the orders apart. Case sensitivity of the sort is unknown (ane.md §2).",
        symptoms: &[SW],
        sources: &["Orion constraints #3, #13", "Orion API reference and training code (contra)", "maderix PR #22 (contra)"],
        confidence: C,
        chips: ALL,
        auto: "Name inputs `a00_…` and outputs `z00_…` so declaration order equals byte order under any collation, \
            and run a binding self-test per program shape.",
    },
    Rule {
        id: "C20",
        title: "An oversized surface is read as packed data from offset 0",
        statement: "A surface larger than the declared shape is read as packed `[1, C, 1, S]` data from offset 0 with \
            no stride; stride-padded writes gave a much smaller result. One test without a numeric reference (ane.md §2).",
        symptoms: &[SW],
        sources: &["Orion constraint #14"],
        confidence: S,
        chips: ALL,
        auto: "Write packed data at offset 0 and choose S so that S × element size is a multiple of 64 bytes.",
    },
    Rule {
        id: "C21",
        title: "Minimum surface size about 49,152 bytes",
        statement: "Orion saw surfaces below ~49 KB fail at eval (`[768, 1]` fp32 fails, `[768, 16]` fp32 = 49,152 B \
            works); maderix `m5result.md` (M5) and PR #22 evaluate 8 KB surfaces. Every reported success has \
            S × element size ≥ 64 bytes (ane.md §2).",
        symptoms: &[EF],
        sources: &["Orion constraint #4", "maderix m5result.md (contra)", "maderix PR #22 (contra)"],
        confidence: C,
        chips: ALL,
        auto: "Allocate every surface at ≥ 49,152 bytes; fp16 S % 32 == 0, fp32 S % 16 == 0 (decode buckets S = 32 \
            fp16 or 16 fp32).",
    },
    Rule {
        id: "C22",
        title: "Last axis 64-byte aligned (128 on M5)",
        statement: "The last axis of a tensor occupies a multiple of 64 bytes (128 on M5 per PR #35, unreliable); \
            unaligned shapes run slower (prime S = 15,731 ran at 2.45 vs 3.87 TF per die, H3) or fail.",
        symptoms: &[P, EF],
        sources: &["apple/ml-ane-transformers", "H3", "tinygrad", "maderix PR #35 (128 on M5)"],
        confidence: V,
        chips: ALL,
        auto: "Pad S to the profile's last-axis alignment (64 bytes; 128 on M5). Verified for 64, single source \
            for 128.",
    },
    Rule {
        id: "C23",
        title: "Matmul inner dimension a multiple of 32 on M1",
        statement: "A matmul whose contraction extent is not a multiple of 32 returns zeros on M1.",
        symptoms: &[SW],
        sources: &["maderix issue #47"],
        confidence: S,
        chips: &[M1],
        auto: "Pad the contraction extent to a multiple of 32 on every chip.",
    },
    Rule {
        id: "C24",
        title: "Runtime-weight conv fails for grouped/depthwise",
        statement: "A conv whose weight is a runtime input fails to compile unless groups = 1.",
        symptoms: &[CF],
        sources: &["maderix issue #47"],
        confidence: S,
        chips: &[M1],
        auto: "Only groups = 1 with runtime weights.",
    },
    Rule {
        id: "C25",
        title: "reshape/transpose/concat/pad/reduce fail at runtime on M1",
        statement: "maderix #47 reports these ops failing at runtime on M1 in a runtime-operand setup, while maderix's \
            static trainer uses all of them on M1.",
        symptoms: &[EF],
        sources: &["maderix issue #47", "maderix static trainer on M1 (contra)"],
        confidence: C,
        chips: &[M1],
        auto: "Ignored unless a probe reproduces it.",
    },
    Rule {
        id: "C26",
        title: "Extent caps: 16,384 through M3, 65,536 on M4/M5",
        statement: "Spatial and contraction extents are capped at 16,384 through M3 and 65,536 on M4/M5; channels at \
            65,536. A 151,936-wide vocabulary had to be split into 16 chunks.",
        symptoms: &[CF],
        sources: &["ANEForge", "maderix PR #26"],
        confidence: V,
        chips: ALL,
        auto: "Split LM heads and classifiers into chunks under the profile's caps.",
    },
    Rule {
        id: "C27",
        title: "32,000-input-channel classifier conv rejected",
        statement: "A classifier conv with 32,000 input channels failed to compile.",
        symptoms: &[CF],
        sources: &["Orion"],
        confidence: S,
        chips: ALL,
        auto: "Run the classifier on the CPU (or chunk it).",
    },
    Rule {
        id: "C28",
        title: "`layer_norm` fails depending on affine values",
        statement: "On M1/M2 compile fails when exactly one affine term is non-uniform (D ≥ ~1,024); on M5 execution \
            fails with both terms live and D ≥ ~10,240. The failure depends on values, not shapes.",
        symptoms: &[CF, EF],
        sources: &["ANEForge issues #149, #158, #162", "ANEForge PR #201"],
        confidence: S,
        chips: &[M1, M2, M5],
        auto: "Never emit `layer_norm`: decompose into reduce_mean, sub, mul, rsqrt and apply γ/β as `[1, C, 1, 1]` \
            mul/add.",
    },
    Rule {
        id: "C29",
        title: "Compile success can depend on weight values",
        statement: "Whether a program compiles can depend on the values of its baked weights (LayerNorm affine terms, a \
            two-block graph), not only on its shapes.",
        symptoms: &[CF],
        sources: &["apple/coreai-models #138 (M5 Max, macOS 27)", "ANEForge PR #201"],
        confidence: V,
        chips: ALL,
        auto: "Keep the last good program; prefer weights as inputs for training.",
    },
    Rule {
        id: "C30",
        title: "M3 Pro peak benchmark compiled only at 512 channels",
        statement: "Of 52 channel widths tried, the M3 Pro peak benchmark compiled only at 512.",
        symptoms: &[CF],
        sources: &["maderix benchmark report"],
        confidence: S,
        chips: &[M3],
        auto: "Probe channel widths per chip.",
    },
    Rule {
        id: "C31",
        title: "Op availability differs by chip",
        statement: "`sin`/`cos` are native from M3; `topk`, `sort` and `dynamic_slice` are rejected on M1; there is no \
            ANE path for `cumsum`, `reduce_prod`, `non_zero`, bitwise/logical ops, or int32/bf16 I/O.",
        symptoms: &[CF],
        sources: &["ANEForge op catalogue (187 ops)"],
        confidence: S,
        chips: ALL,
        auto: "The IR has `sin`/`cos`; they lower natively where the chip profile allows them (M3 on) and the \
            lint rejects them before compile elsewhere. The models build RoPE from cos/sin tables passed as \
            inputs or consts, so no chip needs them.",
    },
    Rule {
        id: "C32",
        title: "Conv kernel width ≤ 13 on M1, ≤ 15 on M5",
        statement: "Conv kernels wider than 13 (M1) or 15 (M5) fail to compile.",
        symptoms: &[CF],
        sources: &["ANEForge"],
        confidence: S,
        chips: ALL,
        auto: "Only 1×1 convs are emitted.",
    },
    Rule {
        id: "C33",
        title: "rustane's shape limits",
        statement: "rustane restricts itself to spatial extents that are multiples of 16, dim % 128 == 0 and \
            hidden % 16 == 0.",
        symptoms: &[CF],
        sources: &["rustane"],
        confidence: S,
        chips: ALL,
        auto: "Prefer such shapes.",
    },
    Rule {
        id: "C34",
        title: "fp16 datapath numerics",
        statement: "Products are rounded to fp16 with fp32-class accumulation; denormals are flushed; fp32, int32 and \
            bf16 annotations are not computed wider; compressed weights are expanded to fp16 before the multiply; \
            ties round up on h15g/M5 and to even on M1.",
        symptoms: &[SW],
        sources: &["ane-guide numerics chapter", "ANEForge cross-chip docs"],
        confidence: S,
        chips: ALL,
        auto: "The simulator mimics the fp16 datapath; results are compared with a tolerance.",
    },
    Rule {
        id: "C35",
        title: "Matmul outputs above ~32,752 overflow",
        statement: "A matmul output above ~32,752 (fp16 max / 2) becomes inf for any K (M5, macOS 26.5); a second \
            report (h15g, M3 Ultra; origin not pinned) says running partial sums reaching 2^15 return 0.",
        symptoms: &[SW],
        sources: &["ANEForge issue #115", "ANEForge issue #178"],
        confidence: S,
        chips: &[M3, M5],
        auto: "Keep |outputs| < 16 K by scaling activations and gradients (loss scale ≤ 256); the simulator returns \
            inf. Single source each; inf vs 0 is itself contradicted.",
    },
    Rule {
        id: "C36",
        title: "Width-offset slices apply a ×16 gain on pre-A16 chips",
        statement: "A slice with a non-zero last-axis begin applies a fixed ×16 gain internally, so |x| > 4,094 becomes \
            ±inf on M1/A14 (\"pre-A16\"); exact on M5.",
        symptoms: &[SW],
        sources: &["ane-guide numerics chapter", "ANEForge issue #178 (same lineage)"],
        confidence: S,
        chips: &[M1, M2],
        auto: "Put large-magnitude tensors at last-axis offset 0 or pack them on channels.",
    },
    Rule {
        id: "C37",
        title: "`reduce_sum` of integers loses exactness past 2,048",
        statement: "Sums of integer-valued data stop being exact once they cross 2,048 (the fp16 spacing becomes 2).",
        symptoms: &[SW],
        sources: &["ANEForge issue #115"],
        confidence: S,
        chips: ALL,
        auto: "Account for fp16 spacing; compare with a tolerance.",
    },
    Rule {
        id: "C38",
        title: "fp16 range ±65,504; NaN and Inf propagate",
        statement: "Every value on the device is fp16: magnitudes beyond 65,504 become infinite and NaN/Inf propagate \
            through every later op.",
        symptoms: &[SW],
        sources: &["Orion", "maderix"],
        confidence: V,
        chips: ALL,
        auto: "Clamp at the CPU→ANE boundary and count NaNs; weights are saturated to ±65,504 with NaN → 0 when \
            written.",
    },
    Rule {
        id: "C39",
        title: "SRAM working-set knee",
        statement: "~32 MB on M4 (−30 % beyond); M4 Max is best at 12.5 MB of weights, spills at 32 MB and is ~35× \
            worse per MB at 128 MB; M1 has a 4 MB L2 with a ~2 MB knee (ane.md §8).",
        symptoms: &[P],
        sources: &["maderix Part 2 and sram_probe", "Orion", "tinygrad", "ane-guide"],
        confidence: V,
        chips: ALL,
        auto: "Partition programs under the chip profile's SRAM budget; the cost model applies the spill penalty.",
    },
    Rule {
        id: "C40",
        title: "Per-eval floor 0.07-0.23 ms",
        statement: "Every evaluation costs a fixed 0.07-0.23 ms depending on chip and path (ane.md §8).",
        symptoms: &[P],
        sources: &["maderix", "ANEForge", "ane-guide"],
        confidence: V,
        chips: ALL,
        auto: "Fuse; aim for 16-64 or more ops per program.",
    },
    Rule {
        id: "C41",
        title: "1×1 conv ≈ 3× faster than matmul for baked-weight linears",
        statement: "With baked weights, a linear layer as a 1×1 conv runs about three times faster than as a matmul.",
        symptoms: &[P],
        sources: &["maderix Part 2 (Orion cites it)"],
        confidence: S,
        chips: ALL,
        auto: "Lower baked-weight linears to 1×1 conv.",
    },
    Rule {
        id: "C42",
        title: "Compile time is superlinear in program size",
        statement: "An 8-layer fused forward+backward+optimizer program took 162 s to compile; a `transpose_y` matmul \
            form compiled in 30 s vs < 100 ms for the sequence-minor form.",
        symptoms: &[P],
        sources: &["ANEForge", "H3"],
        confidence: S,
        chips: ALL,
        auto: "Per-layer programs; avoid `transpose_y` on large operands.",
    },
    Rule {
        id: "C43",
        title: "macOS updates break paths",
        statement: "macOS 26 broke `MLModel compileModelAtURL` (maderix PR #27); ANECCompile fails for real models on \
            macOS 26 on M1 Ultra (Espresso #18); macOS 27 added `verifyBundleAtPath` failures (jundot/omlx #3124).",
        symptoms: &[CF],
        sources: &["maderix PR #27", "Espresso issue #18", "jundot/omlx issue #3124"],
        confidence: V,
        chips: ALL,
        auto: "A startup probe suite; caches keyed by OS build.",
    },
];

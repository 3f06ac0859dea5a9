//! `CpuOptions::huge_pages`: the weights matrix-vector steps stream are collapsed onto transparent
//! huge pages on Linux (checked in `/proc/self/smaps`), only those weights, and results keep
//! every bit.

#[path = "common/cpu.rs"]
mod cpu;

use cpu::{compile, options, values};
use orion_core::backend::Executable;
use orion_core::cpu::{CpuOptions, WeightFormat};
use orion_core::{DType, Graph, Tensor, TensorType};

/// `x · Wᵀ` for `rows` rows of `k` columns and a constant `W` of `[n, k]`; returns the graph, its
/// input and the weight (sharing the graph constant's storage).
fn projection(rows: usize, (k, n): (usize, usize)) -> (Graph, Vec<Tensor>, Tensor) {
    let mut g = Graph::new("projection");
    let x = g.input("x", TensorType::new(DType::F32, [rows, k])).unwrap();
    let weight = Tensor::f32([n, k], values(n * k, 7));
    let w = g.constant(weight.clone()).unwrap();
    let y = g.matmul(x, w, false, true).unwrap();
    g.set_output("y", y).unwrap();
    (g, vec![Tensor::f32([rows, k], values(rows * k, 8))], weight)
}

fn with_huge_pages(weights: WeightFormat) -> CpuOptions {
    CpuOptions {
        huge_pages: true,
        ..options(Some(2), weights)
    }
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.as_f32().unwrap().iter().map(|v| v.to_bits()).collect()
}

/// Whether this kernel can collapse a range onto huge pages (`MADV_COLLAPSE`: Linux 6.1 with
/// transparent huge pages configured; glibc targets only, as the backend).
fn collapse_supported() -> bool {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return false;
    }
    let configured = std::path::Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    configured && version >= (6, 1)
}

/// `AnonHugePages` (kB) of the mapping that holds `address`, from `/proc/self/smaps`.
fn huge_kb_of_mapping_at(address: usize) -> Option<usize> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16)) {
                inside = (start..end).contains(&address);
                continue;
            }
        }
        if inside {
            if let Some(kb) = line.strip_prefix("AnonHugePages:") {
                return kb.trim().trim_end_matches("kB").trim().parse().ok();
            }
        }
    }
    None
}

#[test]
fn a_decode_projection_weight_is_collapsed_onto_huge_pages_with_the_same_bits() {
    // 2048 × 1024 f32 is 8 MiB: at least three aligned 2 MiB pages inside, wherever it starts.
    let (g, inputs, weight) = projection(1, (1024, 2048));
    let plain = compile(&g, options(Some(2), WeightFormat::F32));
    assert_eq!(plain.plan_summary().huge_page_bytes, 0, "not asked for");
    let expected = plain.run(&inputs).unwrap();

    let advised = compile(&g, with_huge_pages(WeightFormat::F32));
    assert_eq!(
        advised.plan_summary().kernels,
        vec!["gemv"],
        "{}",
        advised.plan_summary()
    );
    assert_eq!(bits(&advised.run(&inputs).unwrap()[0]), bits(&expected[0]));
    let bytes = advised.plan_summary().huge_page_bytes;
    if !collapse_supported() {
        assert_eq!(bytes, 0, "no huge pages where the platform has no such advice");
        return;
    }
    assert!(bytes >= 6 << 20, "collapsed {bytes} bytes of an 8 MiB weight");
    // The plan streams the very storage given (f32 rows, not transposed): its mapping now holds
    // huge pages.
    let address = weight.as_f32().unwrap().as_ptr() as usize + (4 << 20);
    let huge_kb = huge_kb_of_mapping_at(address).expect("the weight's mapping is in smaps");
    assert!(huge_kb >= 6 << 10, "AnonHugePages {huge_kb} kB in the weight's mapping");
}

#[test]
fn half_decode_weights_are_collapsed_and_multi_row_products_are_left_alone() {
    // Half weights are a derived copy (4 MiB here): it is what the step streams.
    let (g, inputs, _) = projection(1, (1024, 2048));
    let plain = compile(&g, options(Some(2), WeightFormat::F16));
    let advised = compile(&g, with_huge_pages(WeightFormat::F16));
    assert_eq!(
        bits(&advised.run(&inputs).unwrap()[0]),
        bits(&plain.run(&inputs).unwrap()[0])
    );
    let expected_min = if collapse_supported() { 2 << 20 } else { 0 };
    let bytes = advised.plan_summary().huge_page_bytes;
    assert!(bytes >= expected_min, "collapsed {bytes} bytes of a 4 MiB half weight");

    // 64 rows: a matrix product bound by arithmetic, not a stream; nothing is advised.
    let (g, inputs, _) = projection(64, (1024, 2048));
    let advised = compile(&g, with_huge_pages(WeightFormat::F32));
    assert_eq!(advised.plan_summary().huge_page_bytes, 0, "{}", advised.plan_summary());
    assert_eq!(
        bits(&advised.run(&inputs).unwrap()[0]),
        bits(&compile(&g, options(Some(2), WeightFormat::F32)).run(&inputs).unwrap()[0])
    );
}

//! Streamed weights on transparent huge pages (Linux, opt-in with `CpuOptions::huge_pages`).
//!
//! A decode step reads every weight of its matrix-vector products once, front to back, so its
//! speed is the memory read rate. On 4 KiB pages that stream crosses a page every 4 KiB: a TLB
//! miss each time (a two-level walk in a virtual machine) and a restart of the hardware
//! prefetcher. Here, once a plan is built, each constant a matrix-vector step streams is asked to
//! be collapsed onto 2 MiB pages in place (`madvise(MADV_COLLAPSE)`, Linux 6.1 and later; the
//! 2 MiB-aligned interior of its buffer): same address, same values, fewer pages.
//!
//! Measured on the 2-core AMD EPYC guest (2026-11-28, alternated runs): decode +2–8 % (GPT-2 f32
//! and half weights, Stories110M file), and the in-process GEMV sequence 31 → 33 GB/s in slow
//! minutes, 45–47 → 51–53 GB/s in fast ones. The cost is paid once per process when the first
//! plan reading the weights is built: about 0.8 s for 330 MB there (the host backs each fresh huge
//! page anew), which is why it is not the default. A buffer already collapsed costs nothing more,
//! so the generator's per-cache-size decode programs pay it once.
//!
//! Invariants: advice never changes a value or an address, so plans and results are identical with
//! and without it; it is best effort — a kernel without `MADV_COLLAPSE`, or without a free huge
//! page, leaves the pages as they were and only the reported byte count shows it. Prefill's packed
//! weights are not advised (those products are bound by arithmetic, not the read rate).

use super::lower::Kernel;
use super::matmul::Method;
use super::plan::{ConstData, Loc, Plan};

/// Asks for every constant a matrix-vector step of `plan` streams to be backed by huge pages;
/// returns the bytes now in collapsed ranges (0 where the platform has no such advice).
pub(crate) fn back_streamed_weights(plan: &Plan) -> usize {
    let mut streamed = vec![false; plan.consts.len()];
    for step in &plan.steps {
        let product = match &step.kernel {
            Kernel::MatMul(product) => product,
            Kernel::MatMulEpilogue(epilogue) => &epilogue.product,
            _ => continue,
        };
        // A matrix-vector step's operands are the row, then the weight.
        if product.method == Method::GemvRight {
            if let Some(Loc::Const(c)) = step.operands.get(1).map(|o| o.loc) {
                streamed[c] = true;
            }
        }
    }
    plan.consts
        .iter()
        .zip(streamed)
        .filter(|(_, streamed)| *streamed)
        .map(|(data, _)| match data {
            ConstData::Tensor(t) => t.as_f32().map_or(0, |v| collapse(v.as_ptr().cast(), size_of_val(v))),
            ConstData::Half(h) => collapse(h.as_ptr().cast(), size_of_val(&h[..])),
            ConstData::Packed(_) => 0,
        })
        .sum()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
use linux::collapse;

/// Elsewhere there is no such advice (macOS on Apple silicon already uses 16 KiB pages).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn collapse(_start: *const u8, _bytes: usize) -> usize {
    0
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod linux {
    /// The size of a transparent huge page on x86-64 and of the aligned ranges advised.
    const HUGE_PAGE: usize = 2 << 20;

    /// The 2 MiB-aligned part of `[start, start + bytes)`, if any.
    fn aligned_interior(start: usize, bytes: usize) -> Option<(usize, usize)> {
        let first = start.checked_add(HUGE_PAGE - 1)? & !(HUGE_PAGE - 1);
        let end = start.checked_add(bytes)? & !(HUGE_PAGE - 1);
        (end > first).then(|| (first, end - first))
    }

    /// Collapses the aligned interior of a live buffer onto huge pages; returns its bytes on
    /// success.
    #[allow(unsafe_code)]
    pub(super) fn collapse(start: *const u8, bytes: usize) -> usize {
        let Some((first, len)) = aligned_interior(start as usize, bytes) else {
            return 0;
        };
        // SAFETY: `[first, first + len)` lies inside a buffer the caller borrows for the call, so
        // the range is mapped and stays mapped. `MADV_COLLAPSE` changes only which physical pages
        // back it: the kernel copies the contents into the huge page and keeps every address and
        // value, so no Rust reference to the buffer is invalidated. Failure leaves the mapping
        // untouched.
        let status = unsafe { libc::madvise(first as *mut libc::c_void, len, libc::MADV_COLLAPSE) };
        if status == 0 {
            len
        } else {
            0
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn only_whole_aligned_huge_pages_are_advised() {
            assert_eq!(aligned_interior(0, HUGE_PAGE), Some((0, HUGE_PAGE)));
            assert_eq!(aligned_interior(1, HUGE_PAGE), None);
            assert_eq!(aligned_interior(1, 2 * HUGE_PAGE), Some((HUGE_PAGE, HUGE_PAGE)));
            assert_eq!(
                aligned_interior(HUGE_PAGE - 4096, 3 * HUGE_PAGE),
                Some((HUGE_PAGE, 2 * HUGE_PAGE))
            );
            assert_eq!(aligned_interior(usize::MAX - 10, HUGE_PAGE), None);
        }
    }
}

//! `orion doctor` end to end: it always succeeds and, off macOS, says plainly that no ANE is present.

use std::process::Command;

#[test]
fn doctor_reports_devices_and_exits_zero() {
    let out = Command::new(env!("CARGO_BIN_EXE_orion"))
        .arg("doctor")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "doctor failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&format!(
        "platform: {} {}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )));
    assert!(text.contains("device cpu: usable"));
    // The kernel `--products bf16` runs here, as the library decides it.
    let bf16 = format!(
        "cpu --products bf16: {}",
        orion_core::cpu::kernels::bf16_product_kernel()
    );
    assert!(text.contains(&bf16), "{text}");
    // And the matrix-vector kernel (its reading of rows is chosen per CPU vendor).
    let gemv = format!(
        "cpu matrix-vector products: {}",
        orion_core::cpu::kernels::gemv_kernel()
    );
    assert!(text.contains(&gemv), "{text}");
    assert!(text.contains("device ane-sim: usable"));
    if !cfg!(target_vendor = "apple") {
        assert!(text.contains("no ANE is present on this machine"), "{text}");
        assert!(text.contains("device ane: not usable"), "{text}");
    }
}

//! The C-level edge of the real device: opening AppleNeuralEngine.framework with `dlopen`, resolving its
//! four classes (ane.md §1 step 0), and reading host facts with `sysctlbyname`.
//!
//! Invariants: the framework handle is never closed (the classes it registers must outlive every
//! object); a missing class is an error naming it; sysctl strings are read with the length the kernel
//! reports and cut at the first NUL.

use crate::device::host::{FrameworkStatus, HostInfo};
use objc2::runtime::AnyClass;
use std::ffi::{CStr, CString};

/// Where the private framework lives (ane.md §1 step 0).
pub const FRAMEWORK_PATH: &CStr = c"/System/Library/PrivateFrameworks/AppleNeuralEngine.framework/AppleNeuralEngine";

/// The four classes of the in-memory path.
#[derive(Debug, Clone, Copy)]
pub struct AneClasses {
    pub descriptor: &'static AnyClass,
    pub model: &'static AnyClass,
    pub request: &'static AnyClass,
    pub surface_object: &'static AnyClass,
}

/// Opens the framework (once per call; `dlopen` reference-counts) and resolves the classes.
pub fn load_framework() -> Result<AneClasses, String> {
    // SAFETY: FRAMEWORK_PATH is a NUL-terminated string; RTLD_NOW is a valid mode. The returned handle is
    // deliberately never passed to dlclose, so the classes the framework registers stay valid.
    let handle = unsafe { libc::dlopen(FRAMEWORK_PATH.as_ptr(), libc::RTLD_NOW) };
    if handle.is_null() {
        return Err(format!(
            "dlopen {}: {}",
            FRAMEWORK_PATH.to_string_lossy(),
            last_dl_error()
        ));
    }
    let class = |name: &CStr| {
        AnyClass::get(name).ok_or_else(|| {
            format!(
                "class {} is missing from AppleNeuralEngine.framework",
                name.to_string_lossy()
            )
        })
    };
    Ok(AneClasses {
        descriptor: class(c"_ANEInMemoryModelDescriptor")?,
        model: class(c"_ANEInMemoryModel")?,
        request: class(c"_ANERequest")?,
        surface_object: class(c"_ANEIOSurfaceObject")?,
    })
}

fn last_dl_error() -> String {
    // SAFETY: dlerror returns NULL or a pointer to a NUL-terminated string owned by the loader, valid
    // until the next dl* call on this thread; it is copied out immediately.
    let message = unsafe { libc::dlerror() };
    if message.is_null() {
        "unknown error".to_string()
    } else {
        // SAFETY: non-null and NUL-terminated (see above).
        unsafe { CStr::from_ptr(message) }.to_string_lossy().into_owned()
    }
}

/// A string-valued sysctl (`machdep.cpu.brand_string`, `hw.model`, `kern.osproductversion`).
pub fn sysctl_string(name: &str) -> Option<String> {
    let c_name = CString::new(name).ok()?;
    let mut len: libc::size_t = 0;
    // SAFETY: a size query: oldp is NULL, oldlenp points at a valid size_t, no new value is set.
    let rc = unsafe { libc::sysctlbyname(c_name.as_ptr(), std::ptr::null_mut(), &mut len, std::ptr::null_mut(), 0) };
    if rc != 0 || len == 0 {
        return None;
    }
    let mut buffer = vec![0u8; len];
    // SAFETY: oldp points at `len` writable bytes and oldlenp at their count; the kernel writes at most
    // `len` bytes and stores the count written.
    let rc = unsafe {
        libc::sysctlbyname(
            c_name.as_ptr(),
            buffer.as_mut_ptr().cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    if rc != 0 {
        return None;
    }
    buffer.truncate(len);
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    Some(String::from_utf8_lossy(&buffer[..end]).trim().to_string())
}

/// Everything `orion doctor` reports about this Mac.
pub fn host_info() -> HostInfo {
    let mut info = HostInfo::basic();
    info.cpu_brand = sysctl_string("machdep.cpu.brand_string");
    info.hw_model = sysctl_string("hw.model");
    info.os_version = match (sysctl_string("kern.osproductversion"), sysctl_string("kern.osversion")) {
        (Some(v), Some(build)) => Some(format!("{v} ({build})")),
        (v, build) => v.or(build),
    };
    info.framework = match load_framework() {
        Ok(_) => FrameworkStatus::Present,
        Err(reason) => FrameworkStatus::Unusable(reason),
    };
    info
}

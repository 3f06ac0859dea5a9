//! IOSurface-backed I/O buffers (ane.md §1 step 6): a flat byte buffer of `bytes` bytes — width =
//! bytes, height 1, bytesPerElement 1, bytesPerRow = bytes, allocSize = bytes, pixelFormat 0 — whose
//! tensor meaning comes only from the MIL signature.
//!
//! Invariants: every copy in or out happens between a lock and an unlock of the same surface (read-only
//! lock for reads); no lock outlives the copy, so none is held across an evaluation; a copy never
//! touches more than the surface's allocation size.

use objc2::rc::Retained;
use objc2::runtime::AnyObject;
use objc2::AllocAnyThread;
use objc2_foundation::{NSDictionary, NSNumber, NSString};
use objc2_io_surface::{
    IOSurface, IOSurfaceLockOptions, IOSurfacePropertyKeyAllocSize, IOSurfacePropertyKeyBytesPerElement,
    IOSurfacePropertyKeyBytesPerRow, IOSurfacePropertyKeyHeight, IOSurfacePropertyKeyPixelFormat,
    IOSurfacePropertyKeyWidth, IOSurfaceRef,
};

/// One flat IOSurface.
#[derive(Debug)]
pub struct FlatSurface {
    surface: Retained<IOSurface>,
    len: usize,
}

impl FlatSurface {
    /// A new surface of `len` bytes.
    pub fn new(len: usize) -> Result<FlatSurface, String> {
        let number = |v: usize| NSNumber::new_usize(v);
        let values = [
            number(len),
            number(1),
            number(1),
            number(len),
            number(len),
            NSNumber::new_u32(0),
        ];
        // SAFETY: the property keys are framework-provided NSString statics, valid for the process.
        let keys: [&NSString; 6] = unsafe {
            [
                IOSurfacePropertyKeyWidth,
                IOSurfacePropertyKeyHeight,
                IOSurfacePropertyKeyBytesPerElement,
                IOSurfacePropertyKeyBytesPerRow,
                IOSurfacePropertyKeyAllocSize,
                IOSurfacePropertyKeyPixelFormat,
            ]
        };
        let objects: Vec<&AnyObject> = values.iter().map(|n| -> &AnyObject { n }).collect();
        let properties = NSDictionary::<NSString, AnyObject>::from_slices(&keys, &objects);
        let surface = IOSurface::initWithProperties(IOSurface::alloc(), &properties)
            .ok_or_else(|| format!("IOSurface creation failed for {len} bytes"))?;
        let allocated = usize::try_from(surface.allocationSize()).unwrap_or(0);
        if allocated < len {
            return Err(format!("IOSurface of {len} bytes came back with {allocated} bytes"));
        }
        Ok(FlatSurface { surface, len })
    }

    /// Allocation size asked for, bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The `IOSurfaceRef` the framework expects (`IOSurface` is toll-free bridged with it).
    pub fn as_ref_ptr(&self) -> *const IOSurfaceRef {
        Retained::as_ptr(&self.surface).cast()
    }

    /// Copies `data` to offset 0 and zero-fills the rest (C20: packed at offset 0).
    pub fn write(&self, data: &[u8]) -> Result<(), String> {
        if data.len() > self.len {
            return Err(format!("{} bytes do not fit a {}-byte surface", data.len(), self.len));
        }
        self.locked(IOSurfaceLockOptions::empty(), |base| {
            // SAFETY: `base` is the locked surface's base address with at least `self.len` writable bytes
            // (checked at creation); `data` is a distinct host buffer of at most `self.len` bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(data.as_ptr(), base, data.len());
                std::ptr::write_bytes(base.add(data.len()), 0, self.len - data.len());
            }
        })
    }

    /// Copies the surface's first `out.len()` bytes into `out`.
    pub fn read(&self, out: &mut [u8]) -> Result<(), String> {
        if out.len() > self.len {
            return Err(format!(
                "cannot read {} bytes from a {}-byte surface",
                out.len(),
                self.len
            ));
        }
        self.locked(IOSurfaceLockOptions::ReadOnly, |base| {
            // SAFETY: `base` points at `self.len` >= `out.len()` readable bytes while the read-only lock
            // is held; `out` is a distinct host buffer.
            unsafe { std::ptr::copy_nonoverlapping(base.cast_const(), out.as_mut_ptr(), out.len()) }
        })
    }

    fn locked(&self, options: IOSurfaceLockOptions, copy: impl FnOnce(*mut u8)) -> Result<(), String> {
        let rc = self.surface.lockWithOptions_seed(options, std::ptr::null_mut());
        if rc != 0 {
            return Err(format!("IOSurfaceLock failed with kern_return {rc}"));
        }
        copy(self.surface.baseAddress().as_ptr().cast());
        let rc = self.surface.unlockWithOptions_seed(options, std::ptr::null_mut());
        if rc != 0 {
            return Err(format!("IOSurfaceUnlock failed with kern_return {rc}"));
        }
        Ok(())
    }
}

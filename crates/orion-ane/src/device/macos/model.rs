//! One `_ANEInMemoryModel` and the Objective-C messages sent to it (ane.md §1 steps 1–5, 7–9). Every
//! message has its argument types spelled out: `NSData` MIL text (C01), a weight dictionary that is
//! never nil (C02) with values `{offset: 0, data: whole file}` (C03), QoS 21 as `unsigned int`, `NSError`
//! out-parameters turned into `Err(message)`.
//!
//! Invariants: a [`Model`] exists only after its descriptor and model objects were created and its
//! compile directory written (C04); requests are built with indices `0..n` in the order of the surfaces
//! given, which the caller puts in binding order (C19).

use super::ffi::AneClasses;
use super::surface::FlatSurface;
use crate::device::WeightDict;
use objc2::msg_send;
use objc2::rc::Retained;
use objc2::runtime::AnyObject;
use objc2_foundation::{NSArray, NSData, NSDictionary, NSError, NSNumber, NSString};

/// QoS every known caller passes (ane.md §1: 21 = `QOS_CLASS_DEFAULT`).
pub const QOS: u32 = 21;

/// A created (not yet compiled) in-memory model.
#[derive(Debug)]
pub struct Model {
    object: Retained<AnyObject>,
}

fn error_text(error: &NSError) -> String {
    format!(
        "{} (domain {}, code {:#x})",
        error.localizedDescription(),
        error.domain(),
        error.code()
    )
}

fn empty_options() -> Retained<NSDictionary<NSString, AnyObject>> {
    NSDictionary::new()
}

/// `{ "<MIL path>": { "offset": 0, "data": <whole file> } }`; empty, never nil, without weights (C02).
fn weight_dictionary(weights: &WeightDict) -> Retained<NSDictionary<NSString, AnyObject>> {
    let offset_key = NSString::from_str("offset");
    let data_key = NSString::from_str("data");
    let keys: Vec<Retained<NSString>> = weights.keys().map(|k| NSString::from_str(k)).collect();
    let entries: Vec<Retained<NSDictionary<NSString, AnyObject>>> = weights
        .values()
        .map(|bytes| {
            let offset = NSNumber::new_u64(0);
            let data = NSData::with_bytes(bytes);
            let values: [&AnyObject; 2] = [&offset, &data];
            NSDictionary::from_slices(&[&*offset_key, &*data_key], &values)
        })
        .collect();
    let key_refs: Vec<&NSString> = keys.iter().map(|k| &**k).collect();
    let value_refs: Vec<&AnyObject> = entries.iter().map(|d| -> &AnyObject { d }).collect();
    NSDictionary::from_slices(&key_refs, &value_refs)
}

impl Model {
    /// Steps 1–2: descriptor from the MIL text and weights, then the model.
    pub fn create(classes: &AneClasses, mil_text: &[u8], weights: &WeightDict) -> Result<Model, String> {
        let text = NSData::with_bytes(mil_text);
        let dictionary = weight_dictionary(weights);
        let no_options: Option<&AnyObject> = None;
        // SAFETY: `+[_ANEInMemoryModelDescriptor modelWithMILText:(NSData*)weights:(NSDictionary*)
        // optionsPlist:(id)]` takes three objects and returns an autoreleased object or nil (ane.md §1).
        let descriptor: Option<Retained<AnyObject>> = unsafe {
            msg_send![classes.descriptor, modelWithMILText: &*text, weights: &*dictionary, optionsPlist: no_options]
        };
        let descriptor = descriptor.ok_or("modelWithMILText:weights:optionsPlist: returned nil")?;
        // SAFETY: `+[_ANEInMemoryModel inMemoryModelWithDescriptor:(id)]` returns an object or nil.
        let object: Option<Retained<AnyObject>> =
            unsafe { msg_send![classes.model, inMemoryModelWithDescriptor: &*descriptor] };
        let object = object.ok_or("inMemoryModelWithDescriptor: returned nil")?;
        Ok(Model { object })
    }

    /// Step 3: the identifier naming the compile directory.
    pub fn hex_identifier(&self) -> Result<String, String> {
        // SAFETY: `-[_ANEInMemoryModel hexStringIdentifier]` returns an NSString or nil.
        let hex: Option<Retained<NSString>> = unsafe { msg_send![&*self.object, hexStringIdentifier] };
        hex.map(|h| h.to_string())
            .ok_or_else(|| "hexStringIdentifier returned nil".to_string())
    }

    /// Step 4 (counts against the per-process limit, C06).
    pub fn compile(&self) -> Result<(), String> {
        let options = empty_options();
        // SAFETY: `-compileWithQoS:(unsigned int)options:(NSDictionary*)error:(NSError**)` → BOOL; the
        // `error: _` form passes a valid out-pointer and turns NO into the returned NSError.
        let result: Result<(), Retained<NSError>> =
            unsafe { msg_send![&*self.object, compileWithQoS: QOS, options: &*options, error: _] };
        result.map_err(|e| error_text(&e))
    }

    /// Step 5.
    pub fn load(&self) -> Result<(), String> {
        let options = empty_options();
        // SAFETY: `-loadWithQoS:(unsigned int)options:(NSDictionary*)error:(NSError**)` → BOOL.
        let result: Result<(), Retained<NSError>> =
            unsafe { msg_send![&*self.object, loadWithQoS: QOS, options: &*options, error: _] };
        result.map_err(|e| error_text(&e))
    }

    /// Step 8: synchronous; the output surfaces hold the results on return.
    pub fn evaluate(&self, request: &Request) -> Result<(), String> {
        let options = empty_options();
        // SAFETY: `-evaluateWithQoS:(unsigned int)options:(NSDictionary*)request:(_ANERequest*)
        // error:(NSError**)` → BOOL; `request` keeps its surfaces alive for the call.
        let result: Result<(), Retained<NSError>> = unsafe {
            msg_send![&*self.object, evaluateWithQoS: QOS, options: &*options, request: &*request.object, error: _]
        };
        result.map_err(|e| error_text(&e))
    }

    /// Step 9 (C05).
    pub fn unload(&self) -> Result<(), String> {
        // SAFETY: `-unloadWithQoS:(unsigned int)error:(NSError**)` → BOOL.
        let result: Result<(), Retained<NSError>> = unsafe { msg_send![&*self.object, unloadWithQoS: QOS, error: _] };
        result.map_err(|e| error_text(&e))
    }
}

/// A request over one set of surfaces (step 7), built once and reused.
#[derive(Debug)]
pub struct Request {
    object: Retained<AnyObject>,
    pub inputs: Vec<FlatSurface>,
    pub outputs: Vec<FlatSurface>,
}

impl Request {
    /// Wraps every surface in `_ANEIOSurfaceObject` and builds the `_ANERequest` with indices `0..n`.
    pub fn new(classes: &AneClasses, inputs: Vec<FlatSurface>, outputs: Vec<FlatSurface>) -> Result<Request, String> {
        let wrap = |surfaces: &[FlatSurface]| -> Result<Vec<Retained<AnyObject>>, String> {
            surfaces
                .iter()
                .map(|s| {
                    // SAFETY: `+[_ANEIOSurfaceObject objectWithIOSurface:(IOSurfaceRef)]`; the pointer is a
                    // live IOSurface owned by `s`, and the Request built here owns `s`, so the surface outlives both.
                    let object: Option<Retained<AnyObject>> =
                        unsafe { msg_send![classes.surface_object, objectWithIOSurface: s.as_ref_ptr()] };
                    object.ok_or_else(|| "objectWithIOSurface: returned nil".to_string())
                })
                .collect()
        };
        let indices = |n: usize| {
            let numbers: Vec<Retained<NSNumber>> = (0..n).map(NSNumber::new_usize).collect();
            NSArray::from_retained_slice(&numbers)
        };
        let in_objects = NSArray::from_retained_slice(&wrap(&inputs)?);
        let out_objects = NSArray::from_retained_slice(&wrap(&outputs)?);
        let (in_indices, out_indices) = (indices(inputs.len()), indices(outputs.len()));
        let procedure = NSNumber::new_usize(0);
        let none: Option<&AnyObject> = None;
        // SAFETY: `+[_ANERequest requestWithInputs:(NSArray*)inputIndices:(NSArray*)outputs:(NSArray*)
        // outputIndices:(NSArray*)weightsBuffer:(id)perfStats:(id)procedureIndex:(NSNumber*)]`, every
        // argument an object or nil (weightsBuffer is ignored, C08; perfStats unused).
        let object: Option<Retained<AnyObject>> = unsafe {
            msg_send![classes.request, requestWithInputs: &*in_objects, inputIndices: &*in_indices,
                outputs: &*out_objects, outputIndices: &*out_indices, weightsBuffer: none, perfStats: none,
                procedureIndex: &*procedure]
        };
        let object = object.ok_or("requestWithInputs:… returned nil")?;
        Ok(Request {
            object,
            inputs,
            outputs,
        })
    }

    /// Allocation sizes of the input and output surfaces.
    pub fn sizes(&self) -> (Vec<usize>, Vec<usize>) {
        (
            self.inputs.iter().map(FlatSurface::len).collect(),
            self.outputs.iter().map(FlatSurface::len).collect(),
        )
    }
}

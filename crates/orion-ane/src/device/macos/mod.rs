//! The real ANE on macOS ([`RealAne`], an [`AneDevice`]): the private-API sequence of ane.md §1 over
//! AppleNeuralEngine.framework, opened at run time. The only module of the crate with `unsafe` (each
//! block carries its `// SAFETY:` argument); everything that is not a call into Apple's frameworks —
//! compile directory, known causes, binding order, surface sizes — lives in shared, Linux-tested code
//! (`device::workdir`, `device::errors`, `surfaces`).
//!
//! - `ffi`: dlopen, class lookup, sysctl;
//! - `surface`: IOSurface-backed flat buffers;
//! - `model`: the model and request objects and their messages.
//!
//! Invariants: a compile is refused once the profile's compile budget is used (C06, counted whether or
//! not it succeeds); a program's compile directory is complete before compile (C04) and removed with the
//! program; every loaded program is unloaded when the device is dropped (C05); one request per
//! (program, surface sizes) is built and reused; [`EvalReport::estimated_ms`] is the *measured* wall
//! time of the evaluate call on this device (no cost-model estimate is made), and
//! [`AneDevice::compile_ms`] the measured wall time of building the program.
//! Nothing here has been run on hardware by the project.

mod ffi;
mod model;
mod surface;

pub use ffi::{host_info, load_framework, sysctl_string, AneClasses, FRAMEWORK_PATH};

use super::errors::{compile_failure_cause, describe, evaluate_failure_cause, status_in_message, Stage};
use super::workdir::WorkDir;
use super::{AneDevice, DeviceError, EvalReport, ProgramId, Surface, WeightDict, STATUS_PROGRAM_INFERENCE_ERROR};
use crate::profile::{ChipProfile, EvalEstimate};
use model::{Model, Request};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;
use surface::FlatSurface;

/// Pause before an isolated evaluation, long enough for the engine to leave its busy state (C40).
const IDLE_BEFORE_ISOLATED: std::time::Duration = std::time::Duration::from_millis(20);

/// One compiled program: its model object, compile directory and cached request.
#[derive(Debug)]
struct RealProgram {
    label: String,
    model: Model,
    loaded: bool,
    request: Option<Request>,
    weight_bytes: f64,
    /// Wall time of building the program (model objects, compile directory, compile), ms.
    compile_ms: f64,
    /// Dropped after the model (field order): the directory outlives every use of the model.
    workdir: WorkDir,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    compiles: u32,
    programs: HashMap<u64, RealProgram>,
}

/// Holder of the Objective-C objects, used only under the device's mutex.
#[derive(Debug)]
struct Guarded(Mutex<State>);

// SAFETY: the Objective-C objects inside (`_ANEInMemoryModel`, `_ANERequest`, IOSurfaces) are
// reference-counted with atomic retain/release and are only ever touched while the mutex is held, so no
// two threads message them at once; nothing in them is tied to the creating thread's run loop.
unsafe impl Send for Guarded {}
// SAFETY: shared access goes through the mutex only (see `Send`).
unsafe impl Sync for Guarded {}

/// The Neural Engine of this Mac, driven through the private framework.
#[derive(Debug)]
pub struct RealAne {
    name: String,
    profile: ChipProfile,
    classes: AneClasses,
    temp_root: PathBuf,
    state: Guarded,
}

// SAFETY: `AneClasses` holds `&'static AnyClass` pointers to classes registered for the process lifetime;
// classes are immutable to us and the Objective-C runtime is thread-safe for class objects.
unsafe impl Send for RealAne {}
// SAFETY: see `Send`; all mutable state is behind `state`'s mutex.
unsafe impl Sync for RealAne {}

impl RealAne {
    /// Opens the framework and resolves its classes (failing early with a clear error, ane.md §1 step 0).
    /// `profile` is the chip's profile (detect it with [`super::host::HostInfo::chip`] or load a probed
    /// one).
    pub fn open(profile: ChipProfile) -> Result<RealAne, DeviceError> {
        let classes = load_framework().map_err(|message| DeviceError::Load {
            program: "AppleNeuralEngine.framework".to_string(),
            message,
        })?;
        let temp_root = PathBuf::from(objc2_foundation::NSTemporaryDirectory().to_string());
        Ok(RealAne {
            name: format!("ane-{}", profile.arch),
            profile,
            classes,
            temp_root,
            state: Guarded(Mutex::new(State::default())),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn build(
        &self,
        label: &str,
        mil_text: &[u8],
        weights: &WeightDict,
        before: u32,
    ) -> Result<RealProgram, DeviceError> {
        let fail = |message: String| {
            let cause = compile_failure_cause(&message, before);
            DeviceError::Compile {
                program: label.to_string(),
                message: describe(Stage::Compile, label, &message, cause),
                rule: cause.map(|c| c.rule),
            }
        };
        let started = Instant::now();
        let model = objc2::rc::autoreleasepool(|_| Model::create(&self.classes, mil_text, weights)).map_err(fail)?;
        let hex = objc2::rc::autoreleasepool(|_| model.hex_identifier()).map_err(fail)?;
        let workdir = WorkDir::create(&self.temp_root, &hex, mil_text, weights, label)?;
        objc2::rc::autoreleasepool(|_| model.compile()).map_err(fail)?;
        Ok(RealProgram {
            label: label.to_string(),
            model,
            loaded: false,
            request: None,
            weight_bytes: weights.values().map(|w| w.len() as f64).sum(),
            compile_ms: started.elapsed().as_secs_f64() * 1e3,
            workdir,
        })
    }
}

fn unknown(id: ProgramId) -> DeviceError {
    DeviceError::UnknownProgram {
        program: id.to_string(),
    }
}

fn eval_error_for(
    label: &str,
    message: String,
    inputs: &[usize],
    outputs: &[usize],
    profile: &ChipProfile,
) -> DeviceError {
    let cause = evaluate_failure_cause(inputs, outputs, &profile.limits);
    DeviceError::Evaluate {
        program: label.to_string(),
        status: status_in_message(&message).unwrap_or(STATUS_PROGRAM_INFERENCE_ERROR),
        message: describe(Stage::Evaluate, label, &message, cause),
        rule: cause.map(|c| c.rule),
    }
}

/// The program's request for these surface sizes, rebuilt only when the sizes change.
fn request_for<'a>(
    classes: &AneClasses,
    cached: &'a mut Option<Request>,
    in_sizes: &[usize],
    out_sizes: &[usize],
) -> Result<&'a Request, String> {
    let reusable = cached
        .as_ref()
        .is_some_and(|r| r.sizes() == (in_sizes.to_vec(), out_sizes.to_vec()));
    if !reusable {
        let make = |sizes: &[usize]| {
            sizes
                .iter()
                .map(|&n| FlatSurface::new(n))
                .collect::<Result<Vec<_>, _>>()
        };
        let request = objc2::rc::autoreleasepool(|_| -> Result<Request, String> {
            Request::new(classes, make(in_sizes)?, make(out_sizes)?)
        })?;
        *cached = Some(request);
    }
    cached.as_ref().ok_or_else(|| "no request".to_string())
}

impl AneDevice for RealAne {
    fn name(&self) -> &str {
        &self.name
    }

    fn profile(&self) -> &ChipProfile {
        &self.profile
    }

    fn compile(&self, mil_text: &[u8], weights: &WeightDict) -> Result<ProgramId, DeviceError> {
        let (id, before) = {
            let mut state = self.lock();
            let budget = self.profile.limits.compile_budget;
            if state.compiles >= budget {
                return Err(DeviceError::BudgetExhausted {
                    used: state.compiles,
                    budget,
                });
            }
            state.compiles += 1;
            state.next_id += 1;
            (state.next_id, state.compiles - 1)
        };
        let label = ProgramId(id).to_string();
        let program = self.build(&label, mil_text, weights, before)?;
        self.lock().programs.insert(id, program);
        Ok(ProgramId(id))
    }

    fn load(&self, id: ProgramId) -> Result<(), DeviceError> {
        let mut state = self.lock();
        let p = state.programs.get_mut(&id.0).ok_or_else(|| unknown(id))?;
        if p.loaded {
            return Err(DeviceError::Load {
                program: p.label.clone(),
                message: "program is already loaded".into(),
            });
        }
        objc2::rc::autoreleasepool(|_| p.model.load()).map_err(|message| DeviceError::Load {
            program: p.label.clone(),
            message,
        })?;
        p.loaded = true;
        Ok(())
    }

    fn evaluate(&self, id: ProgramId, inputs: &[Surface], outputs: &mut [Surface]) -> Result<EvalReport, DeviceError> {
        let mut state = self.lock();
        let p = state.programs.get_mut(&id.0).ok_or_else(|| unknown(id))?;
        let in_sizes: Vec<usize> = inputs.iter().map(Surface::len).collect();
        let out_sizes: Vec<usize> = outputs.iter().map(Surface::len).collect();
        if !p.loaded {
            return Err(eval_error_for(
                &p.label,
                "program is not loaded".into(),
                &in_sizes,
                &out_sizes,
                &self.profile,
            ));
        }
        let request = match request_for(&self.classes, &mut p.request, &in_sizes, &out_sizes) {
            Ok(r) => r,
            Err(m) => return Err(eval_error_for(&p.label, m, &in_sizes, &out_sizes, &self.profile)),
        };
        let copied_in = request
            .inputs
            .iter()
            .zip(inputs)
            .try_for_each(|(dst, src)| dst.write(src.bytes()));
        let started = Instant::now();
        let result = copied_in.and_then(|()| objc2::rc::autoreleasepool(|_| p.model.evaluate(request)));
        let measured_ms = started.elapsed().as_secs_f64() * 1e3;
        let copied_out = result.and_then(|()| {
            request
                .outputs
                .iter()
                .zip(outputs.iter_mut())
                .try_for_each(|(src, dst)| src.read(dst.bytes_mut()))
        });
        if let Err(m) = copied_out {
            return Err(eval_error_for(&p.label, m, &in_sizes, &out_sizes, &self.profile));
        }
        let io_bytes = in_sizes.iter().chain(&out_sizes).sum::<usize>() as f64;
        Ok(EvalReport {
            estimated_ms: measured_ms,
            estimate: EvalEstimate {
                floor_ms: 0.0,
                compute_ms: measured_ms,
                bandwidth_ms: 0.0,
                total_ms: measured_ms,
                shape_efficiency: 1.0,
                sram_efficiency: 1.0,
            },
            flops: 0.0,
            io_bytes,
            weight_bytes: p.weight_bytes,
            layout_efficiency: 1.0,
        })
    }

    fn unload(&self, id: ProgramId) -> Result<(), DeviceError> {
        let mut state = self.lock();
        let p = state.programs.get_mut(&id.0).ok_or_else(|| unknown(id))?;
        if !p.loaded {
            return Err(DeviceError::Unload {
                program: p.label.clone(),
                message: "program is not loaded".into(),
            });
        }
        objc2::rc::autoreleasepool(|_| p.model.unload()).map_err(|message| DeviceError::Unload {
            program: p.label.clone(),
            message,
        })?;
        p.loaded = false;
        Ok(())
    }

    fn compile_count(&self) -> u32 {
        self.lock().compiles
    }

    fn overwrite_weight_file(&self, id: ProgramId, path: &str, bytes: &[u8]) -> Result<(), DeviceError> {
        let state = self.lock();
        let p = state.programs.get(&id.0).ok_or_else(|| unknown(id))?;
        p.workdir.overwrite_weight_file(path, bytes)
    }

    fn compile_ms(&self, id: ProgramId) -> Option<f64> {
        self.lock().programs.get(&id.0).map(|p| p.compile_ms)
    }

    /// Waits [`IDLE_BEFORE_ISOLATED`] so that the engine has gone idle, then evaluates (wall time).
    fn evaluate_isolated(
        &self,
        id: ProgramId,
        inputs: &[Surface],
        outputs: &mut [Surface],
    ) -> Result<EvalReport, DeviceError> {
        std::thread::sleep(IDLE_BEFORE_ISOLATED);
        self.evaluate(id, inputs, outputs)
    }
}

impl Drop for RealAne {
    fn drop(&mut self) {
        let mut state = self.lock();
        for p in state.programs.values_mut() {
            if p.loaded {
                // C05: unload everything; a failure while dropping cannot be reported.
                let _ = objc2::rc::autoreleasepool(|_| p.model.unload());
                p.loaded = false;
            }
        }
        // Dropping the programs releases the models, then removes every compile directory.
        state.programs.clear();
    }
}

//! One MuJoCo model and its data, owned together; state moves in and out only
//! through `mj_getState`/`mj_setState`.

use std::ffi::{c_char, CString};

use super::library::{
    api, report_warnings, take_warnings, Api, DataPtr, ModelPtr, STATE_CTRL, STATE_QPOS, STATE_QVEL,
};
use crate::EnvError;

/// A compiled model with its simulation data.
pub(crate) struct Simulation {
    api: &'static Api,
    model: ModelPtr,
    data: DataPtr,
    /// Sizes of `qpos`, `qvel` and `ctrl`.
    pub nq: usize,
    pub nv: usize,
    pub nu: usize,
    /// `qpos` then `qvel`, reused for every state read and write.
    buffer: Vec<f64>,
    /// The model file, for messages.
    file: String,
}

// SAFETY: the model and data are owned by this value alone and MuJoCo keeps no
// thread-bound state in them; moving them to another thread is sound.
unsafe impl Send for Simulation {}

/// Warnings MuJoCo raises while compiling these models that say nothing about the
/// simulation (Gymnasium's half_cheetah.xml uses a deprecated compiler attribute).
const EXPECTED_LOAD_WARNINGS: [&str; 1] = ["'settotalmass' is deprecated"];

impl Simulation {
    /// Loads the model file `file` of the MuJoCo install.
    pub fn load(file: &str) -> Result<Self, EnvError> {
        let api = api()?;
        let path = api.install.model(file);
        let bad = |reason: String| EnvError::Mujoco {
            what: format!("loading {}", path.display()),
            reason,
        };
        let c_path = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| bad("the path holds a NUL byte".into()))?;
        let mut error = [0 as c_char; 1000];
        // SAFETY: a NUL-terminated path, no virtual file system, and an error buffer
        // of the size passed.
        let model = unsafe {
            (api.load_xml)(
                c_path.as_ptr(),
                std::ptr::null(),
                error.as_mut_ptr(),
                error.len() as i32,
            )
        };
        let warnings = take_warnings();
        if model.is_null() {
            // SAFETY: MuJoCo writes a NUL-terminated message into the buffer.
            let message = unsafe { std::ffi::CStr::from_ptr(error.as_ptr()) }.to_string_lossy();
            return Err(bad(format!("{message} {}", warnings.join(" "))
                .trim()
                .to_string()));
        }
        for warning in warnings {
            if !EXPECTED_LOAD_WARNINGS.iter().any(|w| warning.contains(w)) {
                eprintln!(
                    "flowrl: MuJoCo warning (loading {}): {warning}",
                    path.display()
                );
            }
        }
        // SAFETY: `model` is a valid compiled model.
        let data = unsafe { (api.make_data)(model) };
        if data.is_null() {
            // SAFETY: the model is ours and no data refers to it.
            unsafe { (api.delete_model)(model) };
            return Err(bad("mj_makeData returned no data".into()));
        }
        // SAFETY: a valid model; the signatures are single state components.
        let size = |sig| unsafe { (api.state_size)(model, sig) } as usize;
        let (nq, nv, nu) = (size(STATE_QPOS), size(STATE_QVEL), size(STATE_CTRL));
        Ok(Simulation {
            api,
            model,
            data,
            nq,
            nv,
            nu,
            buffer: vec![0.0; nq + nv],
            file: file.to_string(),
        })
    }

    /// `mj_resetData`: the model's initial state, time 0, zero controls.
    pub fn reset(&mut self) {
        // SAFETY: model and data are valid and belong together.
        unsafe { (self.api.reset_data)(self.model, self.data) }
    }

    /// `qpos` and `qvel`.
    pub fn positions_velocities(&mut self) -> (&[f64], &[f64]) {
        // SAFETY: the buffer holds exactly nq + nv values, the size of this signature.
        unsafe {
            (self.api.get_state)(
                self.model,
                self.data,
                self.buffer.as_mut_ptr(),
                STATE_QPOS | STATE_QVEL,
            )
        };
        self.buffer.split_at(self.nq)
    }

    /// Sets `qpos` and `qvel`, then `mj_forward` (Gymnasium's `set_state`).
    pub fn set_positions_velocities(&mut self, qpos: &[f64], qvel: &[f64]) {
        assert!(
            qpos.len() == self.nq && qvel.len() == self.nv,
            "{}: state of {} + {} values, expected {} + {}",
            self.file,
            qpos.len(),
            qvel.len(),
            self.nq,
            self.nv
        );
        self.buffer[..self.nq].copy_from_slice(qpos);
        self.buffer[self.nq..].copy_from_slice(qvel);
        // SAFETY: the buffer holds exactly nq + nv values; model and data are valid.
        unsafe {
            (self.api.set_state)(
                self.model,
                self.data,
                self.buffer.as_ptr(),
                STATE_QPOS | STATE_QVEL,
            );
            (self.api.forward)(self.model, self.data);
        }
    }

    /// Sets the controls, steps `frame_skip` times, then `mj_rnePostConstraint`
    /// (Gymnasium's `do_simulation`).
    pub fn simulate(&mut self, ctrl: &[f64], frame_skip: usize) {
        assert_eq!(ctrl.len(), self.nu, "{}: controls", self.file);
        // SAFETY: `ctrl` holds exactly nu values, the size of this signature; model
        // and data are valid.
        unsafe {
            (self.api.set_state)(self.model, self.data, ctrl.as_ptr(), STATE_CTRL);
            for _ in 0..frame_skip {
                (self.api.step)(self.model, self.data);
            }
            (self.api.rne_post_constraint)(self.model, self.data);
        }
        report_warnings(&self.file);
    }
}

impl Drop for Simulation {
    fn drop(&mut self) {
        // SAFETY: both were made by MuJoCo for this value; the data goes first.
        unsafe {
            (self.api.delete_data)(self.data);
            (self.api.delete_model)(self.model);
        }
    }
}

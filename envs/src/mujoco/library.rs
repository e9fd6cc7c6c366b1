//! libmujoco loaded at run time: nothing of MuJoCo is needed to build flowrl.
//!
//! The library is opened once per process from the install folder
//! ([`install::Install`]), its version is checked with `mj_version()`, and its
//! warning and error hooks are pointed at flowrl's own handlers so that MuJoCo never
//! writes `MUJOCO_LOG.TXT` into the user's working folder nor waits on standard
//! input. Only functions are called; no struct layout of `mjModel`/`mjData` is
//! assumed (state moves through `mj_getState`/`mj_setState`).

use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use super::install::{Install, MUJOCO_VERSION, MUJOCO_VERSION_NUMBER};
use crate::EnvError;

/// An opaque `mjModel*`.
pub(crate) type ModelPtr = *mut c_void;
/// An opaque `mjData*`.
pub(crate) type DataPtr = *mut c_void;

/// `mjSTATE_QPOS` (mjtype.h, 3.17.0).
pub(crate) const STATE_QPOS: c_int = 1 << 1;
/// `mjSTATE_QVEL`.
pub(crate) const STATE_QVEL: c_int = 1 << 2;
/// `mjSTATE_CTRL`.
pub(crate) const STATE_CTRL: c_int = 1 << 6;

/// The C functions flowrl calls, resolved once.
pub(crate) struct Api {
    pub load_xml:
        unsafe extern "C" fn(*const c_char, *const c_void, *mut c_char, c_int) -> ModelPtr,
    pub make_data: unsafe extern "C" fn(ModelPtr) -> DataPtr,
    pub delete_data: unsafe extern "C" fn(DataPtr),
    pub delete_model: unsafe extern "C" fn(ModelPtr),
    pub reset_data: unsafe extern "C" fn(ModelPtr, DataPtr),
    pub forward: unsafe extern "C" fn(ModelPtr, DataPtr),
    pub step: unsafe extern "C" fn(ModelPtr, DataPtr),
    pub rne_post_constraint: unsafe extern "C" fn(ModelPtr, DataPtr),
    pub state_size: unsafe extern "C" fn(ModelPtr, c_int) -> c_int,
    pub get_state: unsafe extern "C" fn(ModelPtr, DataPtr, *mut f64, c_int),
    pub set_state: unsafe extern "C" fn(ModelPtr, DataPtr, *const f64, c_int),
    /// Where the model files live.
    pub install: Install,
    /// Kept open for the process: the function pointers above point into it.
    _library: libloading::Library,
}

/// Warnings MuJoCo raised through `mju_user_warning` and not yet taken.
static WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// MuJoCo's warning hook: keeps the message for flowrl to report.
extern "C" fn on_warning(message: *const c_char) {
    if let Ok(mut warnings) = WARNINGS.lock() {
        warnings.push(message_text(message));
    }
}

/// The text of a message MuJoCo passes to a hook.
fn message_text(message: *const c_char) -> String {
    if message.is_null() {
        return String::from("(no message)");
    }
    // SAFETY: MuJoCo passes a NUL-terminated message.
    unsafe { CStr::from_ptr(message) }
        .to_string_lossy()
        .into_owned()
}

/// MuJoCo's error hook. MuJoCo cannot continue after an error (its default handler
/// prints, waits for Enter and exits); flowrl says what happened and aborts.
extern "C" fn on_error(message: *const c_char) {
    eprintln!("flowrl: fatal MuJoCo error: {}", message_text(message));
    std::process::abort();
}

/// The warnings raised since the last call, oldest first.
pub(crate) fn take_warnings() -> Vec<String> {
    WARNINGS
        .lock()
        .map(|mut w| std::mem::take(&mut *w))
        .unwrap_or_default()
}

/// Reports the warnings raised since the last call on standard error, once each
/// message, naming `context` (MuJoCo raises its simulation warnings, such as an
/// unstable simulation being reset, once per `mjData`).
pub(crate) fn report_warnings(context: &str) {
    for warning in take_warnings() {
        eprintln!("flowrl: MuJoCo warning ({context}): {warning}");
    }
}

/// The process-wide library, or why it could not be opened.
static API: OnceLock<Result<Api, EnvError>> = OnceLock::new();

/// The library, opened on first use.
pub(crate) fn api() -> Result<&'static Api, EnvError> {
    API.get_or_init(|| Install::locate().and_then(open))
        .as_ref()
        .map_err(Clone::clone)
}

/// Resolves one symbol, with an error naming it and the library.
fn symbol<T: Copy>(library: &libloading::Library, path: &Path, name: &str) -> Result<T, EnvError> {
    // SAFETY: the caller states the symbol's C type; the names and types are those
    // of mujoco.h 3.17.0 (see ../shared/fixtures/mujoco/SETUP.md).
    unsafe { library.get::<T>(name.as_bytes()) }
        .map(|s| *s)
        .map_err(|e| EnvError::Mujoco {
            what: format!("{}: symbol `{name}`", path.display()),
            reason: e.to_string(),
        })
}

/// Opens the library of an install, checks its version and installs the hooks.
fn open(install: Install) -> Result<Api, EnvError> {
    let path = install.library();
    // SAFETY: loading libmujoco runs no initialisers with preconditions on us.
    let library = unsafe { libloading::Library::new(&path) }.map_err(|e| EnvError::Mujoco {
        what: format!("loading {}", path.display()),
        reason: e.to_string(),
    })?;
    let version: unsafe extern "C" fn() -> c_int = symbol(&library, &path, "mj_version")?;
    // SAFETY: `mj_version` takes nothing and returns an int.
    let found = unsafe { version() };
    if found != MUJOCO_VERSION_NUMBER {
        return Err(EnvError::Mujoco {
            what: format!("{}: mj_version()", path.display()),
            reason: format!(
                "expected {MUJOCO_VERSION_NUMBER} (MuJoCo {MUJOCO_VERSION}), found {found}; \
                 run `flowrl setup mujoco`"
            ),
        });
    }
    for (hook, handler) in [
        (
            "mju_user_warning",
            on_warning as extern "C" fn(*const c_char),
        ),
        ("mju_user_error", on_error),
    ] {
        let slot: *mut Option<extern "C" fn(*const c_char)> = symbol(&library, &path, hook)?;
        // SAFETY: the symbol is MuJoCo's global `void (*hook)(const char*)`; it is
        // written once, here, before any other MuJoCo call.
        unsafe { *slot = Some(handler) };
    }
    Ok(Api {
        load_xml: symbol(&library, &path, "mj_loadXML")?,
        make_data: symbol(&library, &path, "mj_makeData")?,
        delete_data: symbol(&library, &path, "mj_deleteData")?,
        delete_model: symbol(&library, &path, "mj_deleteModel")?,
        reset_data: symbol(&library, &path, "mj_resetData")?,
        forward: symbol(&library, &path, "mj_forward")?,
        step: symbol(&library, &path, "mj_step")?,
        rne_post_constraint: symbol(&library, &path, "mj_rnePostConstraint")?,
        state_size: symbol(&library, &path, "mj_stateSize")?,
        get_state: symbol(&library, &path, "mj_getState")?,
        set_state: symbol(&library, &path, "mj_setState")?,
        install,
        _library: library,
    })
}

//! `flowrl setup mujoco`: fetches MuJoCo 3.17.0's library and Gymnasium 1.4's model
//! files with pip (`pip download` of the pinned wheels), checks every sha256, and
//! extracts them into the MuJoCo folder ([`Install`]). Idempotent: a folder whose
//! files all verify is left as it is. No third-party file is part of flowrl.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::digest::{sha256_bytes, sha256_file};
use anyhow::{bail, Context};
use flowrl_envs::mujoco::{Install, LIBRARY_FILE, MUJOCO_DIR_VAR};

/// A pinned file: its name and sha256 (hex).
struct Pinned {
    name: &'static str,
    sha256: &'static str,
}

/// The MuJoCo wheel (its library is byte-identical across Python versions).
const MUJOCO_WHEEL: Pinned = Pinned {
    name: "mujoco-3.17.0-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
    sha256: "d66928d86a2d1b601bbaa4dc11db50214d17d5301bb8afd84721313b67ff0874",
};
/// The Gymnasium wheel, for its model files.
const GYMNASIUM_WHEEL: Pinned = Pinned {
    name: "gymnasium-1.4.0-py3-none-any.whl",
    sha256: "1cb947c59e7c72d8eabb2c2274c00cd20948e69f8452a9ef4092223be24fdf0e",
};
/// The library inside the MuJoCo wheel.
const LIBRARY: Pinned = Pinned {
    name: LIBRARY_FILE,
    sha256: "23496b023ee80fb61ab71167e94bc649f9941710fde96b18bb8204fb332523ad",
};
/// The model files inside the Gymnasium wheel (`gymnasium/envs/mujoco/assets/`).
const MODELS: [Pinned; 4] = [
    Pinned {
        name: "hopper.xml",
        sha256: "3ce93a055ffdcd83c0c701d2400768e40d2cbb9532f3c4ae33377c27f8b39f9e",
    },
    Pinned {
        name: "half_cheetah.xml",
        sha256: "11797a5d69e8ac955e89ca6fdd3a0087f1c990094fda401ac51420de1b6c5494",
    },
    Pinned {
        name: "walker2d_v5.xml",
        sha256: "6bed53a6cc3ca73c4fe8ac3486d3b4228927264a6454f4ef16d3eed3c58bc09d",
    },
    Pinned {
        name: "walker2d.xml",
        sha256: "ac13373c7ac9003a5311c4704b314ed11149b3dd7600bbc02770487300f9ad2d",
    },
];

/// What `setup` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every file was already there and verified: nothing was fetched.
    AlreadySetUp,
    /// The wheels were downloaded and the files extracted.
    Installed,
}

/// Every file of the install with its pinned hash, in [`Install::files`] order.
fn pinned_files(install: &Install) -> Vec<(PathBuf, &'static Pinned)> {
    std::iter::once((install.library(), &LIBRARY))
        .chain(MODELS.iter().map(|m| (install.model(m.name), m)))
        .collect()
}

/// Checks every file of an install against its pinned sha256; the error names the
/// first file that is missing or differs.
pub fn verify(install: &Install) -> anyhow::Result<()> {
    for (path, pinned) in pinned_files(install) {
        let found =
            sha256_file(&path).with_context(|| format!("cannot read {}", path.display()))?;
        if found != pinned.sha256 {
            bail!(
                "{}: expected sha256 {}, found {found}",
                path.display(),
                pinned.sha256
            );
        }
    }
    Ok(())
}

/// How to run pip: the first of `python3 -m pip`, `pip3` and `pip` that answers.
fn find_pip() -> anyhow::Result<Vec<String>> {
    let candidates: [&[&str]; 3] = [&["python3", "-m", "pip"], &["pip3"], &["pip"]];
    for candidate in candidates {
        let answers = Command::new(candidate[0])
            .args(&candidate[1..])
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success());
        if answers {
            return Ok(candidate.iter().map(|s| s.to_string()).collect());
        }
    }
    bail!(
        "`flowrl setup mujoco` downloads MuJoCo 3.17.0 and Gymnasium 1.4.0's model files with \
         pip, and found none (tried `python3 -m pip`, `pip3`, `pip`). Install Python 3 with pip \
         (Debian/Ubuntu: `apt-get install python3-pip`) and run it again, or set {MUJOCO_DIR_VAR} \
         to a folder that already holds lib/{LIBRARY_FILE} and assets/{{hopper,half_cheetah,\
         walker2d_v5,walker2d}}.xml (for example one made by `flowrl setup mujoco` elsewhere)"
    )
}

/// `pip download` of one pinned wheel into `dir`, checked against its sha256.
fn download(
    pip: &[String],
    requirement: &str,
    extra: &[&str],
    wheel: &Pinned,
    dir: &Path,
) -> anyhow::Result<PathBuf> {
    let status = Command::new(&pip[0])
        .args(&pip[1..])
        .args([
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
        ])
        .args(extra)
        .args([requirement, "-d"])
        .arg(dir)
        .status()
        .with_context(|| format!("cannot run `{}`", pip.join(" ")))?;
    if !status.success() {
        bail!(
            "`{} download {requirement}` failed ({status})",
            pip.join(" ")
        );
    }
    let path = dir.join(wheel.name);
    let found = sha256_file(&path)
        .with_context(|| format!("pip did not leave the expected wheel {}", path.display()))?;
    if found != wheel.sha256 {
        bail!(
            "{}: expected sha256 {}, found {found}; the package index served a different file",
            path.display(),
            wheel.sha256
        );
    }
    Ok(path)
}

/// Extracts `member` of the zip file `wheel` to `dest` (through a temporary name in
/// the same folder), checked against its pinned sha256.
fn extract(wheel: &Path, member: &str, pinned: &Pinned, dest: &Path) -> anyhow::Result<()> {
    let file =
        std::fs::File::open(wheel).with_context(|| format!("cannot open {}", wheel.display()))?;
    let mut archive = zip::ZipArchive::new(file)
        .with_context(|| format!("{}: not a zip file", wheel.display()))?;
    let mut entry = archive
        .by_name(member)
        .with_context(|| format!("{}: no member {member}", wheel.display()))?;
    let mut bytes = Vec::new();
    entry
        .read_to_end(&mut bytes)
        .with_context(|| format!("{}: cannot read {member}", wheel.display()))?;
    let found = sha256_bytes(&bytes);
    if found != pinned.sha256 {
        bail!(
            "{}: {member}: expected sha256 {}, found {found}",
            wheel.display(),
            pinned.sha256
        );
    }
    crate::atomic::write_atomic(dest, |out| Ok(out.write_all(&bytes)?))
}

/// Sets up MuJoCo in `install`'s folder (see the module docs).
pub fn setup_mujoco(install: &Install) -> anyhow::Result<Outcome> {
    if verify(install).is_ok() {
        return Ok(Outcome::AlreadySetUp);
    }
    if !(cfg!(target_os = "linux") && cfg!(target_arch = "x86_64")) {
        bail!(
            "the pinned MuJoCo 3.17.0 library is for Linux on x86-64; on this platform set \
             {MUJOCO_DIR_VAR} to a folder holding lib/{LIBRARY_FILE} and the model files"
        );
    }
    let pip = find_pip()?;
    std::fs::create_dir_all(install.root()).with_context(|| {
        format!(
            "cannot create the MuJoCo folder {}",
            install.root().display()
        )
    })?;
    let downloads = tempfile::Builder::new()
        .prefix(".flowrl-setup-")
        .tempdir_in(install.root())
        .with_context(|| format!("cannot create a folder in {}", install.root().display()))?;
    let platform = [
        "--platform",
        "manylinux_2_28_x86_64",
        "--python-version",
        "3.11",
    ];
    let mujoco = download(
        &pip,
        "mujoco==3.17.0",
        &platform,
        &MUJOCO_WHEEL,
        downloads.path(),
    )?;
    let gymnasium = download(
        &pip,
        "gymnasium==1.4.0",
        &[],
        &GYMNASIUM_WHEEL,
        downloads.path(),
    )?;
    extract(
        &mujoco,
        &format!("mujoco/{LIBRARY_FILE}"),
        &LIBRARY,
        &install.library(),
    )?;
    for model in &MODELS {
        let member = format!("gymnasium/envs/mujoco/assets/{}", model.name);
        extract(&gymnasium, &member, model, &install.model(model.name))?;
    }
    verify(install)?;
    Ok(Outcome::Installed)
}

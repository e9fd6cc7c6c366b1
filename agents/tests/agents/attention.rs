//! Attention cores: parity with the PyTorch fixtures, finite differences, causality,
//! step-by-step state, chunk invariance, fused versus composed, softmax core.

use dfdx::prelude::*;
use flowrl_agents::attention::{
    causal_flow, causal_softmax, composed, normal_flow, FlowConfig, FlowState, Tensor4,
};
use flowrl_agents::device::ModelDevice;
use num_traits::Float;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

use crate::common::fixture::{fixture_path, json_files, read_json};
use crate::common::{from_f64, max_abs_diff, max_rel_diff, to_f64};

type Owned<E> = OwnedTape<E, Cpu>;

/// Sizes `(B, H, L, S, D, M)`.
#[derive(Clone, Copy, Debug)]
struct Dims {
    b: usize,
    h: usize,
    l: usize,
    s: usize,
    d: usize,
    m: usize,
}

/// Which attention core a test runs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Core {
    Causal,
    Normal,
    Softmax,
}

/// Which implementation runs the core.
#[derive(Clone, Copy, Debug)]
enum Impl {
    /// The public function (the device's path: fused kernels on Cpu).
    Device,
    /// The composed stock-op version, with this chunk length.
    Composed(usize),
}

/// Inputs of one attention call, flat row-major, in f64.
#[derive(Clone, Debug)]
struct Inputs {
    dims: Dims,
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
    w: Vec<f64>,
}

/// Output and the gradients of `sum(out * W)`.
#[derive(Debug)]
struct Results {
    out: Vec<f64>,
    dq: Vec<f64>,
    dk: Vec<f64>,
    dv: Vec<f64>,
}

fn random_inputs(dims: Dims, seed: u64, q_scale: f64, k_scale: f64, k_shift: f64) -> Inputs {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut gen = |n: usize, scale: f64, shift: f64| -> Vec<f64> {
        (0..n)
            .map(|_| rng.gen_range(-1.7..1.7) * scale + shift)
            .collect()
    };
    let Dims { b, h, l, s, d, m } = dims;
    let q = gen(b * h * l * d, q_scale, 0.0);
    let k = gen(b * h * s * d, k_scale, k_shift);
    let v = gen(b * h * s * m, 1.0, 0.0);
    let w = gen(b * h * l * m, 1.0, 0.0);
    Inputs { dims, q, k, v, w }
}

/// Runs a core with tapes on q, k, v and returns out and d sum(out*W)/d(q,k,v).
fn run<E>(inp: &Inputs, core: Core, path: Impl, cfg: FlowConfig) -> Results
where
    E: Dtype + Float,
    Cpu: ModelDevice<E>,
{
    let dev = Cpu::default();
    let Dims { b, h, l, s, d, m } = inp.dims;
    let q: Tensor4<E, Cpu> = dev.tensor_from_vec(from_f64(&inp.q), (b, h, l, d));
    let k: Tensor4<E, Cpu> = dev.tensor_from_vec(from_f64(&inp.k), (b, h, s, d));
    let v: Tensor4<E, Cpu> = dev.tensor_from_vec(from_f64(&inp.v), (b, h, s, m));
    let w: Tensor4<E, Cpu> = dev.tensor_from_vec(from_f64(&inp.w), (b, h, l, m));
    let (qt, kt, vt) = (q.leaky_trace(), k.leaky_trace(), v.leaky_trace());
    let cfg = match path {
        Impl::Composed(chunk) => FlowConfig { chunk, ..cfg },
        Impl::Device => cfg,
    };
    let out: Tensor4<E, Cpu, Owned<E>> = match (core, path) {
        (Core::Causal, Impl::Device) => causal_flow(qt, kt, vt, &cfg),
        (Core::Causal, Impl::Composed(_)) => composed::causal_flow(qt, kt, vt, &cfg),
        (Core::Normal, Impl::Device) => normal_flow(qt, kt, vt, &cfg),
        (Core::Normal, Impl::Composed(_)) => composed::normal_flow(qt, kt, vt, &cfg),
        (Core::Softmax, Impl::Device) => causal_softmax(qt, kt, vt),
        (Core::Softmax, Impl::Composed(_)) => composed::causal_softmax(qt, kt, vt),
    };
    let out_values = out.as_vec();
    let grads = (out * w).sum::<Rank0, _>().backward();
    Results {
        out: to_f64(&out_values),
        dq: to_f64(&grads.get(&q).as_vec()),
        dk: to_f64(&grads.get(&k).as_vec()),
        dv: to_f64(&grads.get(&v).as_vec()),
    }
}

/// Compares every field; returns a description per field above `tol`.
fn compare(got: &Results, want: &Results, tol: f64, rel: bool) -> Vec<String> {
    let fields = [
        ("out", &got.out, &want.out),
        ("dq", &got.dq, &want.dq),
        ("dk", &got.dk, &want.dk),
        ("dv", &got.dv, &want.dv),
    ];
    fields
        .iter()
        .filter_map(|(name, g, w)| {
            let err = if rel {
                max_rel_diff(g, w)
            } else {
                max_abs_diff(g, w)
            };
            (err > tol || err.is_nan()).then(|| format!("{name} error {err:.3e} > {tol:.0e}"))
        })
        .collect()
}

/// Failures of the device path against the composed one (chunk length `chunk`) in `E`,
/// outputs and gradients compared relatively within `tol`.
fn device_vs_composed<E>(
    inp: &Inputs,
    core: Core,
    chunk: usize,
    cfg: FlowConfig,
    tol: f64,
) -> Vec<String>
where
    E: Dtype + Float,
    Cpu: ModelDevice<E>,
{
    let fused = run::<E>(inp, core, Impl::Device, cfg);
    let comp = run::<E>(inp, core, Impl::Composed(chunk), cfg);
    compare(&fused, &comp, tol, true)
}

// ---------------------------------------------------------------------------------------
// PyTorch parity fixtures

fn fixture_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![fixture_path("flow_attention")];
    if let Ok(extra) = std::env::var("FLOWRL_FIXTURES") {
        dirs.push(PathBuf::from(extra));
    }
    dirs
}

/// The JSON object at `path` (a case or a companion).
fn read_object(path: &Path) -> Result<Map<String, Value>, String> {
    match read_json(path)? {
        Value::Object(map) => Ok(map),
        _ => Err(format!("{}: expected a JSON object", path.display())),
    }
}

fn numbers(case: &Map<String, Value>, key: &str) -> Result<Vec<f64>, String> {
    let arr = case
        .get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| format!("missing array `{key}`"))?;
    arr.iter()
        .map(|x| {
            x.as_f64()
                .ok_or_else(|| format!("`{key}` holds a non-number"))
        })
        .collect()
}

fn number(case: &Map<String, Value>, key: &str) -> Result<f64, String> {
    case.get(key)
        .and_then(Value::as_f64)
        .ok_or_else(|| format!("missing number `{key}`"))
}

fn size(shape: &Map<String, Value>, key: &str) -> Result<usize, String> {
    shape
        .get(key)
        .and_then(Value::as_u64)
        .map(|x| x as usize)
        .ok_or_else(|| format!("missing `shape.{key}`"))
}

fn results(case: &Map<String, Value>, suffix: &str) -> Result<Results, String> {
    Ok(Results {
        out: numbers(case, &format!("out{suffix}"))?,
        dq: numbers(case, &format!("dq{suffix}"))?,
        dk: numbers(case, &format!("dk{suffix}"))?,
        dv: numbers(case, &format!("dv{suffix}"))?,
    })
}

/// Runs one fixture case on both paths and in both precisions; returns its failures.
fn check_case(path: &Path, case: &Map<String, Value>) -> Result<Vec<String>, String> {
    let variant = case
        .get("variant")
        .and_then(Value::as_str)
        .ok_or("missing `variant`")?;
    let core = match variant {
        "normal" => Core::Normal,
        "causal" | "causal_clamp1" => Core::Causal,
        other => return Err(format!("unknown variant `{other}`")),
    };
    let shape = case
        .get("shape")
        .and_then(Value::as_object)
        .ok_or("missing `shape`")?;
    let dims = Dims {
        b: size(shape, "B")?,
        h: size(shape, "H")?,
        l: size(shape, "L")?,
        s: size(shape, "S")?,
        d: size(shape, "D")?,
        m: size(shape, "M")?,
    };
    let inp = Inputs {
        dims,
        q: numbers(case, "q")?,
        k: numbers(case, "k")?,
        v: numbers(case, "v")?,
        w: numbers(case, "W")?,
    };
    let cfg = FlowConfig {
        clamp: number(case, "clamp")?,
        eps: number(case, "eps")?,
        chunk: 16,
    };
    let want64 = results(case, "")?;
    let want32 = results(case, "_f32")?;
    let mut failures = Vec::new();
    let name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    for (label, p) in [
        ("device", Impl::Device),
        ("composed", Impl::Composed(cfg.chunk)),
    ] {
        for err in compare(&run::<f64>(&inp, core, p, cfg), &want64, 1e-9, true) {
            failures.push(format!("{name} [{label}, f64]: {err}"));
        }
        for err in compare(&run::<f32>(&inp, core, p, cfg), &want32, 1e-4, true) {
            failures.push(format!("{name} [{label}, f32]: {err}"));
        }
    }
    Ok(failures)
}

/// Loads a case and merges its companions (`grad_file`, `f32_results_file`).
fn load_case(path: &Path) -> Result<Map<String, Value>, String> {
    let mut case = read_object(path)?;
    for key in ["grad_file", "f32_results_file"] {
        if let Some(name) = case.get(key).and_then(Value::as_str).map(str::to_owned) {
            let companion = path.with_file_name(name);
            case.extend(read_object(&companion)?);
        }
    }
    Ok(case)
}

/// Checks every case in `dirs`; returns the cases checked and the failures.
fn check_fixture_dirs(dirs: &[PathBuf]) -> (Vec<String>, Vec<String>) {
    let mut failures = Vec::new();
    let mut checked = Vec::new();
    for dir in dirs {
        let files = match json_files(dir) {
            Ok(files) => files,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        let mut companions = Vec::new();
        for file in &files {
            match read_object(file) {
                Ok(map) => {
                    for key in ["grad_file", "f32_results_file"] {
                        if let Some(name) = map.get(key).and_then(Value::as_str) {
                            companions.push(file.with_file_name(name));
                        }
                    }
                }
                Err(e) => failures.push(e),
            }
        }
        for file in files.iter().filter(|f| !companions.contains(f)) {
            match load_case(file).and_then(|case| check_case(file, &case)) {
                Ok(f) => {
                    failures.extend(f);
                    checked.push(file.display().to_string());
                }
                Err(e) => failures.push(format!("{}: {e}", file.display())),
            }
        }
    }
    (checked, failures)
}

#[test]
fn fixtures_match_pytorch_reference() {
    let dirs = fixture_dirs();
    let (checked, failures) = check_fixture_dirs(&dirs);
    assert!(!checked.is_empty(), "no fixture case found in {dirs:?}");
    assert!(
        failures.is_empty(),
        "{} of the fixture checks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn fixture_companion_files_are_merged_and_checked() {
    let source = fixture_dirs()[0].join("attn_causal_small_B2H2L7D4M5_s0.json");
    let mut case = read_object(&source).expect("the small causal fixture is in the repo");
    let mut grads = Map::new();
    let mut f32s = Map::new();
    for key in ["dq", "dk", "dv"] {
        grads.insert(key.into(), case.remove(key).expect("fixture has gradients"));
    }
    for key in ["out_f32", "dq_f32", "dk_f32", "dv_f32"] {
        f32s.insert(
            key.into(),
            case.remove(key).expect("fixture has f32 results"),
        );
    }
    case.insert("grad_file".into(), "split_grads.json".into());
    case.insert("f32_results_file".into(), "split_f32.json".into());
    let dir = std::env::temp_dir().join(format!("flowrl-attn-split-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let write = |name: &str, map: &Map<String, Value>| {
        std::fs::write(dir.join(name), Value::Object(map.clone()).to_string())
            .expect("write temp fixture");
    };
    write("split_case.json", &case);
    write("split_grads.json", &grads);
    write("split_f32.json", &f32s);
    let (checked, failures) = check_fixture_dirs(std::slice::from_ref(&dir));
    assert_eq!(
        checked.len(),
        1,
        "exactly the one split case is a case: {checked:?}"
    );
    assert!(failures.is_empty(), "split case failed: {failures:?}");

    // A wrong gradient in a companion is caught and the case is named.
    if let Some(Value::Array(dq)) = grads.get_mut("dq") {
        dq[0] = Value::from(dq[0].as_f64().unwrap_or(0.0) + 1e-3);
    }
    write("split_grads.json", &grads);
    let (_, failures) = check_fixture_dirs(std::slice::from_ref(&dir));
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        failures
            .iter()
            .any(|f| f.contains("split_case.json") && f.contains("dq")),
        "a corrupted companion was not reported: {failures:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Naive references (per-position loops in f64)

/// Per-head slices `x[n]` of a flat `(N, len, w)` array.
fn head(x: &[f64], n: usize, len: usize, w: usize) -> &[f64] {
    &x[n * len * w..(n + 1) * len * w]
}

/// Naive causal softmax attention, f64.
fn naive_softmax(inp: &Inputs) -> Vec<f64> {
    let Dims { b, h, l, d, m, .. } = inp.dims;
    let mut out = vec![0.0; b * h * l * m];
    for n in 0..b * h {
        let (q, k, v) = (
            head(&inp.q, n, l, d),
            head(&inp.k, n, l, d),
            head(&inp.v, n, l, m),
        );
        for i in 0..l {
            let scores: Vec<f64> = (0..=i)
                .map(|j| {
                    (0..d).map(|x| q[i * d + x] * k[j * d + x]).sum::<f64>() / (d as f64).sqrt()
                })
                .collect();
            let top = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - top).exp()).collect();
            let z: f64 = e.iter().sum();
            for j in 0..=i {
                for y in 0..m {
                    out[(n * l + i) * m + y] += e[j] / z * v[j * m + y];
                }
            }
        }
    }
    out
}

/// Conserved-source values (before the clamp) of naive causal Flow-Attention, f64.
fn naive_causal_source(inp: &Inputs, eps: f64) -> Vec<f64> {
    let Dims { b, h, l, d, .. } = inp.dims;
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let mut source = Vec::new();
    for n in 0..b * h {
        let q: Vec<f64> = head(&inp.q, n, l, d).iter().map(|&x| sig(x)).collect();
        let k: Vec<f64> = head(&inp.k, n, l, d).iter().map(|&x| sig(x)).collect();
        let (mut sk, mut sqi) = (vec![0.0; d], vec![0.0; d]);
        for i in 0..l {
            let pos = (i + 1) as f64;
            for x in 0..d {
                sk[x] += k[i * d + x];
            }
            let den: f64 = (0..d).map(|x| (q[i * d + x] + eps) * (sk[x] + eps)).sum();
            let inc = pos / den;
            for x in 0..d {
                sqi[x] += q[i * d + x] * inc;
            }
            source.push(
                (0..d)
                    .map(|x| (k[i * d + x] + eps) * (sqi[x] + eps))
                    .sum::<f64>()
                    / pos,
            );
        }
    }
    source
}

/// Central finite differences of `sum(f(q,k,v) * W)` with respect to every input.
fn finite_differences(inp: &Inputs, f: &dyn Fn(&Inputs) -> Vec<f64>) -> Results {
    let loss = |x: &Inputs| f(x).iter().zip(&inp.w).map(|(a, b)| a * b).sum::<f64>();
    let step = 1e-6;
    let grad = |field: fn(&mut Inputs) -> &mut Vec<f64>| -> Vec<f64> {
        let len = field(&mut inp.clone()).len();
        (0..len)
            .map(|i| {
                let (mut up, mut down) = (inp.clone(), inp.clone());
                field(&mut up)[i] += step;
                field(&mut down)[i] -= step;
                (loss(&up) - loss(&down)) / (2.0 * step)
            })
            .collect()
    };
    Results {
        out: f(inp),
        dq: grad(|x| &mut x.q),
        dk: grad(|x| &mut x.k),
        dv: grad(|x| &mut x.v),
    }
}

// ---------------------------------------------------------------------------------------
// Flow-Attention properties

fn dims(b: usize, h: usize, l: usize, s: usize, d: usize, m: usize) -> Dims {
    Dims { b, h, l, s, d, m }
}

#[test]
fn gradients_match_finite_differences() {
    let cases = [
        (
            "normal",
            Core::Normal,
            dims(1, 2, 5, 7, 3, 4),
            FlowConfig::generic(),
            1.0,
            1.0,
            0.0,
        ),
        (
            "causal",
            Core::Causal,
            dims(1, 2, 7, 7, 3, 4),
            FlowConfig::rl(),
            1.0,
            1.0,
            0.0,
        ),
        (
            "causal, clamp 1",
            Core::Causal,
            dims(1, 2, 7, 7, 3, 4),
            FlowConfig::generic(),
            1.0,
            1.0,
            0.0,
        ),
        (
            "causal, clamp 10 hit",
            Core::Causal,
            dims(1, 2, 9, 9, 6, 4),
            FlowConfig::rl(),
            1.0,
            1.0,
            -6.0,
        ),
    ];
    let mut failures = Vec::new();
    for (seed, (name, core, dims, cfg, qs, ks, shift)) in cases.into_iter().enumerate() {
        let mut inp = random_inputs(dims, 100 + seed as u64, qs, ks, shift);
        if name.ends_with("hit") {
            // Every fourth key stands far above the (tiny) earlier ones: its conserved
            // source is far beyond the bound.
            for (i, x) in inp.k.iter_mut().enumerate() {
                if (i / dims.d) % dims.l % 4 == 3 {
                    *x += 10.0;
                }
            }
            let source = naive_causal_source(&inp, cfg.eps);
            let hits = source.iter().filter(|s| s.abs() > cfg.clamp).count();
            assert!(
                hits > 0 && hits < source.len(),
                "{name}: {hits} of {} clamped",
                source.len()
            );
        }
        for path in [Impl::Device, Impl::Composed(4)] {
            let fd = finite_differences(&inp, &|x| run::<f64>(x, core, path, cfg).out);
            let got = run::<f64>(&inp, core, path, cfg);
            for err in compare(&got, &fd, 1e-6, true) {
                failures.push(format!("{name} [{path:?}]: {err}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "finite differences disagree:\n{}",
        failures.join("\n")
    );
}

#[test]
fn generic_clamp_is_active_on_unit_inputs() {
    let inp = random_inputs(dims(1, 2, 30, 30, 8, 4), 7, 1.0, 1.0, 0.0);
    let source = naive_causal_source(&inp, 1e-6);
    let hits = source.iter().filter(|s| s.abs() > 1.0).count();
    assert!(hits > 0, "the ±1 clamp should be active on unit inputs");
    let rl = run::<f64>(&inp, Core::Causal, Impl::Device, FlowConfig::rl());
    let generic = run::<f64>(&inp, Core::Causal, Impl::Device, FlowConfig::generic());
    assert!(
        max_abs_diff(&rl.out, &generic.out) > 1e-6,
        "clamp bound has no effect"
    );
}

#[test]
fn causal_outputs_ignore_later_tokens() {
    let dims = dims(2, 2, 40, 40, 5, 3);
    let base = random_inputs(dims, 11, 1.0, 1.0, 0.0);
    let cut = 17;
    let mut changed = base.clone();
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    for n in 0..dims.b * dims.h {
        for i in cut + 1..dims.l {
            for x in 0..dims.d {
                changed.q[(n * dims.l + i) * dims.d + x] = rng.gen_range(-3.0..3.0);
                changed.k[(n * dims.l + i) * dims.d + x] = rng.gen_range(-3.0..3.0);
            }
            for x in 0..dims.m {
                changed.v[(n * dims.l + i) * dims.m + x] = rng.gen_range(-3.0..3.0);
            }
        }
    }
    for core in [Core::Causal, Core::Softmax] {
        for path in [Impl::Device, Impl::Composed(8)] {
            let a = run::<f64>(&base, core, path, FlowConfig::rl()).out;
            let b = run::<f64>(&changed, core, path, FlowConfig::rl()).out;
            let mut later_differs = false;
            for n in 0..dims.b * dims.h {
                for i in 0..dims.l {
                    let row = (n * dims.l + i) * dims.m..(n * dims.l + i + 1) * dims.m;
                    let diff = max_abs_diff(&a[row.clone()], &b[row]);
                    if i <= cut {
                        assert!(
                            diff <= 1e-12,
                            "{core:?} {path:?}: position {i} changed by {diff:e}"
                        );
                    } else {
                        later_differs |= diff > 1e-6;
                    }
                }
            }
            assert!(
                later_differs,
                "{core:?} {path:?}: later positions never changed"
            );
        }
    }
}

#[test]
fn composed_chunk_length_does_not_change_results() {
    let inp = random_inputs(dims(2, 2, 50, 50, 6, 5), 21, 1.0, 1.0, 0.0);
    let want = run::<f64>(
        &inp,
        Core::Causal,
        Impl::Composed(64),
        FlowConfig::generic(),
    );
    for chunk in [1, 8, 16, 50, 64] {
        let got = run::<f64>(
            &inp,
            Core::Causal,
            Impl::Composed(chunk),
            FlowConfig::generic(),
        );
        let errs = compare(&got, &want, 1e-10, true);
        assert!(errs.is_empty(), "chunk {chunk}: {errs:?}");
    }
}

#[test]
fn fused_equals_composed() {
    let inp = random_inputs(dims(2, 3, 75, 75, 8, 6), 31, 1.5, 1.5, 0.0);
    for cfg in [FlowConfig::rl(), FlowConfig::generic()] {
        let errs = device_vs_composed::<f64>(&inp, Core::Causal, 16, cfg, 1e-10);
        assert!(errs.is_empty(), "f64 clamp {}: {errs:?}", cfg.clamp);
        let errs = device_vs_composed::<f32>(&inp, Core::Causal, 16, cfg, 2e-4);
        assert!(errs.is_empty(), "f32 clamp {}: {errs:?}", cfg.clamp);
    }
}

/// The fused kernel holds a short sequence in one chunk (up to 38 positions at D = M = 8)
/// and splits longer ones into chunks of 32: lengths on both sides of that switch, whole
/// and partial last chunks, a single position, D != M, and B*H > 1 all give the composed
/// path's outputs and gradients.
#[test]
fn fused_equals_composed_across_chunk_boundaries() {
    let shapes = [
        (1, 1, 1, 4, 3),
        (1, 2, 5, 3, 4),
        (2, 1, 31, 5, 7),
        (1, 1, 32, 8, 8),
        (2, 2, 33, 6, 5),
        (1, 1, 38, 8, 8),
        (2, 1, 39, 8, 8),
        (1, 3, 64, 7, 9),
        (3, 1, 97, 4, 6),
        (1, 2, 200, 16, 12),
    ];
    for (seed, &(b, h, l, d, m)) in shapes.iter().enumerate() {
        let inp = random_inputs(dims(b, h, l, l, d, m), 100 + seed as u64, 1.5, 1.5, 0.0);
        for cfg in [FlowConfig::rl(), FlowConfig::generic()] {
            let errs = device_vs_composed::<f64>(&inp, Core::Causal, 16, cfg, 1e-10);
            assert!(
                errs.is_empty(),
                "f64 B={b} H={h} L={l} D={d} M={m} clamp {}: {errs:?}",
                cfg.clamp
            );
        }
        let errs = device_vs_composed::<f32>(&inp, Core::Causal, 16, FlowConfig::rl(), 2e-4);
        assert!(
            errs.is_empty(),
            "f32 B={b} H={h} L={l} D={d} M={m}: {errs:?}"
        );
    }
}

/// Without a tape the fused kernel keeps nothing for a backward pass (its own branch); the
/// outputs are the same as with one.
#[test]
fn fused_forward_without_tape_equals_recorded() {
    let inp = random_inputs(dims(2, 2, 70, 70, 6, 5), 91, 1.0, 1.0, 0.0);
    let Dims { b, h, l, d, m, .. } = inp.dims;
    let dev = Cpu::default();
    let q: Tensor4<f64, Cpu> = dev.tensor_from_vec(inp.q.clone(), (b, h, l, d));
    let k: Tensor4<f64, Cpu> = dev.tensor_from_vec(inp.k.clone(), (b, h, l, d));
    let v: Tensor4<f64, Cpu> = dev.tensor_from_vec(inp.v.clone(), (b, h, l, m));
    let plain = causal_flow(q, k, v, &FlowConfig::rl()).as_vec();
    let recorded = run::<f64>(&inp, Core::Causal, Impl::Device, FlowConfig::rl()).out;
    assert!(
        max_abs_diff(&plain, &recorded) <= 1e-12,
        "outputs without a tape differ from outputs with one"
    );
}

/// Runs `FlowState` token by token over `inp` and returns the outputs `(B,H,L,M)`.
fn stepped<E>(inp: &Inputs, cfg: FlowConfig) -> Vec<f64>
where
    E: Dtype + Float,
    Cpu: ModelDevice<E>,
{
    let dev = Cpu::default();
    let Dims { b, h, l, d, m, .. } = inp.dims;
    let mut state = FlowState::<E, Cpu>::new(&dev, b, h, d, m, cfg);
    let token = |x: &[f64], i: usize, w: usize| -> Vec<E> {
        let mut t = Vec::with_capacity(b * h * w);
        for n in 0..b * h {
            t.extend(from_f64::<E>(&x[(n * l + i) * w..(n * l + i + 1) * w]));
        }
        t
    };
    let mut out = vec![0.0; b * h * l * m];
    for i in 0..l {
        let q = dev.tensor_from_vec(token(&inp.q, i, d), (b, h, d));
        let k = dev.tensor_from_vec(token(&inp.k, i, d), (b, h, d));
        let v = dev.tensor_from_vec(token(&inp.v, i, m), (b, h, m));
        let o = state.step(q, k, v);
        assert_eq!(state.position(), i + 1);
        for (n, row) in to_f64(&o.as_vec()).chunks(m).enumerate() {
            out[(n * l + i) * m..(n * l + i + 1) * m].copy_from_slice(row);
        }
    }
    out
}

#[test]
fn step_by_step_equals_full_sequence_over_3000_tokens() {
    let inp = random_inputs(dims(1, 3, 3000, 3000, 8, 8), 41, 1.0, 1.0, 0.0);
    let cfg = FlowConfig::rl();
    let full = run::<f32>(&inp, Core::Causal, Impl::Device, cfg).out;
    let steps = stepped::<f32>(&inp, cfg);
    let err = max_abs_diff(&steps, &full);
    assert!(
        err <= 1e-5,
        "step-by-step differs from full sequence by {err:e}"
    );
}

#[test]
fn composed_step_equals_composed_full_sequence() {
    let inp = random_inputs(dims(2, 2, 60, 60, 5, 4), 43, 1.0, 1.0, 0.0);
    let cfg = FlowConfig::generic();
    let full = run::<f64>(&inp, Core::Causal, Impl::Composed(16), cfg).out;
    let steps = stepped::<f64>(&inp, cfg);
    let err = max_abs_diff(&steps, &full);
    assert!(
        err <= 1e-10,
        "composed step differs from composed full sequence by {err:e}"
    );
}

// ---------------------------------------------------------------------------------------
// Causal softmax core

#[test]
fn softmax_matches_naive_reference() {
    let inp = random_inputs(dims(2, 2, 9, 9, 4, 3), 51, 1.5, 1.5, 0.0);
    let want = finite_differences(&inp, &naive_softmax);
    for path in [Impl::Device, Impl::Composed(0)] {
        let got = run::<f64>(&inp, Core::Softmax, path, FlowConfig::rl());
        let errs = compare(&got, &want, 1e-7, true);
        assert!(errs.is_empty(), "softmax {path:?} f64: {errs:?}");
        let got = run::<f32>(&inp, Core::Softmax, path, FlowConfig::rl());
        let errs = compare(&got, &want, 1e-4, true);
        assert!(errs.is_empty(), "softmax {path:?} f32: {errs:?}");
    }
}

/// Gradients of `sum(causal_flow(x, x, y) * W)` with `x, y` permuted views of
/// `(B, L, H, D)` tensors: one tensor feeds q and k, and the inputs are strided.
fn shared_permuted(fused: bool) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let dev = Cpu::default();
    let (b, l, h, d) = (2, 21, 3, 4);
    let inp = random_inputs(dims(b, h, l, l, d, d), 61, 1.0, 1.0, 0.0);
    let x: Tensor<(usize, usize, usize, usize), f64, Cpu> =
        dev.tensor_from_vec(inp.q.clone(), (b, l, h, d));
    let y: Tensor<(usize, usize, usize, usize), f64, Cpu> =
        dev.tensor_from_vec(inp.v.clone(), (b, l, h, d));
    let w: Tensor4<f64, Cpu> = dev.tensor_from_vec(inp.w.clone(), (b, h, l, d));
    let xt = x.leaky_trace().permute::<_, Axes4<0, 2, 1, 3>>();
    let yt = y.leaky_trace().permute::<_, Axes4<0, 2, 1, 3>>();
    let cfg = FlowConfig {
        chunk: 8,
        ..FlowConfig::rl()
    };
    let out = if fused {
        causal_flow(xt.with_empty_tape(), xt, yt, &cfg)
    } else {
        composed::causal_flow(xt.with_empty_tape(), xt, yt, &cfg)
    };
    let values = out.as_vec();
    let grads = (out * w).sum::<Rank0, _>().backward();
    (values, grads.get(&x).as_vec(), grads.get(&y).as_vec())
}

#[test]
fn fused_accumulates_gradients_of_shared_and_strided_inputs() {
    let (out_f, dx_f, dy_f) = shared_permuted(true);
    let (out_c, dx_c, dy_c) = shared_permuted(false);
    assert!(max_rel_diff(&out_f, &out_c) < 1e-10, "outputs differ");
    assert!(
        max_rel_diff(&dx_f, &dx_c) < 1e-10,
        "gradients of the shared q/k input differ"
    );
    assert!(max_rel_diff(&dy_f, &dy_c) < 1e-10, "gradients of v differ");
    assert!(
        dx_f.iter().any(|g| g.abs() > 1e-6),
        "no gradient reached the shared input"
    );
}

#[test]
fn fused_softmax_equals_composed() {
    let inp = random_inputs(dims(2, 2, 70, 70, 8, 5), 71, 2.0, 2.0, 0.0);
    let errs = device_vs_composed::<f64>(&inp, Core::Softmax, 0, FlowConfig::rl(), 1e-10);
    assert!(errs.is_empty(), "f64: {errs:?}");
    let errs = device_vs_composed::<f32>(&inp, Core::Softmax, 0, FlowConfig::rl(), 1e-5);
    assert!(errs.is_empty(), "f32: {errs:?}");
}

/// Lengths on both sides of the fused CPU kernel's tile edges (256 query rows, 128 or
/// 256 key columns; 64 covered too), from one position to several tiles.
const TILE_LENGTHS: [usize; 16] = [
    1, 2, 5, 63, 64, 65, 127, 128, 129, 255, 256, 257, 259, 333, 515, 700,
];

/// The fused softmax in f64 and f32 against the composed one in f64 (values and the
/// gradients of q, k, v) and the naive reference (values), for `inp`.
fn fused_softmax_failures(inp: &Inputs) -> Vec<String> {
    let cfg = FlowConfig::rl();
    let want = run::<f64>(inp, Core::Softmax, Impl::Composed(0), cfg);
    let fused = run::<f64>(inp, Core::Softmax, Impl::Device, cfg);
    let mut failures: Vec<String> = compare(&fused, &want, 1e-10, true)
        .into_iter()
        .map(|e| format!("f64 {e}"))
        .collect();
    let naive = max_rel_diff(&fused.out, &naive_softmax(inp));
    if naive > 1e-12 || naive.is_nan() {
        failures.push(format!(
            "f64 out differs from the naive reference by {naive:.3e}"
        ));
    }
    let fused = run::<f32>(inp, Core::Softmax, Impl::Device, cfg);
    failures.extend(
        compare(&fused, &want, 2e-5, true)
            .into_iter()
            .map(|e| format!("f32 {e}")),
    );
    failures
}

#[test]
fn fused_softmax_matches_composed_across_tile_edges() {
    for (i, &l) in TILE_LENGTHS.iter().enumerate() {
        let inp = random_inputs(dims(2, 2, l, l, 12, 7), 100 + i as u64, 2.0, 2.0, 0.0);
        let failures = fused_softmax_failures(&inp);
        assert!(failures.is_empty(), "L={l}: {failures:?}");
    }
}

#[test]
fn fused_softmax_matches_composed_with_wide_backward_tiles() {
    // From 2048 positions on, the backward pass takes key tiles of 256 columns: lengths
    // just below, at and past that switch, with a partial last tile, on 1 and 2 threads.
    let cfg = FlowConfig::rl();
    for (i, &l) in [2047, 2048, 2200].iter().enumerate() {
        let inp = random_inputs(dims(1, 1, l, l, 8, 4), 500 + i as u64, 2.0, 2.0, 0.0);
        let failures = fused_softmax_failures(&inp);
        assert!(failures.is_empty(), "L={l}: {failures:?}");
        let single = in_pool(1, || run::<f32>(&inp, Core::Softmax, Impl::Device, cfg));
        let many = in_pool(2, || run::<f32>(&inp, Core::Softmax, Impl::Device, cfg));
        assert!(identical(&single, &many), "L={l}: 2 threads differ from 1");
    }
}

#[test]
fn fused_softmax_rescales_when_later_keys_dominate() {
    // Keys grow along the sequence, so the running maximum of every row rises tile
    // after tile (and, with the sign flipped, falls: only the first tile matters).
    for (i, &l) in [70, 333].iter().enumerate() {
        for sign in [1.0, -1.0] {
            let mut inp = random_inputs(dims(1, 2, l, l, 8, 8), 200 + i as u64, 1.0, 1.0, 0.0);
            let d = inp.dims.d;
            for (j, x) in inp.k.iter_mut().enumerate() {
                *x = x.abs() * (1.0 + sign * 3.0 * ((j / d) % l) as f64 / l as f64);
            }
            for x in inp.q.iter_mut() {
                *x = x.abs();
            }
            let failures = fused_softmax_failures(&inp);
            assert!(failures.is_empty(), "L={l} sign {sign}: {failures:?}");
        }
    }
}

#[test]
fn fused_softmax_matches_composed_at_training_shapes() {
    // Many heads of one short sequence, wide heads (as the Decision Transformer trains).
    for (i, (b, h, l, d, m)) in [
        (16, 4, 60, 64, 64),
        (8, 1, 60, 128, 128),
        (3, 2, 61, 32, 48),
    ]
    .into_iter()
    .enumerate()
    {
        let inp = random_inputs(dims(b, h, l, l, d, m), 300 + i as u64, 1.0, 1.0, 0.0);
        let failures = fused_softmax_failures(&inp);
        assert!(
            failures.is_empty(),
            "B={b} H={h} L={l} D={d} M={m}: {failures:?}"
        );
    }
}

/// Runs `f` on a rayon pool of `threads` threads.
fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a rayon pool")
        .install(f)
}

/// Whether two results are equal bit for bit.
fn identical(a: &Results, b: &Results) -> bool {
    let bits = |x: &[f64]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    [
        (&a.out, &b.out),
        (&a.dq, &b.dq),
        (&a.dk, &b.dk),
        (&a.dv, &b.dv),
    ]
    .iter()
    .all(|(x, y)| bits(x) == bits(y))
}

#[test]
fn fused_softmax_does_not_depend_on_the_thread_count() {
    // One head of several tiles (the backward pass splits its key tiles into groups), a
    // few heads, and many short heads.
    let cfg = FlowConfig::rl();
    for (i, (b, h, l)) in [(1, 1, 700), (1, 3, 300), (6, 5, 60)]
        .into_iter()
        .enumerate()
    {
        let inp = random_inputs(dims(b, h, l, l, 16, 8), 400 + i as u64, 2.0, 2.0, 0.0);
        let single = in_pool(1, || run::<f32>(&inp, Core::Softmax, Impl::Device, cfg));
        let single64 = in_pool(1, || run::<f64>(&inp, Core::Softmax, Impl::Device, cfg));
        for threads in [2, 3] {
            let many = in_pool(threads, || {
                run::<f32>(&inp, Core::Softmax, Impl::Device, cfg)
            });
            assert!(
                identical(&single, &many),
                "f32 B={b} H={h} L={l}: {threads} threads differ from 1"
            );
            let many = in_pool(threads, || {
                run::<f64>(&inp, Core::Softmax, Impl::Device, cfg)
            });
            assert!(
                identical(&single64, &many),
                "f64 B={b} H={h} L={l}: {threads} threads differ from 1"
            );
        }
    }
}

#[test]
fn fused_softmax_accepts_empty_inputs() {
    // dfdx cannot read the values of an empty tensor back (`as_vec` panics): only the
    // calls and the shapes are checked.
    let dev = Cpu::default();
    for (b, l) in [(0, 5), (2, 0)] {
        let q: Tensor4<f32, Cpu> = dev.zeros_like(&(b, 2, l, 4));
        let v: Tensor4<f32, Cpu> = dev.zeros_like(&(b, 2, l, 3));
        let qt = q.leaky_trace();
        let out = causal_softmax(qt.with_empty_tape(), qt, v.leaky_trace());
        assert_eq!(*out.shape(), (b, 2, l, 3));
        // dfdx's reductions panic on empty tensors: one extra value keeps the sum non-empty.
        let one: Tensor<(usize,), f32, Cpu> = dev.ones_like(&(1,));
        let flat = out.reshape_like(&(0,));
        let grads = (flat, one)
            .concat_along(Axis::<0>)
            .sum::<Rank0, _>()
            .backward();
        assert_eq!(*grads.get(&q).shape(), (b, 2, l, 4), "B={b} L={l}");
    }
}

#[test]
fn step_state_keeps_selected_rows() {
    let inp = random_inputs(dims(3, 2, 12, 12, 4, 3), 81, 1.0, 1.0, 0.0);
    let dev = Cpu::default();
    let Dims { b, h, l, d, m, .. } = inp.dims;
    let token = |x: &[f64], i: usize, w: usize, rows: &[usize]| -> Vec<f64> {
        let mut t = Vec::new();
        for &r in rows {
            for head in 0..h {
                let n = r * h + head;
                t.extend_from_slice(&x[(n * l + i) * w..(n * l + i + 1) * w]);
            }
        }
        t
    };
    let cfg = FlowConfig::rl();
    let mut state = FlowState::<f64, Cpu>::new(&dev, b, h, d, m, cfg);
    let all: Vec<usize> = (0..b).collect();
    let kept = [2, 0];
    let mut rows: &[usize] = &all;
    let mut got = Vec::new();
    for i in 0..l {
        if i == 5 {
            state.keep_rows(&kept);
            rows = &kept;
        }
        let n = rows.len();
        let q = dev.tensor_from_vec(token(&inp.q, i, d, rows), (n, h, d));
        let k = dev.tensor_from_vec(token(&inp.k, i, d, rows), (n, h, d));
        let v = dev.tensor_from_vec(token(&inp.v, i, m, rows), (n, h, m));
        got.push((i, state.step(q, k, v).as_vec()));
    }
    let full = run::<f64>(&inp, Core::Causal, Impl::Device, cfg).out;
    for (i, out) in got {
        let rows: &[usize] = if i < 5 { &all } else { &kept };
        let want = token(&full, i, m, rows);
        assert!(
            max_abs_diff(&out, &want) < 1e-12,
            "position {i}: kept rows differ from the full sequence"
        );
    }
}

#[test]
fn flow_config_validation_names_the_field() {
    assert!(FlowConfig::rl().validate().is_ok());
    assert!(FlowConfig::generic().validate().is_ok());
    let bad = [
        (
            FlowConfig {
                clamp: 0.0,
                ..FlowConfig::rl()
            },
            "clamp",
        ),
        (
            FlowConfig {
                clamp: f64::NAN,
                ..FlowConfig::rl()
            },
            "clamp",
        ),
        (
            FlowConfig {
                clamp: 100.0,
                ..FlowConfig::rl()
            },
            "clamp",
        ),
        (
            FlowConfig {
                eps: -1e-6,
                ..FlowConfig::rl()
            },
            "eps",
        ),
        (
            FlowConfig {
                chunk: 0,
                ..FlowConfig::rl()
            },
            "chunk",
        ),
    ];
    for (cfg, field) in bad {
        let err = cfg.validate().expect_err("invalid config accepted");
        assert!(err.contains(field), "error {err:?} does not name {field}");
    }
}

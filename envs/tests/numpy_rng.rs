//! numpy parity: `Generator(PCG64(SeedSequence(seed)))` against the recorded fixtures in
//! `tests/fixtures/numpy_rng/` (and the folder named by `FLOWRL_RNG_FIXTURES`), bit for bit.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use flowrl_envs::numpy_rng::{ziggurat_tables, Generator, Pcg64State, SeedSequence};
use serde_json::Value;

fn repo_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/numpy_rng"
    ))
}

/// Every `seed_*.json` in the repository's folder and in `FLOWRL_RNG_FIXTURES`.
fn seed_files() -> Vec<PathBuf> {
    let mut dirs = vec![repo_dir()];
    if let Ok(extra) = std::env::var("FLOWRL_RNG_FIXTURES") {
        dirs.push(PathBuf::from(extra));
    }
    let mut files = Vec::new();
    for dir in dirs {
        let entries =
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        let before = files.len();
        for entry in entries {
            let path = entry.expect("directory entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with("seed_") && name.ends_with(".json") {
                files.push(path);
            }
        }
        assert!(
            files.len() > before,
            "no seed_*.json fixture in {}",
            dir.display()
        );
    }
    files.sort();
    files
}

fn load(path: &Path) -> Value {
    let name = path.display();
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn decimal_u128(v: &Value, what: &str) -> u128 {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a decimal string, found {v}"))
        .parse()
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn decimal_u64(v: &Value, what: &str) -> u64 {
    u64::try_from(decimal_u128(v, what)).unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn state(v: &Value, what: &str) -> Pcg64State {
    let flag = &v["has_uint32"];
    Pcg64State {
        state: decimal_u128(&v["state"], what),
        inc: decimal_u128(&v["inc"], what),
        has_uint32: flag
            .as_u64()
            .map(|f| f != 0)
            .or_else(|| flag.as_bool())
            .unwrap_or_else(|| panic!("{what}: has_uint32 {flag}")),
        uinteger: v["uinteger"]
            .as_u64()
            .and_then(|u| u32::try_from(u).ok())
            .unwrap_or_else(|| panic!("{what}: uinteger {}", v["uinteger"])),
    }
}

fn floats(v: &Value, what: &str) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what}: expected an array"))
        .iter()
        .map(|x| {
            x.as_f64()
                .unwrap_or_else(|| panic!("{what}: {x} is no number"))
        })
        .collect()
}

fn ints(v: &Value, what: &str) -> Vec<i64> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what}: expected an array"))
        .iter()
        .map(|x| {
            x.as_i64()
                .unwrap_or_else(|| panic!("{what}: {x} is no integer"))
        })
        .collect()
}

/// Asserts bit-equal f64 values, naming the first difference.
fn assert_bits(found: &[f64], expected: &[f64], what: &str) {
    assert_eq!(found.len(), expected.len(), "{what}: lengths differ");
    for (i, (f, e)) in found.iter().zip(expected).enumerate() {
        assert!(
            f.to_bits() == e.to_bits(),
            "{what}: value {i} is {f:?} ({:#018x}), numpy gives {e:?} ({:#018x})",
            f.to_bits(),
            e.to_bits()
        );
    }
}

/// The generator a fixture describes: `seed_decimal` holds seeds of any size.
fn fresh(fixture: &Value, name: &str) -> Generator {
    let digits = fixture["seed_decimal"]
        .as_str()
        .unwrap_or_else(|| panic!("{name}: seed_decimal"));
    let seq = SeedSequence::from_decimal(digits)
        .unwrap_or_else(|| panic!("{name}: seed_decimal {digits:?}"));
    if let Ok(seed) = digits.parse::<u64>() {
        assert_eq!(
            Generator::seeded(seed),
            Generator::from_seed_sequence(&seq),
            "{name}: Generator::seeded({seed})"
        );
        assert_eq!(
            fixture["seed"].as_u64(),
            Some(seed),
            "{name}: seed and seed_decimal disagree"
        );
    }
    Generator::from_seed_sequence(&seq)
}

/// Runs one `sequences` entry on a fresh generator; returns its kind.
fn check_sequence(fixture: &Value, key: &str, entry: &Value, name: &str) -> &'static str {
    let what = format!("{name}: sequences.{key} ({})", entry["call"]);
    let mut g = fresh(fixture, name);
    let call = entry["call"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: call"));
    let kind = if call == "random(size=30)" {
        let expected = floats(&entry["values"], &what);
        let found: Vec<f64> = expected.iter().map(|_| g.random()).collect();
        assert_bits(&found, &expected, &what);
        "random"
    } else if let Some(bounds) = call
        .strip_prefix("uniform(low=")
        .and_then(|rest| rest.strip_suffix(", size=30)"))
    {
        let (low, high) = bounds
            .split_once(", high=")
            .unwrap_or_else(|| panic!("{what}: cannot read the bounds"));
        let low: f64 = low.parse().unwrap_or_else(|e| panic!("{what}: {e}"));
        let high: f64 = high.parse().unwrap_or_else(|e| panic!("{what}: {e}"));
        let expected = floats(&entry["values"], &what);
        let found: Vec<f64> = expected.iter().map(|_| g.uniform(low, high)).collect();
        assert_bits(&found, &expected, &what);
        "uniform"
    } else if call == "standard_normal(size=300)" {
        let expected = floats(&entry["values"], &what);
        let before = g.state().state;
        let found: Vec<f64> = expected.iter().map(|_| g.standard_normal()).collect();
        assert_bits(&found, &expected, &what);
        if let Some(consumed) = entry.get("uint64_draws_consumed") {
            let consumed = consumed.as_u64().expect("uint64_draws_consumed");
            let mut probe = Generator::from_state(Pcg64State {
                state: before,
                ..g.state()
            });
            for _ in 0..consumed {
                probe.next_uint64();
            }
            assert_eq!(
                probe.state().state,
                g.state().state,
                "{what}: not {consumed} uint64 draws"
            );
        }
        "standard_normal"
    } else if let Some(bounds) = call
        .strip_prefix("integers(")
        .and_then(|rest| rest.strip_suffix(", size=30)"))
    {
        let (low, high) = bounds
            .split_once(", ")
            .unwrap_or_else(|| panic!("{what}: cannot read the bounds"));
        let parse = |s: &str| -> i64 {
            match s.split_once("**") {
                Some((b, e)) => b
                    .parse::<i64>()
                    .expect("base")
                    .pow(e.parse().expect("exponent")),
                None => s.parse().unwrap_or_else(|e| panic!("{what}: {s}: {e}")),
            }
        };
        let (low, high) = (parse(low), parse(high));
        let expected = ints(&entry["values"], &what);
        let found: Vec<i64> = expected.iter().map(|_| g.integers(low, high)).collect();
        assert_eq!(found, expected, "{what}");
        "integers"
    } else if key == "mixed_uint32_buffer" {
        let values = entry["values"].as_array().expect("three value lists");
        let states = entry["state_after"].as_array().expect("three states");
        assert_eq!((values.len(), states.len()), (3, 3), "{what}");
        for (part, (v, s)) in values.iter().zip(states).enumerate() {
            let what = format!("{what} part {part}");
            if part == 1 {
                let expected = floats(v, &what);
                let found: Vec<f64> = expected.iter().map(|_| g.random()).collect();
                assert_bits(&found, &expected, &what);
            } else {
                let expected = ints(v, &what);
                let found: Vec<i64> = expected.iter().map(|_| g.integers(0, 3)).collect();
                assert_eq!(found, expected, "{what}");
            }
            assert_eq!(g.state(), state(s, &what), "{what}: state_after");
        }
        return "mixed_uint32_buffer";
    } else {
        panic!("{what}: unknown call");
    };
    assert_eq!(
        g.state(),
        state(&entry["state_after"], &what),
        "{what}: state_after"
    );
    kind
}

#[test]
fn generator_matches_numpy_fixtures() {
    let files = seed_files();
    let mut kinds = BTreeSet::new();
    for path in &files {
        let name = path.display().to_string();
        let fixture = load(path);
        assert_eq!(
            fixture["format"], "numpy-rng-parity-fixture/1",
            "{name}: format"
        );

        // SeedSequence.
        let ss = &fixture["seed_sequence"];
        let seq = SeedSequence::from_decimal(ss["entropy"].as_str().expect("entropy"))
            .unwrap_or_else(|| panic!("{name}: entropy"));
        let pool: Vec<u64> = seq.pool().iter().map(|&w| u64::from(w)).collect();
        let expected_pool: Vec<u64> = ss["pool_uint32"]
            .as_array()
            .expect("pool_uint32")
            .iter()
            .map(|w| w.as_u64().expect("pool word"))
            .collect();
        assert_eq!(pool, expected_pool, "{name}: seed_sequence.pool_uint32");
        let expected_state: Vec<u64> = ss["generate_state_4xuint64"]
            .as_array()
            .expect("generate_state_4xuint64")
            .iter()
            .map(|w| decimal_u64(w, &name))
            .collect();
        assert_eq!(
            seq.generate_state_u64(4),
            expected_state,
            "{name}: seed_sequence.generate_state(4, uint64)"
        );

        // PCG64 seeding and raw output.
        let mut g = fresh(&fixture, &name);
        assert_eq!(
            g.state(),
            state(&fixture["pcg64_state"], &name),
            "{name}: pcg64_state"
        );
        let raw: Vec<u64> = fixture["first_raw_uint64"]
            .as_array()
            .expect("first_raw_uint64")
            .iter()
            .map(|w| decimal_u64(w, &name))
            .collect();
        assert!(!raw.is_empty(), "{name}: first_raw_uint64 is empty");
        let found: Vec<u64> = raw.iter().map(|_| g.next_uint64()).collect();
        assert_eq!(found, raw, "{name}: first_raw_uint64");

        let sequences = fixture["sequences"]
            .as_object()
            .unwrap_or_else(|| panic!("{name}: sequences"));
        for (key, entry) in sequences {
            kinds.insert(check_sequence(&fixture, key, entry, &name));
        }
    }
    let expected: BTreeSet<&str> = [
        "random",
        "uniform",
        "standard_normal",
        "integers",
        "mixed_uint32_buffer",
    ]
    .into();
    assert_eq!(kinds, expected, "not every kind of sequence was checked");
    eprintln!("{} seed files checked", files.len());
}

/// The ziggurat tail (seeds 23, 57, 77) and wedge rejections must be among the fixtures,
/// or the normal test would not exercise them.
#[test]
fn fixtures_reach_the_tail_and_the_wedge() {
    let mut paths = BTreeSet::new();
    for path in seed_files() {
        let fixture = load(&path);
        for p in fixture["sequences"]["standard_normal"]["non_fast_paths"]
            .as_array()
            .expect("non_fast_paths")
        {
            let label = p["path"].as_str().expect("path label");
            paths.insert(label.split('(').next().unwrap_or(label).to_string());
        }
    }
    for needed in ["tail", "wedge", "wedge-rejected"] {
        assert!(
            paths.contains(needed),
            "no fixture reaches the {needed} path"
        );
    }
}

#[test]
fn ziggurat_tables_equal_numpys() {
    let path = repo_dir().join("ziggurat_tables.json");
    let name = path.display().to_string();
    let tables = load(&path);
    let scalar = |key: &str| {
        tables[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{name}: {key}"))
    };
    assert_bits(
        &[ziggurat_tables::NOR_R, ziggurat_tables::NOR_INV_R],
        &[scalar("ziggurat_nor_r"), scalar("ziggurat_nor_inv_r")],
        &format!("{name}: ziggurat_nor_r, ziggurat_nor_inv_r"),
    );
    let ki: Vec<u64> = tables["ki_double"]
        .as_array()
        .expect("ki_double")
        .iter()
        .map(|v| v.as_u64().expect("ki value"))
        .collect();
    assert_eq!(ki, ziggurat_tables::KI, "{name}: ki_double");
    assert_bits(
        &ziggurat_tables::WI,
        &floats(&tables["wi_double"], "wi_double"),
        &format!("{name}: wi_double"),
    );
    assert_bits(
        &ziggurat_tables::FI,
        &floats(&tables["fi_double"], "fi_double"),
        &format!("{name}: fi_double"),
    );
}

#[test]
fn seeds_beyond_64_bits_add_entropy_words() {
    // 2^64 is the words [0, 0, 1]; it must differ from 0 and from 1.
    let big = SeedSequence::from_decimal("18446744073709551616").expect("decimal");
    assert_eq!(big, SeedSequence::from_u128(1 << 64));
    assert_eq!(big, SeedSequence::from_words(&[0, 0, 1]));
    assert_ne!(big, SeedSequence::new(0));
    assert_eq!(SeedSequence::from_words(&[]), SeedSequence::new(0));
    assert_eq!(SeedSequence::from_decimal(""), None);
    assert_eq!(SeedSequence::from_decimal("-1"), None);
}

#[test]
fn integers_cover_numpys_paths() {
    let mut g = Generator::seeded(42);
    let before = g.state();
    // A single value draws nothing.
    assert_eq!(g.integers(5, 6), 5);
    assert_eq!(g.state(), before);
    // A range of exactly 2^32 is one raw 32-bit draw.
    let mut raw = g.clone();
    assert_eq!(
        g.integers(-(1 << 31), 1 << 31),
        i64::from(raw.next_uint32()) - (1 << 31)
    );
    assert_eq!(g.state(), raw.state());
    // Larger ranges use 64-bit draws and leave the 32-bit buffer as it is.
    for _ in 0..100 {
        let v = g.integers(i64::MIN, i64::MAX);
        assert!(v < i64::MAX);
        let w = g.integers(-3, 1 << 40);
        assert!((-3..1 << 40).contains(&w));
    }
    assert!(g.state().has_uint32);
}

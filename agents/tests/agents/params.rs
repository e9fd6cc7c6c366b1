//! The parameter store: lookup, counts and errors, seeded initialisation, safetensors
//! round trips and load errors, and the gradients of unused parameters.

use std::collections::HashMap;

use dfdx::prelude::*;
use flowrl_agents::params::{Init, ParamError, ParamStore};

use crate::common::{constant_grads, small_store};

#[test]
fn store_lookup_count_and_errors() {
    let dev = Cpu::default();
    let mut store = small_store::<f32>(&dev, 1);
    assert_eq!(store.len(), 4);
    assert_eq!(store.num_elements(), 12 + 4 + 4 + 4);
    let id = store.id("a.bias").unwrap();
    assert_eq!(store.name(id), "a.bias");
    assert_eq!(store.shape(id), &[4]);
    assert_eq!(store.values(store.id("ln.weight").unwrap()), vec![1.0; 4]);
    assert_eq!(store.values(store.id("ln.bias").unwrap()), vec![0.0; 4]);
    assert_eq!(
        store.id("a.wieght"),
        Err(ParamError::Unknown {
            name: "a.wieght".into(),
            count: 4
        })
    );
    assert_eq!(
        store.register("a.bias", &[4], Init::Zeros),
        Err(ParamError::Duplicate {
            name: "a.bias".into()
        })
    );
    assert!(matches!(
        store.register("bad", &[2], Init::Normal { std: f64::NAN }),
        Err(ParamError::InvalidInit { .. })
    ));
    assert!(matches!(
        store.register("bad", &[2], Init::Uniform { bound: 0.0 }),
        Err(ParamError::InvalidInit { .. })
    ));
    let err = store.set_values("a.bias", &[1.0, 2.0]).unwrap_err();
    assert_eq!(
        err,
        ParamError::ValueCount {
            name: "a.bias".into(),
            shape: vec![4],
            expected: 4,
            found: 2
        }
    );
    store.set_values("a.bias", &[1.0, 2.0, 3.0, 4.0]).unwrap();
    assert_eq!(store.values(id), vec![1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn seeded_init_is_reproducible_with_the_right_statistics() {
    let dev = Cpu::default();
    let n = 200_000;
    let build = |seed| {
        let mut s = ParamStore::<f64, Cpu>::new(&dev, seed);
        let a = s
            .register("normal", &[n], Init::Normal { std: 0.02 })
            .unwrap();
        let b = s
            .register("uniform", &[n], Init::pytorch_linear(16))
            .unwrap();
        (s.values(a), s.values(b))
    };
    let (normal, uniform) = build(7);
    assert_eq!(
        build(7),
        (normal.clone(), uniform.clone()),
        "same seed, same values"
    );
    assert_ne!(build(8).0, normal, "another seed, other values");

    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let var = |v: &[f64]| {
        let m = mean(v);
        v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64
    };
    let se = 0.02 / (n as f64).sqrt();
    assert!(
        mean(&normal).abs() < 4.0 * se,
        "normal mean {}",
        mean(&normal)
    );
    assert!(
        (var(&normal).sqrt() / 0.02 - 1.0).abs() < 0.01,
        "normal std {}",
        var(&normal).sqrt()
    );
    let bound = 0.25;
    assert!(uniform.iter().all(|&x| (-bound..bound).contains(&x)));
    assert!(
        uniform.iter().any(|&x| x > 0.99 * bound) && uniform.iter().any(|&x| x < -0.99 * bound)
    );
    assert!((var(&uniform) / (bound * bound / 3.0) - 1.0).abs() < 0.01);

    // Device- and precision-independent: the f32 store holds the f64 values rounded.
    let mut s32 = ParamStore::<f32, Cpu>::new(&dev, 7);
    let a32 = s32
        .register("normal", &[n], Init::Normal { std: 0.02 })
        .unwrap();
    assert!(s32
        .values(a32)
        .iter()
        .zip(&normal)
        .all(|(x, y)| *x == *y as f32));
}

fn safetensors_round_trip<E>()
where
    E: Dtype + num_traits::Float + Bits,
    Cpu: Device<E>,
{
    let dev = Cpu::default();
    let store = small_store::<E>(&dev, 3);
    let meta = HashMap::from([("model".to_string(), "tiny".to_string())]);
    let bytes = store.to_safetensors(&meta).unwrap();
    let mut other = small_store::<E>(&dev, 4);
    let ids: Vec<_> = store.ids().collect();
    assert!(ids.iter().any(|&id| store.values(id) != other.values(id)));
    let read = other.load_safetensors(&bytes).unwrap();
    assert_eq!(read, meta);
    for id in ids {
        assert_eq!(store.name(id), other.name(id));
        assert_eq!(store.shape(id), other.shape(id));
        let (a, b) = (store.values(id), other.values(id));
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
    }
    // The bytes are plain safetensors with the logical shapes.
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("a.weight").unwrap().shape(), &[3, 4]);
}

trait Bits {
    fn to_bits(&self) -> u64;
}
impl Bits for f32 {
    fn to_bits(&self) -> u64 {
        f32::to_bits(*self) as u64
    }
}
impl Bits for f64 {
    fn to_bits(&self) -> u64 {
        f64::to_bits(*self)
    }
}

#[test]
fn safetensors_round_trip_is_bit_exact_f32_and_f64() {
    safetensors_round_trip::<f32>();
    safetensors_round_trip::<f64>();
}

#[test]
fn safetensors_load_errors_name_the_tensor() {
    let dev = Cpu::default();
    let store = small_store::<f32>(&dev, 3);
    let empty = HashMap::new();

    // Missing tensor.
    let mut fewer = ParamStore::<f32, Cpu>::new(&dev, 0);
    fewer.register("a.weight", &[3, 4], Init::Zeros).unwrap();
    let bytes = fewer.to_safetensors(&empty).unwrap();
    let mut target = small_store::<f32>(&dev, 5);
    let before: Vec<_> = target.ids().map(|id| target.values(id)).collect();
    let err = target.load_safetensors(&bytes).unwrap_err();
    assert_eq!(
        err,
        ParamError::Missing {
            name: "a.bias".into(),
            shape: vec![4]
        }
    );
    assert!(err.to_string().contains("a.bias"));
    let after: Vec<_> = target.ids().map(|id| target.values(id)).collect();
    assert_eq!(before, after, "a failed load leaves the store unchanged");

    // Extra tensors.
    let mut more = small_store::<f32>(&dev, 3);
    more.register("extra.one", &[1], Init::Zeros).unwrap();
    more.register("extra.two", &[1], Init::Zeros).unwrap();
    let err = target
        .load_safetensors(&more.to_safetensors(&empty).unwrap())
        .unwrap_err();
    assert_eq!(
        err,
        ParamError::Unexpected {
            names: vec!["extra.one".into(), "extra.two".into()]
        }
    );

    // Shape mismatch.
    let mut reshaped = ParamStore::<f32, Cpu>::new(&dev, 0);
    reshaped.register("a.weight", &[4, 3], Init::Zeros).unwrap();
    reshaped.register("a.bias", &[4], Init::Zeros).unwrap();
    reshaped.register("ln.weight", &[4], Init::Zeros).unwrap();
    reshaped.register("ln.bias", &[4], Init::Zeros).unwrap();
    let err = target
        .load_safetensors(&reshaped.to_safetensors(&empty).unwrap())
        .unwrap_err();
    assert_eq!(
        err,
        ParamError::Shape {
            name: "a.weight".into(),
            expected: vec![3, 4],
            found: vec![4, 3]
        }
    );
    assert!(err.to_string().contains("[3, 4]") && err.to_string().contains("[4, 3]"));

    // Dtype mismatch.
    let wide = small_store::<f64>(&dev, 3);
    let err = target
        .load_safetensors(&wide.to_safetensors(&empty).unwrap())
        .unwrap_err();
    assert_eq!(
        err,
        ParamError::Dtype {
            name: "a.weight".into(),
            expected: "F32".into(),
            found: "F64".into()
        }
    );

    // Not safetensors at all.
    assert!(matches!(
        target.load_safetensors(b"not a file"),
        Err(ParamError::Format(_))
    ));
    // And the store still loads good bytes.
    target
        .load_safetensors(&store.to_safetensors(&empty).unwrap())
        .unwrap();
}

#[test]
fn unused_parameters_get_zero_gradients() {
    let dev = Cpu::default();
    let store = small_store::<f64>(&dev, 1);
    let a = store.id("a.bias").unwrap();
    let grads = constant_grads(&store, &[(a, vec![1.0, -2.0, 3.0, 0.5])]);
    assert_eq!(grads.len(), store.len());
    assert_eq!(grads.get(a).as_vec(), vec![1.0, -2.0, 3.0, 0.5]);
    for id in store.ids().filter(|&id| id != a) {
        assert!(
            grads.get(id).as_vec().iter().all(|&g| g == 0.0),
            "{}",
            store.name(id)
        );
    }
}

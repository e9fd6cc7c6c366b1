//! The layers: both `Linear` weight layouts and `LayerNorm` computed by hand, and
//! dropout in train and eval mode.

use dfdx::prelude::*;
use flowrl_agents::model::layers::{dropout, LayerNorm, Linear, WeightLayout};
use flowrl_agents::params::{Init, ParamStore};

use crate::common::per_token;

#[test]
fn linear_layouts_and_layer_norm_compute_by_hand() {
    let dev = Cpu::default();
    let mut store = ParamStore::<f64, Cpu>::new(&dev, 0);
    let torch = Linear::register(
        &mut store,
        "t",
        3,
        2,
        WeightLayout::OutIn,
        Init::Zeros,
        Some(Init::Zeros),
    )
    .unwrap();
    let conv = Linear::register(
        &mut store,
        "c",
        3,
        2,
        WeightLayout::InOut,
        Init::Zeros,
        Some(Init::Zeros),
    )
    .unwrap();
    let ln = LayerNorm::register(&mut store, "ln", 3, 1e-5).unwrap();
    assert_eq!(store.shape(store.id("t.weight").unwrap()), &[2, 3]);
    assert_eq!(store.shape(store.id("c.weight").unwrap()), &[3, 2]);
    // W [out, in] = [[1,2,3],[4,5,6]]; the Conv1D weight is its transpose.
    store
        .set_values("t.weight", &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
        .unwrap();
    store
        .set_values("c.weight", &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0])
        .unwrap();
    store.set_values("t.bias", &[0.5, -1.0]).unwrap();
    store.set_values("c.bias", &[0.5, -1.0]).unwrap();
    store.set_values("ln.weight", &[1.0, 2.0, 0.5]).unwrap();
    store.set_values("ln.bias", &[0.0, 1.0, -1.0]).unwrap();
    let x = dev.tensor_from_vec(vec![1.0, 0.0, -1.0, 2.0, 1.0, 0.5], (1, 2, 3));
    let want = vec![
        1.0 - 3.0 + 0.5,
        4.0 - 6.0 - 1.0,
        2.0 + 2.0 + 1.5 + 0.5,
        8.0 + 5.0 + 3.0 - 1.0,
    ];
    assert_eq!(
        per_token(x.clone(), |x| torch.forward(&store, x)).as_vec(),
        want
    );
    assert_eq!(
        per_token(x.clone(), |x| conv.forward(&store, x)).as_vec(),
        want
    );
    let y = per_token(x.clone(), |x| ln.forward(&store, x)).as_vec();
    let rows = x.as_vec();
    for r in 0..2 {
        let row = &rows[3 * r..3 * r + 3];
        let mean = row.iter().sum::<f64>() / 3.0;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / 3.0;
        for c in 0..3 {
            let (w, b) = ([1.0, 2.0, 0.5][c], [0.0, 1.0, -1.0][c]);
            let want = (row[c] - mean) / (var + 1e-5).sqrt() * w + b;
            assert!((y[3 * r + c] - want).abs() < 1e-14);
        }
    }
}

#[test]
fn dropout_drops_in_train_mode_only_and_reproducibly() {
    let n = 20_000;
    let run = |seed, train| {
        let dev = Cpu::seed_from_u64(seed);
        let x: Tensor<(usize,), f32, Cpu> = dev.ones_like(&(n,));
        dropout(x, 0.25, train).as_vec()
    };
    let eval = run(0, false);
    assert!(eval.iter().all(|&v| v == 1.0), "eval mode is the identity");
    let train = run(0, true);
    let dropped = train.iter().filter(|&&v| v == 0.0).count() as f64 / n as f64;
    assert!((dropped - 0.25).abs() < 0.02, "dropped fraction {dropped}");
    assert!(train
        .iter()
        .all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
    assert_eq!(run(0, true), train, "same device seed, same mask");
    assert_ne!(run(1, true), train);
    let dev = Cpu::default();
    let x: Tensor<(usize,), f32, Cpu> = dev.ones_like(&(10,));
    assert_eq!(dropout(x, 0.0, true).as_vec(), vec![1.0; 10]);
}

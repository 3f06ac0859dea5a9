//! Tests of the training step (`step.rs`): the in-place step against the copying one, and the
//! head against its graph differentiated on the interpreter.

use super::*;

#[test]
fn the_in_place_step_gives_the_copying_step_bit_for_bit_and_restores_the_parameters() {
    use crate::model::Model;
    use orion_core::cpu::CpuBackend;
    let mut cfg = ModelConfig::builtin("stories260K").unwrap();
    (cfg.n_layers, cfg.vocab_size, cfg.max_seq_len) = (2, 50, 8);
    let (b, t) = (2, 4);
    let cpu = CpuBackend::default();
    let programs = StepPrograms::new(&cfg, t, b, &cpu, DType::F32, &cpu).unwrap();
    let runner = StepRunner::new(cfg.clone(), t, b, programs);
    let model = Model::random(cfg.clone(), 3).unwrap();
    let params: Params = model.weights().into_iter().map(|(n, w)| (n, w.to_f32_vec())).collect();
    let batch = Batch {
        inputs: (0..b * t).map(|i| (i * 7 % 50) as i32).collect(),
        targets: (0..b * t).map(|i| (i * 11 % 50) as i32).collect(),
    };
    let copied = runner.loss_and_grads(&params, &batch, 1.0).unwrap();
    let mut moved = params.clone();
    let in_place = runner.loss_and_grads_in_place(&mut moved, &batch, 1.0).unwrap();
    assert_eq!(copied.loss.to_bits(), in_place.loss.to_bits());
    let bits = |p: &Params| -> Vec<(String, Vec<u32>)> {
        p.iter()
            .map(|(n, v)| (n.clone(), v.iter().map(|x| x.to_bits()).collect()))
            .collect()
    };
    assert_eq!(bits(&copied.grads), bits(&in_place.grads));
    assert_eq!(bits(&moved), bits(&params), "parameters after the call");
    // A refused batch (a token outside the vocabulary) leaves the parameters in place too.
    let bad = Batch {
        inputs: vec![50; b * t],
        targets: batch.targets.clone(),
    };
    assert!(runner.loss_and_grads_in_place(&mut moved, &bad, 1.0).is_err());
    assert_eq!(bits(&moved), bits(&params));
}

#[test]
fn the_head_matches_the_head_graph_differentiated_on_the_interpreter() {
    use crate::model::Model;
    use crate::train::programs::head_graph;
    use orion_core::autodiff::{grad, Seed};
    use orion_core::cpu::CpuBackend;
    use orion_core::interp::{interpret, Precision};
    for name in ["stories260K", "gpt2"] {
        let mut cfg = ModelConfig::builtin(name).unwrap();
        // Small enough for the interpreter; GPT-2 keeps its LayerNorm with bias.
        (
            cfg.dim,
            cfg.n_layers,
            cfg.n_heads,
            cfg.n_kv_heads,
            cfg.hidden_dim,
            cfg.vocab_size,
        ) = (16, 1, 2, 2, 32, 40);
        cfg.max_seq_len = 8;
        let (b, t) = (2, 3);
        let cpu = CpuBackend::default();
        let programs = StepPrograms::new(&cfg, t, b, &cpu, DType::F32, &cpu).unwrap();
        let runner = StepRunner::new(cfg.clone(), t, b, programs);
        let model = Model::random(cfg.clone(), 7).unwrap();
        let params: Params = model.weights().into_iter().map(|(n, w)| (n, w.to_f32_vec())).collect();
        let mut weights = runner.weight_tensors(&params).unwrap();
        let x: Vec<f32> = (0..b * t * cfg.dim)
            .map(|i| ((i * 29 % 31) as f32 - 15.0) / 8.0)
            .collect();
        let targets: Vec<i32> = (0..b * t).map(|r| ((r * 7) % cfg.vocab_size) as i32).collect();
        let mut grads = Params::new();
        let (loss, dx) = runner.head(&mut weights, x.clone(), &targets, &mut grads).unwrap();

        let g = head_graph(&cfg, b * t).unwrap();
        let wrt: Vec<String> = g
            .inputs()
            .map(|(n, _, _)| n.to_string())
            .filter(|n| n != "labels")
            .collect();
        let wrt: Vec<&str> = wrt.iter().map(String::as_str).collect();
        let gb = grad(&g, &wrt, Seed::Loss("loss".into())).unwrap();
        let inputs: Vec<Tensor> = gb
            .inputs()
            .map(|(n, _, ty)| match n {
                "x" => Tensor::f32(ty.shape.clone(), x.clone()),
                "labels" => Tensor::i32(ty.shape.clone(), targets.clone()),
                w => Tensor::f32(ty.shape.clone(), params[w].clone()),
            })
            .collect();
        let out = interpret(&gb, &inputs, Precision::F32).unwrap();
        let output = |n: &str| out[gb.outputs().iter().position(|o| o.name == n).unwrap()].to_f32_vec();
        assert!((loss - output("loss")[0]).abs() < 1e-5, "{name}: loss");
        let mut expected = vec![("x".to_string(), output("grad_x"))];
        for w in wrt.iter().filter(|w| **w != "x") {
            expected.push((w.to_string(), output(&format!("grad_{w}"))));
        }
        for (w, e) in expected {
            let got = if w == "x" { &dx } else { &grads[&w] };
            for (a, b) in got.iter().zip(&e) {
                assert!((a - b).abs() < 1e-5 + 1e-4 * b.abs(), "{name}: grad {w}: {a} vs {b}");
            }
        }
    }
}

//! Tests of the model graphs built here: batched layer graphs and stacked constant projections
//! against their one-sequence and separate forms, on the reference interpreter.

use super::*;
use orion_core::interp::{interpret, Precision};

fn tiny(name: &str) -> ModelConfig {
    let mut cfg = ModelConfig::builtin(name).unwrap();
    (
        cfg.dim,
        cfg.n_layers,
        cfg.n_heads,
        cfg.hidden_dim,
        cfg.vocab_size,
        cfg.max_seq_len,
    ) = (16, 2, 4, 24, 30, 8);
    cfg.n_kv_heads = if cfg.family == Family::Llama { 2 } else { 4 };
    cfg
}

fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 37 + seed) % 29) as f32 / 14.0 - 1.0).collect()
}

/// Inputs of `g` by name: `x` from `x`, weights from `model`.
fn inputs_of(g: &Graph, model: &Model, x: &Tensor) -> Vec<Tensor> {
    g.inputs()
        .map(|(n, _, _)| match n {
            "x" => x.clone(),
            w => model.weight(w).unwrap().as_ref().clone(),
        })
        .collect()
}

#[test]
fn a_batched_layer_gives_every_sequence_what_the_one_sequence_layer_gives_it() {
    for name in ["gpt2", "stories260K"] {
        let cfg = tiny(name);
        let model = Model::random(cfg.clone(), 11).unwrap();
        let (batch, t, d) = (3, 5, cfg.dim);
        let single = build_layer(&cfg, 1, t, DType::F32).unwrap();
        let batched = build_layer_batched(&cfg, 1, batch, t, DType::F32).unwrap();
        let all = values(batch * t * d, 3);
        let x = Tensor::f32([batch * t, d], all.clone());
        let y = interpret(&batched, &inputs_of(&batched, &model, &x), Precision::F32).unwrap();
        let y = y[0].to_f32_vec();
        for s in 0..batch {
            let xs = Tensor::f32([t, d], all[s * t * d..(s + 1) * t * d].to_vec());
            let ys = interpret(&single, &inputs_of(&single, &model, &xs), Precision::F32).unwrap();
            for (a, e) in y[s * t * d..(s + 1) * t * d].iter().zip(ys[0].to_f32_vec()) {
                assert!((a - e).abs() < 1e-5, "{name}: sequence {s}: {a} vs {e}");
            }
        }
    }
}

#[test]
fn stacked_constant_projections_match_separate_ones() {
    for name in ["gpt2", "stories260K"] {
        let cfg = tiny(name);
        let model = Model::random(cfg.clone(), 12).unwrap();
        let tokens = token_tensor(&[3, 1, 4, 1, 5], cfg.vocab_size).unwrap();
        // Constants: q/k/v (and Llama's gate/up) stacked into one product each.
        let prefill = model.prefill_graph(5, DType::F32, WeightMode::Constants).unwrap();
        let splits = prefill
            .nodes()
            .iter()
            .filter(|n| matches!(n.op, orion_core::Op::Split { .. }));
        let per_layer = if cfg.family == Family::Llama { 2 } else { 1 };
        assert!(
            splits.count() >= per_layer * cfg.n_layers,
            "{name}: projections not stacked"
        );
        let (logits, last) = prefill_logits_and_forward_last_row(&model, &prefill, &tokens);
        for (a, e) in logits.iter().zip(&last) {
            assert!((a - e).abs() < 1e-5, "{name}: {a} vs {e}");
        }
    }
}

/// The constants of `g` that no model weight is and whose rows are those of stacked q/k/v or
/// gate/up projections.
fn stacked_constants(g: &Graph, model: &Model) -> Vec<Arc<Tensor>> {
    let cfg = model.config();
    let stacked_rows = [cfg.dim + 2 * cfg.n_kv_heads * cfg.head_dim(), 2 * cfg.hidden_dim];
    g.nodes()
        .iter()
        .filter_map(|n| match &n.op {
            orion_core::Op::Const { value } => Some(Arc::clone(value)),
            _ => None,
        })
        .filter(|value| {
            value
                .shape()
                .dims()
                .first()
                .is_some_and(|rows| stacked_rows.contains(rows))
        })
        .filter(|value| !model.weights.values().any(|w| Arc::ptr_eq(w, value)))
        .collect()
}

#[test]
fn graphs_of_every_length_share_one_stacked_constant_while_one_holds_it() {
    for name in ["gpt2", "stories260K"] {
        let cfg = tiny(name);
        let model = Model::random(cfg.clone(), 12).unwrap();
        let prefill = model.prefill_graph(5, DType::F32, WeightMode::Constants).unwrap();
        let decode = model.decode_graph(8, DType::F32, WeightMode::Constants).unwrap();
        let (a, b) = (stacked_constants(&prefill, &model), stacked_constants(&decode, &model));
        // GPT-2: q/k/v weights and biases per layer; Llama: q/k/v and gate/up weights.
        assert_eq!(a.len(), 2 * cfg.n_layers, "{name}");
        assert_eq!(a.len(), b.len(), "{name}");
        assert!(a.iter().zip(&b).all(|(x, y)| Arc::ptr_eq(x, y)), "{name}: not shared");
        // An f16 graph has its own stacks, rounded to half.
        let half = model.decode_graph(8, DType::F16, WeightMode::Constants).unwrap();
        let h = stacked_constants(&half, &model);
        assert!(h
            .iter()
            .all(|t| t.dtype() == DType::F16 && !a.iter().any(|x| Arc::ptr_eq(x, t))));
        // Once no graph holds them they are freed, and the next graph stacks afresh.
        let first = Arc::downgrade(&a[0]);
        drop((a, b, prefill, decode));
        assert_eq!(first.strong_count(), 0, "{name}: the model kept a stack alive");
        let again = model.decode_graph(8, DType::F32, WeightMode::Constants).unwrap();
        assert_eq!(stacked_constants(&again, &model).len(), 2 * cfg.n_layers);
    }
}

/// The logits `prefill` (a prefill graph of `model` with its weights as constants) gives for
/// `tokens`, and the last row of the forward graph's logits for them, both on the interpreter.
fn prefill_logits_and_forward_last_row(model: &Model, prefill: &Graph, tokens: &Tensor) -> (Vec<f32>, Vec<f32>) {
    let got = interpret(prefill, std::slice::from_ref(tokens), Precision::F32).unwrap();
    let logits = got[prefill.outputs().iter().position(|o| o.name == "logits").unwrap()].to_f32_vec();
    let forward = model
        .forward_graph(tokens.numel(), DType::F32, WeightMode::Inputs)
        .unwrap();
    let inputs = model.bind(&forward, vec![("tokens", tokens.clone())]).unwrap();
    let want = interpret(&forward, &inputs, Precision::F32).unwrap()[0].to_f32_vec();
    let vocab = model.config().vocab_size;
    (logits, want[(tokens.numel() - 1) * vocab..].to_vec())
}

/// Rows of the left operand of every product with a constant right operand (a weight), in graph
/// order.
fn weight_product_rows(g: &Graph) -> Vec<usize> {
    g.nodes()
        .iter()
        .filter(|n| matches!(n.op, orion_core::Op::MatMul { .. }))
        .filter(|n| matches!(g.producer(n.inputs[1]).op, orion_core::Op::Const { .. }))
        .map(|n| g.dims(n.inputs[0])[0])
        .collect()
}

#[test]
fn the_last_layer_of_a_prefill_computes_past_its_keys_and_values_for_the_last_row_only() {
    for name in ["gpt2", "stories260K"] {
        let cfg = tiny(name);
        let model = Model::random(cfg.clone(), 5).unwrap();
        let t = 6;
        let prefill = model.prefill_graph(t, DType::F32, WeightMode::Constants).unwrap();
        let rows = weight_product_rows(&prefill);
        // Per layer: the stacked q/k/v product, the attention output, then GPT-2's c_fc and c_proj
        // or Llama's stacked gate/up and down_proj; then the classifier.
        assert_eq!(rows.len(), 4 * cfg.n_layers + 1, "{name}: {rows:?}");
        let last_layer = 4 * (cfg.n_layers - 1);
        assert!(rows[..=last_layer].iter().all(|&r| r == t), "{name}: {rows:?}");
        assert!(rows[last_layer + 1..].iter().all(|&r| r == 1), "{name}: {rows:?}");
        // The logits of every prompt length, one token included, are the forward graph's last row.
        for len in [1, t] {
            let tokens = token_tensor(&[3, 1, 4, 1, 5, 9][..len], cfg.vocab_size).unwrap();
            let prefill = model.prefill_graph(len, DType::F32, WeightMode::Constants).unwrap();
            let (logits, last) = prefill_logits_and_forward_last_row(&model, &prefill, &tokens);
            assert_eq!(logits.len(), cfg.vocab_size);
            for (a, e) in logits.iter().zip(last) {
                assert!((a - e).abs() < 1e-5, "{name}, {len} tokens: {a} vs {e}");
            }
        }
    }
}

#[test]
fn last_query_attention_rejects_shapes_it_cannot_attend() {
    let mut g = Graph::new("attention");
    let input =
        |g: &mut Graph, name: &str, dims: &[usize]| g.input(name, TensorType::new(DType::F32, dims.to_vec())).unwrap();
    let (q, k, v) = (
        input(&mut g, "q", &[4, 2, 8]),
        input(&mut g, "k", &[2, 5, 8]),
        input(&mut g, "v", &[2, 5, 8]),
    );
    assert!(last_query_attention(&mut g, q, k, v).is_err(), "two query rows");
    let q3 = input(&mut g, "q3", &[3, 1, 8]);
    assert!(
        last_query_attention(&mut g, q3, k, v).is_err(),
        "3 heads over 2 key heads"
    );
    let q1 = input(&mut g, "q1", &[4, 1, 8]);
    let out = last_query_attention(&mut g, q1, k, v).unwrap();
    assert_eq!(g.dims(out), [4, 1, 8]);
}

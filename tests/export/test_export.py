"""The exported graph computes what torch computes, through its KV cache."""

import numpy as np
import onnx
import pytest
import torch

from edgescale.bench.loss import onnx_loss, score
from edgescale.bench.ort_model import OrtCausalLM
from edgescale.errors import UserError
from edgescale.export.canonical import onnx_sha256
from edgescale.export.verify import verify_export


def test_export_is_one_file_with_dynamic_kv_axes(tiny_onnx, tiny_cfg):
    model = onnx.load(str(tiny_onnx))
    names = [i.name for i in model.graph.input]
    assert names[:3] == ["input_ids", "attention_mask", "position_ids"]
    assert len(names) == 3 + 2 * tiny_cfg.n_layer
    past = model.graph.input[3].type.tensor_type.shape.dim
    assert past[2].dim_param and past[0].dim_param  # past length and batch stay symbolic
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def test_prefill_logits_match_torch(tiny_model, tiny_onnx):
    ids = torch.randint(0, 256, (3, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = tiny_model.logits(ids).numpy()
    got = OrtCausalLM(tiny_onnx).logits(ids.numpy())
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_greedy_generation_through_kv_cache_is_identical(tiny_model, tiny_onnx):
    prompt = torch.randint(0, 256, (1, 8), generator=torch.Generator().manual_seed(2))
    expected = tiny_model.generate(prompt, 32).tolist()
    assert OrtCausalLM(tiny_onnx).generate(prompt.numpy(), 32) == expected


def test_verify_export_catches_a_different_model(tiny_cfg, tiny_onnx):
    from edgescale.models.gpt import GPT

    with pytest.raises(UserError, match="logits differ"):
        verify_export(GPT(tiny_cfg, seed=99).eval(), tiny_onnx)


def test_ort_loss_equals_torch_loss_on_the_same_tokens(tiny_model, tiny_onnx, corpus):
    def torch_logits(ids):
        with torch.no_grad():
            return tiny_model.logits(torch.from_numpy(ids)).numpy()

    ref = score(torch_logits, corpus["validation"], 64, 32, 2048, batch_size=4)
    got = onnx_loss(tiny_onnx, corpus["validation"], 64, 32, 2048, batch_size=4)
    assert got.tokens == ref.tokens == 2048
    assert got.bits_per_byte == pytest.approx(ref.bits_per_byte, rel=1e-6)
    assert got.bits_per_byte == pytest.approx(got.nats_per_token / np.log(2))


def test_canonical_hash_ignores_metadata(tiny_onnx, tmp_path):
    model = onnx.load(str(tiny_onnx))
    model.producer_name = "something else"
    model.doc_string = "a note"
    onnx.helper.set_model_props(model, {"built_at": "/tmp/xyz"})
    onnx.helper.set_metadata_props(model.graph.node[0], {"pkg.torch.onnx.stack_trace": 'File "/a/gpt.py", line 9'})
    other = tmp_path / "other.onnx"
    onnx.save(model, str(other))
    assert onnx_sha256(other) == onnx_sha256(tiny_onnx)
    model.graph.initializer[0].raw_data = bytes(len(model.graph.initializer[0].raw_data))
    onnx.save(model, str(other))
    assert onnx_sha256(other) != onnx_sha256(tiny_onnx)


def test_an_export_holds_no_trace_of_the_checkout(tiny_onnx):
    """The exporter records each op's Python stack (file paths, line numbers) in node metadata;
    the export drops it, so the same model gives the same bytes from any checkout or edit."""
    model = onnx.load(str(tiny_onnx))
    assert not any(n.metadata_props for n in model.graph.node)
    assert b"edgescale/models/gpt.py" not in tiny_onnx.read_bytes()


def test_a_non_lm_onnx_file_is_refused_by_name(relu_onnx, tmp_path):
    path = relu_onnx
    with pytest.raises(UserError, match="not a causal LM") as e:
        OrtCausalLM(path)
    assert str(path) in str(e.value)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00not onnx at all")
    with pytest.raises(UserError, match="garbage.onnx"):
        OrtCausalLM(garbage)


@pytest.fixture(scope="module")
def pruned_shape(tmp_path_factory):
    """A GPT with a different head count and FFN width in every layer, and its export."""
    from edgescale.export.onnx import export_onnx
    from edgescale.models.gpt import GPT, GPTConfig

    cfg = GPTConfig(n_layer=3, n_head=4, n_embd=32, block_size=64, layer_heads=(3, 1, 2), layer_ffn=(64, 9, 128))
    model = GPT(cfg, seed=5).eval()
    return model, export_onnx(model, tmp_path_factory.mktemp("pruned") / "pruned.onnx")


def test_per_layer_heads_export_with_their_own_kv_shapes(pruned_shape):
    model, path = pruned_shape
    inputs = {i.name: i.type.tensor_type.shape.dim for i in onnx.load(str(path)).graph.input}
    for i, heads in enumerate((3, 1, 2)):
        for kv in ("key", "value"):
            dims = inputs[f"past_key_values.{i}.{kv}"]
            assert (dims[1].dim_value, dims[3].dim_value) == (heads, 8)
    check = verify_export(model, path)  # prefill logits and 32 greedy tokens through the cache
    assert check["greedy_tokens_identical"] == 32
    assert OrtCausalLM(path).sig.layer_heads == (3, 1, 2)


def test_per_layer_heads_decode_through_the_cache_like_a_full_recompute(pruned_shape):
    _, path = pruned_shape
    lm = OrtCausalLM(path)
    ids = np.random.default_rng(3).integers(0, 256, (2, 10))
    logits, past = lm.run(ids[:, :4])
    steps = [logits]
    for t in range(4, 10):
        logits, past = lm.run(ids[:, t : t + 1], past)
        steps.append(logits)
    np.testing.assert_allclose(np.concatenate(steps, axis=1), lm.logits(ids), atol=1e-4)


def test_latency_worker_binds_per_layer_kv_shapes(pruned_shape, tiny_onnx):
    from edgescale.bench.cost import graph_cost
    from edgescale.bench.measure import MeasureSpec, measure_variants

    _, path = pruned_shape
    spec = MeasureSpec(prompt_len=8, decode_context=16, repeats=3, warmup=1, threads=1)
    rep = measure_variants({"pruned": path, "tiny": tiny_onnx}, spec, baseline="tiny")
    assert rep.variants["pruned"].decode == "kv-cache" and rep.variants["pruned"].n_samples == 3
    assert graph_cost(path).kv_bytes_per_token == 4 * 2 * (3 + 1 + 2) * 8  # cost.py reads each KV input

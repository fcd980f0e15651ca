"""Dimensions (kuma.toml `dims`): one build serves every value of a dim in its range. Each model is
exported and compiled once, for both device classes, and run on real WebGPU (lavapipe) at the
dim's min, max and values between (not multiples of any workgroup size), with fresh random inputs,
against PyTorch eager. Also: Hugging Face BERT at several sequence lengths from one build, the
errors for a dim the export specialises or an op that cannot take a dynamic size, and that a
static model's output does not change."""

import copy
import inspect
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kuma_build.compiler import compile_module
from kuma_build.compiler.export import concrete_shape, example_inputs
from kuma_build.config import InputSpec
from kuma_build.devices import DEVICE_CLASSES
from kuma_build.errors import KumaError
from kuma_build.webgpu import GpuModel
from support import assert_outputs_match, model_config, reference_outputs

sys.path.insert(0, str(Path(__file__).parent / "models"))
from llama import Llama  # noqa: E402

SEQ = (1, 70)  # min and max of the dim `seq`
VALUES = (1, 37, 70)  # min, a middle value, max


class Mixed(nn.Module):
    """Elementwise chains and epilogues, rows (layer and group norms, softmax, log-softmax and
    reductions over a fixed and over a dynamic length), linear layers (dynamic M), attention-style products (dynamic N, then K),
    arange, comparisons and masks, cat, slices, cumsum, argmax and topk."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(12, 20)
        self.norm = nn.LayerNorm(20)
        self.out = nn.Linear(20, 12)

    def forward(self, x):  # x [2, seq, 12]
        h = self.norm(F.gelu(self.fc(x)))  # [2, seq, 20]
        scores = torch.softmax(h @ h.transpose(1, 2) / 4.0, dim=-1)  # [2, seq, seq]
        mixed = self.out(scores @ h) + x  # dynamic K; residual epilogue
        positions = torch.arange(x.shape[1], dtype=torch.float32).reshape(1, -1, 1)
        masked = torch.where(positions.expand_as(mixed) >= 2.0, mixed, -mixed)
        down = torch.softmax(masked, dim=1)  # rows of dynamic length
        stats = torch.cat([masked.sum(1), masked.mean(1), masked.var(1, correction=0), masked.amax(1)], dim=-1)
        joined = torch.cat([masked, down * 2], dim=1)[:, :, 3:9]  # [2, 2 * seq, 6]
        grouped = F.group_norm(masked.transpose(1, 2), 3)  # rows of 4 * seq
        return (masked, stats, joined, torch.cumsum(masked, dim=1), masked.argmax(dim=1),
                torch.topk(masked, 1, dim=1).values, masked.norm(dim=-1) > 3.0, grouped, torch.log_softmax(masked, dim=1))


class Lookup(nn.Module):
    """Embedding and index_select with dynamic id counts, torch.gather, and index writes with a
    dynamic number of updates (index_copy into a fixed table, slice assignment)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(90, 10)
        self.register_buffer("table", torch.randn(80, 10))

    def forward(self, ids, positions):  # ids [1, seq], positions [seq]
        e = self.embed(ids)  # [1, seq, 10]
        picked = torch.index_select(self.table, 0, positions)  # [seq, 10]
        taken = torch.gather(e, 2, (ids.unsqueeze(-1) % 10).expand(-1, -1, 4))  # [1, seq, 4]
        written = self.table.index_copy(0, positions, picked * 2 + e[0])  # [80, 10]
        return e, picked, taken, written


class Attend(nn.Module):
    """scaled_dot_product_attention over dynamic query and key lengths: causal, with a boolean
    mask built from arange, and grouped-query heads."""

    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(16, 16 + 8 + 8)

    def forward(self, x, memory):  # x [1, seq, 16], memory [1, keys, 16]
        q = self.qkv(x)[..., :16].reshape(1, -1, 4, 4).transpose(1, 2)  # 4 query heads
        k, v = self.qkv(memory)[..., 16:].reshape(1, -1, 2, 8).transpose(1, 2).split(4, dim=-1)  # 2 kv heads
        causal = F.scaled_dot_product_attention(q[:, :2], k, v, is_causal=True)
        keys = torch.arange(memory.shape[1])
        queries = torch.arange(x.shape[1])
        mask = keys.reshape(1, -1) <= queries.reshape(-1, 1) + 3  # [seq, keys]
        masked = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        return causal, masked.transpose(1, 2).reshape(1, x.shape[1], 16)


class Batched(nn.Module):
    """A dynamic batch of products (tiled and thin kernels), a thin linear layer (few columns, dynamic
    rows), constant padding of a dynamic dim, a sum of everything, and a static KV cache (state) that
    each run writes a dynamic number of rows into, in place."""

    def __init__(self):
        super().__init__()
        self.thin = nn.Linear(12, 5)
        self.register_buffer("cache", torch.zeros(1, 80, 12))

    def forward(self, a, b, positions):  # a [seq, 20, 12], b [seq, 12, 20], positions [seq]
        wide = torch.bmm(a, b)  # [seq, 20, 20]
        narrow = torch.bmm(a, b[:, :, :3])  # [seq, 20, 3]
        padded = F.pad(self.thin(a[:, 0]), (0, 0, 2, 1), value=0.5)  # [seq + 3, 5]
        self.cache.index_copy_(1, positions, a[:, 1].unsqueeze(0))
        return wide, narrow, padded, wide.sum(), self.cache.sum(-1)


# name -> (module, kuma.toml inputs, dims, the values each run takes)
MODELS = {
    "mixed": (Mixed, [InputSpec("x", (2, "seq", 12), "float32")], {"seq": SEQ}, [{"seq": v} for v in VALUES]),
    "lookup": (Lookup, [InputSpec("ids", (1, "seq"), "int64"), InputSpec("positions", ("seq",), "int64")], {"seq": SEQ},
               [{"seq": v} for v in VALUES]),
    "batched": (Batched, [InputSpec("a", ("seq", 20, 12), "float32"), InputSpec("b", ("seq", 12, 20), "float32"),
                          InputSpec("positions", ("seq",), "int64")], {"seq": SEQ}, [{"seq": v} for v in (*VALUES, 5)]),
    "attend": (Attend, [InputSpec("x", (1, "seq", 16), "float32"), InputSpec("memory", (1, "keys", 16), "float32")],
               {"seq": (1, 40), "keys": (1, 90)}, [{"seq": 1, "keys": 1}, {"seq": 23, "keys": 50}, {"seq": 40, "keys": 90},
                                                   {"seq": 40, "keys": 5}]),
}


def build(module: nn.Module, inputs: list[InputSpec], dims: dict):
    """The module compiled once for both device classes, with a GpuModel per class."""
    torch.manual_seed(0)
    net = module.eval()
    config = model_config(net, [], "dims")
    config.inputs, config.dims = inputs, dims
    compiled = compile_module(net, config, devices=list(DEVICE_CLASSES.values()))
    chunks = [c.data for c in compiled.chunks]
    return net, config, compiled, {name: GpuModel(program, chunks=chunks) for name, program in compiled.programs.items()}


def random_inputs(config, values: dict[str, int], generator) -> dict[str, torch.Tensor]:
    """Fresh inputs at the dims' values: floats, and distinct ids valid for every table they index
    (an index_copy of two updates to one slot has no one right answer)."""
    inputs = example_inputs(config, generator, values)
    for spec in config.inputs:
        if spec.dtype != "float32":
            shape = concrete_shape(spec.shape, values)
            inputs[spec.name] = torch.randperm(80, generator=generator)[:math.prod(shape)].reshape(shape)
    return inputs


def check_runs(built, runs) -> None:
    net, config, _, gpus = built
    generator = torch.Generator().manual_seed(1)
    for values in runs:
        inputs = random_inputs(config, values, generator)
        expected = reference_outputs(net, config, inputs)
        for name, gpu in gpus.items():
            actual = list(gpu.run({k: t.numpy() for k, t in inputs.items()}).values())
            try:
                assert_outputs_match(actual, expected)
            except AssertionError as e:
                raise AssertionError(f"{name} class at {values}: {e}") from None


@pytest.fixture(scope="module", params=sorted(MODELS))
def built(request):
    module, inputs, dims, runs = MODELS[request.param]
    built = build(module(), inputs, dims)
    yield built, runs
    for gpu in built[3].values():
        gpu.release()


def test_one_build_serves_every_value(built):
    """Each op family at the dims' min, max and values between, from one build per model."""
    check_runs(*built)


def test_dims_in_the_program(built):
    (_, config, compiled, _), _ = built
    for program in compiled.programs.values():
        assert list(program["dims"]) == list(config.dims)
        kinds = [b["kind"] for b in program["buffers"]]
        assert kinds.count("dims") == 1 and program["buffers"][kinds.index("dims")]["size"] == 16
        assert any(isinstance(count, dict) for _, _, groups, *_ in program["dispatches"] for count in groups)


def test_few_rows_of_a_dynamic_product_get_the_thin_kernel():
    """On the "gpu" class a linear layer over `seq` rows is three dispatches: the tiled kernel while
    seq > 8, the thin one for 8 rows while 2 <= seq <= 8, and for 1 row (as a decode step's build
    would have) at seq = 1; each right at its edges."""
    built = build(nn.Linear(40, 24), [InputSpec("input", ("seq", 40), "float32")], {"seq": SEQ})
    whens = [dispatch[3] for dispatch in built[2].programs["gpu"]["dispatches"] if len(dispatch) > 3]
    assert whens == [{"seq": [9, 70]}, {"seq": [2, 8]}, {"seq": [1, 1]}]
    assert all(len(dispatch) == 3 for dispatch in built[2].programs["cpu"]["dispatches"])  # one register-blocked kernel
    check_runs(built, [{"seq": v} for v in (1, 2, 8, 9, 70)])


def test_bert_from_transformers_at_several_lengths():
    """Hugging Face BertModel (a tiny config) with the sequence length dynamic: one build, run at 1, 7, a middle length and the max."""
    import transformers  # the test extra has it

    class Bert(nn.Module):
        def __init__(self):
            super().__init__()
            config = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                                             vocab_size=99, max_position_embeddings=64)
            self.bert = transformers.BertModel(config)

        def forward(self, input_ids):
            return self.bert(input_ids=input_ids).last_hidden_state

    built = build(Bert(), [InputSpec("input_ids", (1, "seq"), "int64")], {"seq": (1, 64)})
    net, config, _, gpus = built
    generator = torch.Generator().manual_seed(2)
    for length in (1, 7, 29, 64):
        ids = torch.randint(0, 99, (1, length), generator=generator)
        expected = reference_outputs(net, config, {"input_ids": ids})
        for gpu in gpus.values():
            assert_outputs_match(list(gpu.run({"input_ids": ids.numpy()}).values()), expected)


def test_llama_prefill_then_decode_from_one_build():
    """tests/models/llama.py (a static KV cache in state buffers) with the token count dynamic: a
    7-token prompt, then one token per run, token-identical to PyTorch eager stepping the same module."""
    torch.manual_seed(0)
    inputs = [InputSpec("token", (1, "seq"), "int64"), InputSpec("pos", ("seq",), "int64")]
    net, config, _, gpus = build(Llama(), inputs, {"seq": (1, 40)})
    for gpu in gpus.values():
        reference = copy.deepcopy(net)  # build() restored the caches: both start empty
        token, pos = torch.randint(0, 67, (1, 7), generator=torch.Generator().manual_seed(3)), torch.arange(7)
        for _ in range(6):
            with torch.no_grad():
                expected_token, expected_logits = reference(token, pos)
            out = gpu.run({"token": token.numpy(), "pos": pos.numpy()})
            np.testing.assert_array_equal(out["output0"], expected_token.numpy())
            assert_outputs_match([out["output1"]], [expected_logits.numpy()])
            token, pos = expected_token[:, -1:], pos[-1:] + 1


def test_inconsistent_or_out_of_range_inputs_are_errors():
    built = build(Lookup(), MODELS["lookup"][1], {"seq": SEQ})
    gpu = built[3]["cpu"]
    with pytest.raises(KumaError, match=r"input ids sets the dim seq to 71, outside its range \[1, 70\]"):
        gpu.run({"ids": np.zeros((1, 71), np.int32), "positions": np.zeros(71, np.int32)})
    with pytest.raises(KumaError, match=r"input positions sets the dim seq to 4, but another input set it to 3"):
        gpu.run({"ids": np.zeros((1, 3), np.int32), "positions": np.zeros(4, np.int32)})


class ModuloGuard(nn.Module):
    def forward(self, x):
        assert x.shape[1] % 5 == 0, "blocks of 5"  # the guard (35, the export's example, has it)
        return x * 2


class EqualityGuard(nn.Module):
    def forward(self, x):
        if x.shape[1] == 35:  # the guard
            return x * 2
        return x


class OneSpecialised(nn.Module):
    def forward(self, x):
        return x[:, 1:] - x[:, :-1]  # the guard: torch specialises seq - 1 = 1 away


@pytest.mark.parametrize("module", [ModuloGuard, EqualityGuard, OneSpecialised])
def test_a_dim_the_export_specialises_names_the_guard(module):
    net = module()
    config = model_config(net, [], "guarded")
    config.inputs, config.dims = [InputSpec("x", (2, "seq", 3), "float32")], {"seq": SEQ}
    with pytest.raises(KumaError) as caught:
        compile_module(net, config)
    lines, first = inspect.getsourcelines(module.forward)
    guard_line = first + next(i for i, line in enumerate(lines) if "# the guard" in line)
    error = caught.value
    assert "seq" in error.message and "[1, 70]" in error.message
    assert error.line == guard_line and error.file.endswith("test_dims.py"), error.render()


class Convolved(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return self.conv(x)  # convolutions have no dynamic kernel yet


def test_an_op_without_a_dynamic_kernel_is_refused_at_build():
    net = Convolved()
    config = model_config(net, [], "convolved")
    config.inputs, config.dims = [InputSpec("x", (1, 3, "height", 4), "float32")], {"height": (2, 40)}
    with pytest.raises(KumaError, match="the conv2d op at test_dims.py:\\d+ is not supported with a dynamic dimension yet.*height") as caught:
        compile_module(net, config)
    assert caught.value.line == Convolved.forward.__code__.co_firstlineno + 1


def test_min_one_max_two_runs_at_both():
    """A range of two values: the export's example is 2, and the build runs at 1 too (no 0/1 specialisation)."""
    built = build(nn.Sequential(nn.Linear(5, 3), nn.Softmax(dim=0)), [InputSpec("input", ("n", 5), "float32")], {"n": (1, 2)})
    check_runs(built, [{"n": 1}, {"n": 2}])


def test_static_models_have_no_dims():
    net = nn.Linear(4, 3)
    config = model_config(net, [torch.randn(2, 4)], "static")
    program = compile_module(net, config).program
    assert "dims" not in program and all(b["kind"] != "dims" for b in program["buffers"])
    assert all(isinstance(count, int) for _, _, groups in program["dispatches"] for count in groups)
    assert math.prod(program["outputs"][0]["shape"]) == 6


def test_sizes_render_and_evaluate():
    """ir/sizes.py: polynomials over dims; constant results are ints; WGSL and the program's term lists."""
    from kuma_build.compiler.ir.sizes import Dim, DynamicSize, Sym, max_value, to_json, wgsl
    seq, keys = Sym.of(Dim(0, "seq", 1, 70)), Sym.of(Dim(1, "keys", 2, 9))
    size = 12 * seq + 3 - keys * seq
    assert (size - size, seq * 2 // 2, seq - seq + 5) == (0, seq, 5)
    assert to_json(size) == [[3], [12, "seq"], [-1, "seq", "keys"]]
    assert size.evaluate({"seq": 7, "keys": 4}) == 12 * 7 + 3 - 28 and max_value(size) == 12 * 70 + 3 - 2 * 70
    assert wgsl(seq) == "dims.seq" and wgsl(size) == "(3u + 12u * dims.seq - dims.seq * dims.keys)" and wgsl(5) == "5u"
    with pytest.raises(DynamicSize):
        seq < 3  # noqa: B015  (a Sym is compared only through max_value)
    with pytest.raises(DynamicSize):
        seq // 2

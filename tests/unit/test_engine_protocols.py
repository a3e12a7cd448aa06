"""The engine side of the widened protocols: metadata built once per step, hidden states and
layer ranges for decoders, decoder-owned state released, and protocols free of cycles."""

import ast
import copy
from pathlib import Path

import pytest
import torch

from effbench.kernels_ref.attention import DenseAttention
from effbench.kernels_ref.checkpoint import load_checkpoint, resolve_model
from effbench.kernels_ref.decoding import Autoregressive
from effbench.kernels_ref.engine import Engine, EngineConfig, layout_of, run_forward
from effbench.kernels_ref.kvcache import FullKVCacheFactory, PooledKVCacheFactory
from effbench.kernels_ref.protocols import AttentionMeta, Feed
from effbench.kernels_ref.requests import Request
from effbench.kernels_ref.scheduling import ContinuousBatching

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model():
    m, _ = load_checkpoint(resolve_model("tiny-target"), "cpu", torch.float32)
    return m.eval()


def _feeds(model, factory, lengths, start_token=5):
    return [
        Feed(factory.new_cache(layout_of(model)),
             [start_token + (i * 7 + j) % 50 for j in range(n)], 0, "all", seq_id=i)
        for i, n in enumerate(lengths)
    ]


class Recording(DenseAttention):
    """Dense attention that records the step metadata object of every call."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[int] = []
        self.layers: list[int] = []

    def _seen(self, meta: AttentionMeta | None) -> None:
        assert meta is not None
        self.steps.append(id(meta.step))
        self.layers.append(meta.layer)

    def forward(self, q, k, v, meta=None):
        self._seen(meta)
        return super().forward(q, k, v, meta)

    def decode(self, q, k, v, meta=None):
        self._seen(meta)
        return super().decode(q, k, v, meta)

    def decode_padded(self, q, k, v, lengths, meta=None):
        self._seen(meta)
        return super().decode_padded(q, k, v, lengths, meta)


@pytest.mark.parametrize("lengths", [[5, 9, 3], [1, 1, 1, 1]])
def test_attention_metadata_is_built_once_per_forward(model, lengths):
    att = Recording()
    with torch.inference_mode():
        run_forward(model, att, _feeds(model, PooledKVCacheFactory(), lengths))
    layers = model.config.num_hidden_layers
    assert len(set(att.steps)) == 1, "one StepInfo object shared by every call of the forward"
    assert sorted(set(att.layers)) == list(range(layers))


def test_hidden_states_are_what_the_head_reads(model):
    with torch.inference_mode():
        out = run_forward(model, DenseAttention(), _feeds(model, FullKVCacheFactory(), [6, 4]),
                          hidden=True)
        for lg, h in zip(out.logits, out.hidden):
            assert h.shape == (lg.shape[0], model.config.hidden_size)
            torch.testing.assert_close(model.lm_head(model.norm(h)), lg)


def test_layer_range_equals_a_truncated_model(model):
    n = model.config.num_hidden_layers - 1
    short = copy.deepcopy(model)
    short.layers = short.layers[:n]
    with torch.inference_mode():
        early = run_forward(model, DenseAttention(), _feeds(model, FullKVCacheFactory(), [7]),
                            layers=n).logits[0]
        ref = run_forward(short, DenseAttention(), _feeds(short, FullKVCacheFactory(), [7]))
        torch.testing.assert_close(early, ref.logits[0])
    with pytest.raises(ValueError, match="layers must be in"):
        run_forward(model, DenseAttention(), _feeds(model, FullKVCacheFactory(), [3]), layers=0)


class Releasing(Autoregressive):
    def __init__(self) -> None:
        super().__init__()
        self.released: list[int] = []

    def release(self, req):
        self.released.append(req.rid)


def test_engine_releases_decoder_state_of_finished_requests(model):
    dec = Releasing()
    eng = Engine(model, attention=DenseAttention(), cache_factory=PooledKVCacheFactory(),
                 scheduler=ContinuousBatching(), decoder=dec,
                 config=EngineConfig(max_batch=4, max_tokens=1024))
    reqs = [Request(i, [1, 5 + i, 9, 12], 3 + i) for i in range(4)]
    res = eng.run(reqs)
    assert sorted(dec.released) == [0, 1, 2, 3]
    assert all(r.cache is None for r in res.requests)


def _project_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    mods = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("effbench"):
            mods.add(node.module)
        elif isinstance(node, ast.Import):
            mods |= {a.name for a in node.names if a.name.startswith("effbench")}
    return mods


def test_protocols_depend_on_value_types_only():
    assert _project_imports(ROOT / "kernels_ref" / "protocols.py") == {
        "effbench.kernels_ref.requests"
    }
    assert _project_imports(ROOT / "kernels_ref" / "requests.py") == set()


@pytest.mark.parametrize("module", ["kernels_ref/engine.py", "kernels_ref/model.py",
                                    "suite/levels/kernel.py", "suite/levels/engine.py"])
def test_engine_and_levels_find_nothing_by_hasattr(module):
    text = (ROOT / module).read_text()
    assert "hasattr(" not in text and "getattr(" not in text

"""Save and load Llama-family checkpoints in Hugging Face's on-disk layout, via safetensors only.

Why this layout: a checkpoint written here loads unchanged in ``transformers`` (the integration
tests compare logits), and any local Hugging Face Llama-family checkpoint loads into effbench's
own :class:`~effbench.kernels_ref.model.LlamaModel`. Pickle-based ``.bin``/``.pt`` weights are
refused,
since unpickling runs arbitrary code. Also here: the embedded tiny checkpoints shipped inside the
package, name resolution for them, and randomly initialised models of real shapes.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from effbench.kernels_ref.model import LlamaConfig, LlamaModel, Rotary
from effbench.kernels_ref.tokenizer import TOKENIZER_FILES, Tokenizer

SUPPORTED_MODEL_TYPES = ("llama", "mistral")
CHECKPOINTS_DIR = Path(__file__).resolve().parent / "checkpoints"
EMBEDDED: dict[str, Path] = {
    "tiny-target": CHECKPOINTS_DIR / "tiny-target",
    "tiny-draft": CHECKPOINTS_DIR / "tiny-draft",
    "tiny-draft-1l": CHECKPOINTS_DIR / "tiny-draft-1l",  # one layer, distilled: a draft that pays
    "tiny-long": CHECKPOINTS_DIR / "tiny-long",  # the target continued at 2048-4096 tokens
}
ALIASES = {"tiny": "tiny-target"}
DEFAULT_MAX_POSITIONS_CAP = 8192

# Shapes of real models, for speed measurements with random weights (no download needed).
KNOWN_CONFIGS: dict[str, dict] = {
    "llama-3.2-1b": {
        "model_type": "llama",
        "vocab_size": 128256,
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "max_position_embeddings": 131072,
        "rope_theta": 500000.0,
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": True,
        "bos_token_id": 128000,
        "eos_token_id": 128001,
    },
}

_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


# ----------------------------------------------------------------------------- saving


def save_checkpoint(
    model: LlamaModel,
    out_dir: str | Path,
    tokenizer: str | Path | Tokenizer | None,
    card_text: str = "",
) -> Path:
    """Write config.json, model.safetensors (bfloat16, HF names), tokenizer files and README.md.

    ``tokenizer`` is a directory to copy the tokenizer files from, a :class:`Tokenizer`, or None.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    (out / "config.json").write_text(json.dumps(cfg.to_hf(), indent=2) + "\n")
    tensors = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        hf_name = name if name.startswith("lm_head.") else f"model.{name}"
        tensors[hf_name] = tensor.detach().to("cpu", torch.bfloat16).contiguous()
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    if isinstance(tokenizer, Tokenizer):
        tokenizer.save(out)
    elif tokenizer is not None:
        for fname in TOKENIZER_FILES:
            src = Path(tokenizer) / fname
            if src.resolve() != (out / fname).resolve():
                shutil.copyfile(src, out / fname)
    if card_text:
        (out / "README.md").write_text(card_text)
    return out


# ----------------------------------------------------------------------------- loading


def read_config(path: Path) -> dict:
    if not path.exists():
        raise ValueError(f"not a checkpoint: {path} does not exist")
    if not path.is_dir():
        raise ValueError(f"not a checkpoint: {path} is not a directory")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ValueError(f"not a checkpoint: no config.json in {path}")
    try:
        d = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"unreadable config.json in {path}: {exc}") from None
    model_type = d.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"model_type {model_type!r} in {path} is not Llama-family; supported: "
            f"{', '.join(SUPPORTED_MODEL_TYPES)} (Llama-shaped: RMSNorm, RoPE, GQA, SwiGLU)"
        )
    if d.get("hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act {d['hidden_act']!r} in {path} is unsupported (silu only)")
    if d.get("attention_bias") or d.get("mlp_bias"):
        raise ValueError(f"attention/mlp biases in {path} are unsupported")
    return d


def _rope_spec(d: Mapping) -> tuple[float, dict | None]:
    """(rope_theta, scaling dict or None) from either the v4 or the v5 transformers layout."""
    params = d.get("rope_parameters") or {}
    scaling = d.get("rope_scaling") or None
    theta = d.get("rope_theta", params.get("rope_theta", 10000.0))
    if scaling is None and params.get("rope_type", "default") != "default":
        scaling = params
    if scaling is not None:
        kind = scaling.get("rope_type", scaling.get("type", "default"))
        if kind == "default":
            scaling = None
        elif kind not in ("linear", "llama3"):
            raise ValueError(f"rope scaling type {kind!r} is unsupported (linear, llama3 only)")
    return float(theta), scaling


def config_from_dict(d: Mapping, max_positions: int | None = None) -> LlamaConfig:
    """Build a :class:`LlamaConfig` from a config.json dict; ``max_positions`` caps RoPE."""
    d = dict(d)
    d["rope_theta"], _ = _rope_spec(d)
    window = d.get("sliding_window")
    if d.get("model_type") == "mistral" and window and window < d["max_position_embeddings"]:
        # Exact for sequences no longer than the window, which is all the model may see here.
        d["max_position_embeddings"] = window
    if max_positions is not None:
        d["max_position_embeddings"] = min(d["max_position_embeddings"], max_positions)
    return LlamaConfig.from_hf(d)


def _scaled_inv_freq(cfg: LlamaConfig, scaling: dict) -> torch.Tensor:
    """RoPE inverse frequencies with linear or Llama-3 frequency scaling applied."""
    dim = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    kind = scaling.get("rope_type", scaling.get("type"))
    factor = float(scaling["factor"])
    if kind == "linear":
        return inv / factor
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    old_ctx = float(scaling["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > old_ctx / low, inv / factor, inv)
    smooth = (old_ctx / wavelen - low) / (high - low)
    mid = (1 - smooth) * scaled / factor + smooth * scaled
    is_mid = (wavelen >= old_ctx / high) & (wavelen <= old_ctx / low)
    return torch.where(is_mid, mid, scaled)


def _build_rotary(cfg: LlamaConfig, scaling: dict | None, device: torch.device | str) -> Rotary:
    rotary = Rotary(cfg.head_dim, cfg.rope_theta, cfg.max_position_embeddings)
    if scaling is not None:
        t = torch.arange(cfg.max_position_embeddings, dtype=torch.float32)
        emb = torch.outer(t, _scaled_inv_freq(cfg, scaling)).repeat(1, 2)
        rotary.cos, rotary.sin = emb.cos(), emb.sin()
    return rotary.to(device)


def _weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        files = [path / f for f in sorted(set(weight_map.values()))]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ValueError(f"incomplete checkpoint {path}: missing shard(s) {', '.join(missing)}")
        return files
    single = path / "model.safetensors"
    if single.is_file():
        return [single]
    files = sorted(path.glob("*.safetensors"))
    if files:
        return files
    if any(path.glob("*.bin")) or any(path.glob("*.pt")) or any(path.glob("*.pth")):
        raise ValueError(
            f"no *.safetensors weights in {path} "
            "(pickle .bin checkpoints are refused for security; convert to safetensors)"
        )
    raise ValueError(f"not a checkpoint: no *.safetensors weights in {path}")


def _read_state_dict(files: list[Path], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    state = {}
    for file in files:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open is not a Mapping
                if name.endswith(_IGNORED_SUFFIXES):
                    continue
                key = name[len("model.") :] if name.startswith("model.") else name
                state[key] = f.get_tensor(name).to(dtype)
    return state


def load_checkpoint(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    max_positions: int | None = None,
) -> tuple[LlamaModel, Tokenizer | None]:
    """Load a local Hugging Face Llama-family checkpoint dir as (model in eval mode, tokenizer).

    The tokenizer is None when the directory has no tokenizer.json. ``max_positions`` caps the
    RoPE table (Llama 3's 131072 positions cost memory a benchmark never uses).
    """
    path = Path(resolve_model(path))
    d = read_config(path)
    files = _weight_files(path)
    cfg = config_from_dict(d, max_positions)
    _, scaling = _rope_spec(d)
    state = _read_state_dict(files, dtype)
    if cfg.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    with torch.device("meta"):
        model = LlamaModel(cfg)
    expected = set(model.state_dict())
    if cfg.tie_word_embeddings:
        expected.discard("lm_head.weight")
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unexpected:
        raise ValueError(
            f"weights in {path} do not match a Llama model of this config: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for name, tensor in state.items():
        shape = tuple(model.get_parameter(name).shape)
        if tuple(tensor.shape) != shape:
            got = tuple(tensor.shape)
            raise ValueError(f"weight {name} in {path} has shape {got}, not {shape}")
    model.load_state_dict(state, strict=False, assign=True)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    model.rotary = _build_rotary(cfg, scaling, device)
    model = model.to(device).eval()
    tokenizer = Tokenizer.from_dir(path) if (path / "tokenizer.json").is_file() else None
    return model, tokenizer


# ----------------------------------------------------------------------------- other models


def init_weights(model: LlamaModel, std: float = 0.02) -> None:
    """GPT-style init: N(0, std) weights, residual projections scaled by 1/sqrt(2 * layers)."""
    residual_std = std / math.sqrt(2 * model.config.num_hidden_layers)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                s = residual_std if name.endswith(("o_proj", "down_proj")) else std
                module.weight.normal_(0.0, s)


def random_model(
    config: str | Mapping,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    max_positions: int | None = DEFAULT_MAX_POSITIONS_CAP,
) -> tuple[LlamaModel, None]:
    """Build a randomly initialised model of a real shape (KNOWN_CONFIGS name or config dict).

    Returns ``(model, None)`` to match :func:`load_checkpoint`; there is no tokenizer.
    """
    if isinstance(config, str):
        if config not in KNOWN_CONFIGS:
            raise ValueError(f"unknown model shape {config!r}; known: {', '.join(KNOWN_CONFIGS)}")
        config = KNOWN_CONFIGS[config]
    d = {"model_type": "llama", **config}
    cfg = config_from_dict(d, max_positions)
    _, scaling = _rope_spec(d)
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaModel(cfg)
    init_weights(model)
    model.rotary = _build_rotary(cfg, scaling, device)
    return model.to(dtype).eval(), None


def resolve_model(name_or_path: str | Path) -> Path:
    """Path of an embedded model name ("tiny", "tiny-target", "tiny-draft") or of a directory."""
    name = str(name_or_path)
    name = ALIASES.get(name, name)
    if name in EMBEDDED:
        return EMBEDDED[name]
    return Path(name_or_path).expanduser()

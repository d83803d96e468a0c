"""CLIP score: how well generated images match their prompts, read by a real CLIP model through transformers.

Definition (Hessel et al. 2021, on torchmetrics' 0-100 scale):
    score(image, caption) = 100 * max(cos(E_image, E_caption), 0),   CLIP score = the mean over the set.
E_image and E_caption are CLIP's projected image and text embeddings. Hessel et al.'s CLIP-S uses w = 2.5 instead of
100 (CLIP-S = 0.025 * our score). torchmetrics' CLIPScore clamps the *mean* at 0 instead of each pair; for a real
CLIP and images of their own prompts the cosine is positive (~0.2-0.35), so the two agree. Per-pair clipping is
what lets shards be summed anywhere: the set's score is sum(scores) / n.

Default model: openai/clip-vit-large-patch14 (ViT-L/14, 224 px, 427,616,513 parameters), the default of
torchmetrics' CLIPScore and the most common model in text-to-image papers that report through it (ViT-B/32 and B/16
also appear; scores of different CLIP models are not comparable). Any CLIPModel checkpoint with safetensors weights
can be named instead (a local directory or a hub id); the protocol records it.

Images, uint8 (N, H, W, C) with C = 1 or 3; grey is repeated to RGB. CLIP's own preprocessing, written with
torchvision's functional ops on the CPU (where a shard's images are) so it is the same on every machine and equal to
transformers' CLIPImageProcessor (torchvision backend, the v5 default) on the CPU: resize the shortest side to the
model's image size (224) bicubic with antialias, on the uint8 image (rounded back to uint8, as the processor does),
centre crop to 224 x 224, then (x / 255 - mean) / std with CLIP's mean and std. `fit="pad"` instead pads the short
side with black to a square first, so a wide image (the embedded 28 x 56 digit pairs) is not cut to its middle.

Text: the model's own tokenizer (from the same directory or hub id as the weights), truncated at CLIP's 77-token
context (start and end tokens included; the end token is kept, and CLIP reads the caption's embedding there) and
padded to 77. Every sample is encoded on its own row (causal text attention, no cross-sample operation), so its
score does not depend on the other samples or the batch size, up to the rounding of float32 matrix products of
another shape (~1e-7 in the cosine, as for every feature extractor).

Loading never runs downloaded code: from_pretrained(use_safetensors=True), no trust_remote_code, and a hub
download fetches only the config, the safetensors weights, the tokenizer and preprocessor files.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from djepa.digest import files_sha256
from djepa.eval.features import FeatureError

DEFAULT_MODEL = "openai/clip-vit-large-patch14"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's, used by every openai/* and laion/* checkpoint
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HESSEL_W = 2.5
HUB_FILES = ["config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
             "vocab.json", "merges.txt", "special_tokens_map.json", "preprocessor_config.json"]
FITS = ("crop", "pad")


def _fix(source: str) -> str:
    return (f"set the CLIP model to a local directory holding config.json, *.safetensors and the tokenizer files "
            f"(e.g. `hf download {DEFAULT_MODEL} --local-dir DIR` on a machine with the internet), or to a hub id "
            f"on one; got {source!r}")


def _local(source: str | Path) -> Path | None:
    path = Path(source).expanduser()
    return path if path.is_dir() else None


def _weights(path: Path) -> list[Path]:
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FeatureError(f"no *.safetensors weights in {path} (a pytorch_model.bin pickle is not read); "
                           f"{_fix(str(path))}")
    return files


def clip_identity(source: str | Path = DEFAULT_MODEL) -> str:
    """What the scores depend on, without building the network: a directory -> the sha256 of its safetensors
    weights; a hub id -> the id (its files are fetched only by the scorer)."""
    path = _local(source)
    if path is None:
        if Path(source).expanduser().exists() or str(source).count("/") != 1:
            raise FeatureError(f"{source} is neither a directory nor a hub id (owner/name); {_fix(str(source))}")
        return f"clip-{source}"
    digest = hashlib.sha256("".join(files_sha256(_weights(path))).encode()).hexdigest()
    return f"clip-{path.name}-{digest[:16]}"


def resolve(source: str | Path) -> Path:
    """-> a local directory: `source` itself, or the hub snapshot of only the files CLIP needs."""
    path = _local(source)
    if path is not None:
        return path
    clip_identity(source)  # a bad name is refused before anything is fetched
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(source), allow_patterns=HUB_FILES))
    except Exception as err:  # no internet, an unknown or gated repository
        raise FeatureError(f"cannot fetch the CLIP model {source!r} ({type(err).__name__}: {err}); "
                           f"{_fix(str(source))}") from None


def load_clip(source: str | Path = DEFAULT_MODEL):
    """-> (CLIPModel in eval mode, float32 on the CPU; its tokenizer; the directory read). Refuses a checkpoint whose
    tensors do not fill the CLIP layout of its own config.json (a missing tensor would be left random)."""
    from transformers import AutoTokenizer, CLIPModel

    path = resolve(source)
    _weights(path)
    try:
        model, info = CLIPModel.from_pretrained(path, use_safetensors=True, output_loading_info=True)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, KeyError) as err:
        raise FeatureError(f"cannot load a CLIP model from {path} ({type(err).__name__}: {err}); "
                           f"{_fix(str(source))}") from None
    if info.get("missing_keys") or info.get("mismatched_keys"):
        raise FeatureError(f"{path} is not a complete CLIP checkpoint for its config.json: missing "
                           f"{sorted(info.get('missing_keys', []))[:5]}, mismatched "
                           f"{[k[0] if isinstance(k, tuple) else k for k in info.get('mismatched_keys', [])][:5]}")
    return model.float().eval().requires_grad_(False), tokenizer, path


def preprocess(images_u8: np.ndarray | torch.Tensor, size: int = 224, fit: str = "crop") -> torch.Tensor:
    """uint8 (B, H, W, C), C = 1 or 3 -> float32 (B, 3, size, size) on the CPU, CLIP's preprocessing (module doc)."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as tvF

    x = torch.as_tensor(images_u8).cpu()
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"CLIP score needs uint8 (N, H, W, C) images with 1 or 3 channels, got {x.dtype} "
                         f"{tuple(x.shape)}")
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    x = x.permute(0, 3, 1, 2).expand(-1, 3, -1, -1).contiguous()  # (B, 3, H, W); grey repeated to RGB
    h, w = x.shape[-2:]
    if fit == "pad" and h != w:  # black bars on the short side, split evenly (the extra pixel after)
        d = abs(h - w)
        x = F.pad(x, (d // 2, d - d // 2, 0, 0) if h > w else (0, 0, d // 2, d - d // 2))
        h, w = x.shape[-2:]
    short, long = min(h, w), max(h, w)
    new_long = int(size * long / short)  # transformers' rounding of the long side (down)
    x = tvF.resize(x, [size, new_long] if h <= w else [new_long, size], interpolation=InterpolationMode.BICUBIC,
                   antialias=True)  # (B, 3, size, new_long) uint8
    top, left = int((x.shape[-2] - size) / 2.0), int((x.shape[-1] - size) / 2.0)
    x = x[..., top:top + size, left:left + size].float()  # (B, 3, size, size)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1) * 255
    return (x - mean) / std


class ClipScorer:
    """scorer(images_u8, captions) -> per-sample CLIP scores, float64 (N,); identity and protocol as for features."""

    name = "clip"

    def __init__(self, source: str | Path = DEFAULT_MODEL, device: torch.device | str = "cpu", batch_size: int = 64,
                 fit: str = "crop"):
        if fit not in FITS:
            raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
        self.identity = clip_identity(source)
        model, self.tokenizer, path = load_clip(source)
        self.device, self.batch_size, self.fit = torch.device(device), batch_size, fit
        self.model = model.to(self.device)
        self.size = int(model.config.vision_config.image_size)
        self.context = int(model.config.text_config.max_position_embeddings)  # 77 for every OpenAI CLIP
        self.protocol = {
            "metric": "clip_score = mean of 100 * max(cos(image, text), 0); Hessel's CLIP-S = 0.025 * clip_score",
            "model": str(source), "identity": self.identity,
            "revision": path.name if path.parent.name == "snapshots" else None,  # the hub commit read
            "image": f"uint8 RGB (grey repeated); {'pad to square with black, then ' if fit == 'pad' else ''}"
                     f"shortest side to {self.size} bicubic antialias (torchvision, uint8, CPU); centre crop "
                     f"{self.size} x {self.size}; /255; CLIP mean/std",
            "fit": fit, "image_size": self.size, "mean": list(CLIP_MEAN), "std": list(CLIP_STD),
            "text": f"the model's tokenizer, truncated at {self.context} tokens (end token kept), padded to "
                    f"{self.context}",
            "context": self.context, "dtype": "float32 network, float64 cosine",
        }

    @torch.inference_mode()
    def image_embeddings(self, images_u8: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, C) -> unit-norm (N, D) float64 on the device."""
        out = []
        for i in range(0, len(images_u8), self.batch_size):
            x = preprocess(images_u8[i:i + self.batch_size], self.size, self.fit).to(self.device)  # (B, 3, S, S)
            pooled = self.model.vision_model(pixel_values=x).pooler_output  # (B, D_vision), the class token
            out.append(self.model.visual_projection(pooled))  # (B, D)
        return F.normalize(torch.cat(out).double(), dim=-1)

    @torch.inference_mode()
    def text_embeddings(self, captions: list[str]) -> torch.Tensor:
        """N captions -> unit-norm (N, D) float64 on the device."""
        out = []
        for i in range(0, len(captions), self.batch_size):
            tok = self.tokenizer(list(captions[i:i + self.batch_size]), padding="max_length", truncation=True,
                                 max_length=self.context, return_tensors="pt")
            pooled = self.model.text_model(input_ids=tok["input_ids"].to(self.device),
                                           attention_mask=tok["attention_mask"].to(self.device)).pooler_output
            out.append(self.model.text_projection(pooled))  # (B, D), read at the end token
        return F.normalize(torch.cat(out).double(), dim=-1)

    def cosines(self, images_u8: np.ndarray, captions: list[str]) -> np.ndarray:
        """Per-sample cos(E_image, E_caption), float64 (N,), unclipped."""
        if isinstance(captions, str) or len(captions) != len(images_u8):
            raise ValueError(f"CLIP score needs one caption per image: {len(images_u8)} images, "
                             f"{1 if isinstance(captions, str) else len(captions)} captions")
        if not all(isinstance(c, str) for c in captions):
            raise ValueError("captions must be strings")
        if len(captions) == 0:
            return np.zeros(0)
        cos = (self.image_embeddings(images_u8) * self.text_embeddings(captions)).sum(-1)  # (N,)
        return cos.cpu().numpy()

    def __call__(self, images_u8: np.ndarray, captions: list[str]) -> np.ndarray:
        """-> per-sample 100 * max(cos, 0), float64 (N,): a shard's scores, summed anywhere."""
        return 100 * np.maximum(self.cosines(images_u8, captions), 0.0)


def shard_clip_scores(scorer: ClipScorer, images_u8: np.ndarray, captions: list[str]) -> dict[str, np.ndarray]:
    """One shard -> arrays to store beside its features: the per-sample scores and their float64 sum."""
    scores = scorer(images_u8, captions)
    return {f"{scorer.name}.scores": scores, f"{scorer.name}.total": np.asarray(scores.sum(), np.float64)}  # 0-d


def clip_score(totals, counts) -> dict[str, float]:
    """Per-shard sums and sample counts -> {'clip_score': mean, 'clip_score_hessel': Hessel's w = 2.5 scale}."""
    n = int(np.sum(counts))
    if n < 1:
        raise ValueError("no CLIP scores to average")
    mean = float(np.sum(np.asarray(totals, np.float64)) / n)
    return {"clip_score": mean, "clip_score_hessel": mean * HESSEL_W / 100}


# --- random weights in a published layout: tests and speed benchmarks, which must not download ---------------

def vit_l14_config():
    """openai/clip-vit-large-patch14's layout (its config.json's shapes): ViT-L/14 at 224 px, 12-layer text."""
    from transformers import CLIPConfig

    text = {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
            "max_position_embeddings": 77, "vocab_size": 49408, "projection_dim": 768}
    vision = {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16, "num_hidden_layers": 24,
              "image_size": 224, "patch_size": 14, "projection_dim": 768}
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=768)


def byte_level_tokenizer(words: list[str], vocab_size: int = 49408):
    """A CLIP tokenizer with CLIP's byte-level BPE rules but a tiny vocabulary (the 256 bytes, with and without the
    end-of-word mark, one merge chain per word in `words`), start/end tokens at CLIP's ids vocab_size - 2 / - 1."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)} | {c + "</w>": 256 + i for i, c in enumerate(alphabet)}
    merges = []
    for word in words:  # merge left to right: "left" -> l e, le f, lef t</w>
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append((pieces[0], pieces[1]))
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
            vocab.setdefault(pieces[0], len(vocab))
    if len(vocab) > vocab_size - 2:
        raise ValueError(f"{len(vocab)} tokens do not fit a vocabulary of {vocab_size}")
    vocab |= {"<|startoftext|>": vocab_size - 2, "<|endoftext|>": vocab_size - 1}
    return CLIPTokenizer(vocab=vocab, merges=list(dict.fromkeys(merges)))


def random_clip_dir(path: str | Path, config=None, words: tuple[str, ...] = (), seed: int = 0) -> Path:
    """Write a CLIP model directory (config.json, model.safetensors, tokenizer, preprocessor_config.json) with random
    weights in `config`'s layout (default: ViT-L/14's), as a hub snapshot holds them; LayerNorms 1, biases 0."""
    from safetensors.torch import save_file
    from transformers import CLIPImageProcessor, CLIPModel

    config = config or vit_l14_config()
    vocab_size = config.text_config.vocab_size  # CLIP reads a caption at its end token: the tokenizer's id
    config.text_config.bos_token_id, config.text_config.eos_token_id = vocab_size - 2, vocab_size - 1
    with torch.device("meta"):  # shapes only: a full init of 428M parameters is slow on a CPU
        names = {k: v.shape for k, v in CLIPModel(config).state_dict().items()}
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for k, shape in names.items():
        if k.endswith("logit_scale"):
            state[k] = torch.tensor(config.logit_scale_init_value)
        elif "norm" in k and k.endswith("weight"):
            state[k] = torch.ones(shape)
        elif k.endswith("bias"):
            state[k] = torch.zeros(shape)
        else:
            state[k] = torch.randn(shape, generator=gen) * 0.02
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(path)
    save_file(state, path / "model.safetensors", metadata={"format": "pt"})
    byte_level_tokenizer(list(words), vocab_size).save_pretrained(path)
    s = config.vision_config.image_size
    CLIPImageProcessor(size={"shortest_edge": s}, crop_size={"height": s, "width": s}).save_pretrained(path)
    (path / "random_weights.json").write_text(json.dumps({"seed": seed, "note": "random weights, not CLIP"}))
    return path

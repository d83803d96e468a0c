"""One typed config tree for every job: model, tokenizer, data, train, sample, eval, tracking.

Configs load from YAML, take `--set a.b=c` overrides, and are validated before any
compute: an unknown key, a wrong type or an out-of-range value raises ConfigError
naming the full key path (and the closest valid key for a typo). The sections' classes are here or in
djepa/{tokenizer,text}_config.py, the loading functions in djepa/config_load.py; all are imported from here.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from djepa.config_base import ConfigError, _Strict  # noqa: F401  (ConfigError: djepa.config's name for it)
from djepa.text_config import TextConfig  # noqa: F401  (part of the one tree)
from djepa.tokenizer_config import TokenizerConfig, VAEConfig  # noqa: F401  (part of the one tree)


# ----------------------------------------------------------------------------- model
class DiffusionConfig(_Strict):
    # Paper app. B: ADM's linear 1e-4..2e-2 (the default). MAR's code uses cosine, whose last step
    # (alpha_bar ~ 2e-9) amplifies eps errors ~350x on a respaced chain: it needs a well-trained denoiser.
    schedule: Literal["linear", "cosine"] = "linear"
    train_steps: int = Field(1000, ge=2)
    sample_steps: int = Field(100, ge=1)


class FlowConfig(_Strict):
    sample_steps: int = Field(50, ge=1)
    solver: Literal["euler", "heun"] = "euler"


class TokenLossConfig(_Strict):
    kind: Literal["diffusion", "flow"] = "diffusion"
    depth: int = Field(6, ge=1)  # residual MLP blocks
    width: int = Field(1024, ge=1)
    batch_mul: int = Field(4, ge=1)  # timestep draws per token (paper: 4)
    diffusion: DiffusionConfig = DiffusionConfig()
    flow: FlowConfig = FlowConfig()


class ModelConfig(_Strict):
    num_classes: int = Field(1000, ge=1)
    encoder_depth: int = Field(12, ge=1)
    predictor_depth: int = Field(12, ge=1)
    width: int = Field(768, ge=8)
    num_heads: int = Field(12, ge=1)
    mlp_ratio: float = Field(4.0, gt=0)
    # Per-head norm of q and k: "rms" is the D-JEPA authors' (models/block.py: RMS norm with a weight, no bias,
    # eps 1e-6, computed in float32); "layer" is timm's LayerNorm (what `true` meant before); "none" is MAR's.
    qk_norm: Literal["none", "rms", "layer"] = "none"
    attn_dropout: float = Field(0.1, ge=0, lt=1)
    proj_dropout: float = Field(0.1, ge=0, lt=1)
    buffer_size: int = Field(64, ge=1)  # class-embedding buffer tokens
    label_drop: float = Field(0.1, ge=0, le=1)
    mask_ratio_min: float = Field(0.7, gt=0, le=1)
    mask_ratio_std: float = Field(0.25, gt=0)
    # lambda_p in L = L_d + lambda_p * L_p; 0 removes the projector (the MAR baseline).
    pred_loss_weight: float = Field(1.0, ge=0)
    # The authors build their (unreleased) JEPA loss head as JepaLoss(..., beta=2.0): the smooth-L1 beta.
    smooth_l1_beta: float = Field(2.0, gt=0)
    ema_decay: float = Field(0.9999, ge=0, le=1)
    # decay_t = min(ema_decay, (1 + t) / (10 + t)) at EMA update t (djepa/models/ema.py): right at any step,
    # exactly ema_decay from update ~9 / (1 - ema_decay) on; false: the constant from step 0
    ema_warmup: bool = True
    token_loss: TokenLossConfig = TokenLossConfig()
    # What a sample is conditioned on: a class label (a learned embedding in the buffer tokens), or a text whose
    # embeddings (text: section) join the encoder and predictor through multimodal attention (paper app. G.1, G.2)
    condition: Literal["class", "text"] = "class"
    text_dim: int = Field(0, ge=0)  # the text encoder's output width (condition text): words' or the hf hidden size
    # Grid positions: a learned table per token (MAR, the ImageNet presets) or axial rotary embeddings (app. G: 2-D
    # RoPE for text-to-image, 1-D for speech), which need no table and take any grid length
    positions: Literal["learned", "rope"] = "learned"
    rope_theta: float = Field(10000.0, gt=0)

    @field_validator("qk_norm", mode="before")
    @classmethod
    def _qk_norm_bool(cls, v):
        # configs written before the choice existed said true / false; true was timm's LayerNorm
        return {True: "layer", False: "none"}.get(v, v) if isinstance(v, bool) else v

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.width % self.num_heads:
            raise ValueError(f"width {self.width} is not divisible by num_heads {self.num_heads}")
        if self.condition == "text" and not self.text_dim:
            raise ValueError("condition text needs text_dim, the text encoder's output width")
        return self

    def identity(self) -> dict:
        """The dump that names a model in hashes: keys added with text conditioning and RoPE appear only when set
        away from their defaults, so every earlier class-conditional model keeps its evaluation hashes."""
        out = self.model_dump(mode="json")
        for key, default in (("condition", "class"), ("text_dim", 0), ("positions", "learned"), ("rope_theta", 1e4)):
            if out[key] == default:
                out.pop(key)
        return out


# ----------------------------------------------------------------------------- data / train / sample
CAPTION_SOURCES = ("caption_folder", "webdataset")  # captioned images read from files (djepa/data/captioned.py)


class DataConfig(_Strict):
    # Where images come from: the bundled digits / MNIST-5k, or an ImageNet-style root/<class>/<image> tree.
    # Video: the bundled moving_mnist clips, or video_folder: root/<class>/<video> (UCF101's layout).
    # Text: the bundled mnist_pairs / digits_pairs (two digits, "3 left of 8"), or captioned images: caption_folder
    # (root: images with their captions, djepa/text/captions.py) or webdataset (shards: tars, djepa/text/shards.py).
    source: Literal["digits", "mnist5k", "folder", "moving_mnist", "video_folder", "mnist_pairs", "digits_pairs",
                    "caption_folder", "webdataset"] = "digits"
    root: str | None = None  # the tree, for source=folder, video_folder or caption_folder
    # caption_folder: where the captions are: a .txt beside each image (sidecar), a CSV, or Hugging Face imagefolder's
    # metadata.jsonl; auto takes the one the root holds. captions: that CSV / JSONL (relative to root, or absolute)
    caption_layout: Literal["auto", "sidecar", "csv", "jsonl"] = "auto"
    captions: str | None = None
    # webdataset: the tar shards: a brace pattern (/data/cc12m/{00000..01242}.tar), a directory, .tar files, or a list
    shards: str | list[str] | None = None
    # video_folder: an official split list (UCF101's trainlist01.txt / testlist01.txt: "<class>/<file> [label]"
    # lines, relative to root); None reads every video under root
    split_file: str | None = None
    fps: float = Field(8.0, gt=0)  # video_folder: frames are resampled to this rate (the paper: UCF101 at 8 fps)
    # The encoded dataset (Parquet shards + manifest.json) that Ray training streams from.
    # None: outputs/encoded/<source>-<hash of source and tokenizer>.
    encoded_dir: str | None = None
    hflip: bool = False  # digits are not mirror-symmetric; ImageNet uses flips
    # an unreadable image or video (no frames, truncated, a codec PyAV cannot decode): count and skip it, or stop
    on_bad_image: Literal["skip", "fail"] = "fail"
    encode_batch_size: int = Field(64, ge=1)
    encode_workers: int = Field(1, ge=1)  # tokenizer actors (one GPU each on a cluster)
    encode_gpus: float = Field(0.0, ge=0)  # GPUs per tokenizer actor
    rows_per_file: int = Field(4096, ge=1)  # Parquet shard size
    shuffle_buffer: int = Field(4096, ge=0)  # rows per worker mixed on top of the per-epoch file shuffle
    # A small dataset is streamed several epochs per pass, so the ~2 s pipeline start is paid rarely.
    min_rows_per_pass: int = Field(100_000, ge=1)


class TrainConfig(_Strict):
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N (local training only; Ray places its workers)
    batch_size: int = Field(64, ge=1)  # global batch
    steps: int = Field(1000, ge=1)
    max_minutes: float | None = Field(None, gt=0)  # wall-clock budget; stops early if reached
    blr: float = Field(1e-4, gt=0)  # lr = blr * batch_size / 256
    warmup_steps: int = Field(0, ge=0)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    min_lr: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    adam_eps: float = Field(1e-8, gt=0)  # torch's default; the D-JEPA authors train with 1e-6
    # Which parameters get weight decay. djepa (paper app. B): the Linear weights of encoder and predictor
    # only. mar (MAR's misc.add_weight_decay): every parameter of 2+ dims outside the denoiser, so also
    # the class, position, mask and null-class embeddings.
    no_decay: Literal["djepa", "mar"] = "djepa"
    weight_decay_start: float = Field(0.02, ge=0)
    weight_decay_end: float = Field(0.2, ge=0)
    grad_clip: float = Field(3.0, ge=0)  # 0 disables clipping
    # torch.compile each transformer block and denoiser block (not the whole model: the mask draw and the
    # EMA update stay eager); the first steps pay the compile. true, false, or auto (on for CUDA only).
    # Off by default: on CPU it does not pay (0.95-0.99x, benchmarks/RESULTS.md) and its GPU gain is not measured
    # yet (benchmarks/run_gpu.sh compileB compileL); the default becomes auto once a GPU shows a win.
    compile: bool | Literal["auto"] = False
    # Recompute each encoder / predictor / denoiser block's activations in the backward pass instead of keeping
    # them (torch.utils.checkpoint, per block, as the D-JEPA authors train): ~1/3 more compute, far less memory,
    # so B and L fit batch 128-256 per GPU. The same losses and gradients as without (tests/test_grad_checkpointing.py).
    grad_checkpointing: bool = False
    log_every: int = Field(50, ge=1)
    out_dir: str = "outputs/run"  # the run directory: checkpoints, previews, run.json
    # Ray Train
    workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)  # fractions leave CPUs for Ray Data on small machines
    # torch threads of each CPU training worker; None: what Ray gives (its CPUs, at least 1). A one-worker laptop run
    # may use every core while Ray still keeps a CPU free for its data tasks (they read little once streaming)
    threads: int | None = Field(None, ge=1)
    parallel: Literal["ddp", "fsdp"] = "ddp"  # fsdp shards parameters and optimizer state (the H preset)
    checkpoint_every: int = Field(1000, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    preview_every: int = Field(0, ge=0)  # EMA sample grid to MLflow every N steps (0: only at the end)
    # Online evaluation (djepa/eval/online.py): every N steps and at the end, eval_samples samples of the EMA with
    # the same per-sample seeds, scored with eval.features against eval.reference; a curve in MLflow (online/...)
    # and online.jsonl. Those steps are also checkpointed, so every point belongs to saved weights.
    eval_every: int | None = Field(None, ge=1)
    eval_samples: int = Field(1000, ge=2)
    max_failures: int = Field(2, ge=0)  # worker-group restarts from the last checkpoint

    @property
    def lr(self) -> float:
        return self.blr * self.batch_size / 256


class SampleConfig(_Strict):
    seed: int = 0
    ar_steps: int = Field(64, ge=1)
    cfg: float = Field(1.0, ge=0)
    # linear: 1 + (cfg - 1) * known / N after the step, reaching cfg at the last step (Muse). mar_linear: MAR's
    # sample_tokens, which uses the next step's clamped masked count, so its last step is 1 + (cfg - 1)(N - 1)/N.
    cfg_schedule: Literal["linear", "mar_linear", "constant"] = "linear"
    temperature: float = Field(1.0, gt=0)
    batch_size: int = Field(64, ge=1)
    num_per_class: int = Field(10, ge=1)  # for the preview grid
    # autocast dtype of the transformer and the denoiser (the diffusion arithmetic stays fp32);
    # auto: bf16 on CUDA, fp32 elsewhere. bf16 samples differ from fp32 ones at bf16 rounding level
    # (~0.1% RMS). fp32 samples never depend on the batch; bf16 ones did not in the tests (CPU and an
    # H100), but that is not guaranteed: a bf16 GEMM may pick another kernel for another row count.
    dtype: Literal["auto", "fp32", "bf16"] = "auto"
    # replay the per-token denoising loop as CUDA graphs (CUDA only, ignored elsewhere): bit-identical
    # to eager, 1.8-2.3x faster sampling for D-JEPA-B on an H100 (benchmarks/RESULTS.md)
    cuda_graphs: bool = True


class EvalConfig(_Strict):
    num_samples: int = Field(50000, ge=1)  # FID-50K
    cfg_values: list[float] = [1.0, 3.0]  # the demo's class-consistency check
    workers: int = Field(1, ge=1)  # generation actors: one GPU each with use_gpu
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    shard_size: int = Field(1000, ge=1)  # samples per shard file: the unit of restart
    # images: inception, dinov2, domain (the embedded digits); clips: i3d (FVD), domain (Moving MNIST)
    # text models also: clip (CLIP score against each sample's prompt; djepa/text/clip_score.py)
    features: list[Literal["inception", "domain", "dinov2", "i3d", "clip"]] = ["inception"]
    reference: str | None = None  # ADM-format reference .npz: mu, sigma (Inception), arr_0 images for P/R
    inception_weights: str | None = None  # local FID Inception weights; else $DJEPA_INCEPTION_WEIGHTS, else download
    dinov2_weights: str | None = None  # local dinov2_vitl14_pretrain.pth (FD-DINOv2); else torch.hub's download
    # CLIP score (eval.features clip): a transformers CLIP directory or hub id; "crop" is CLIP's own preprocessing,
    # "pad" pads wide images to a square first (the 28 x 56 pairs would lose half of each digit to the crop)
    clip_model: str = "openai/clip-vit-large-patch14"
    clip_fit: Literal["crop", "pad"] = "crop"
    # text models: the captions to sample (one a line, or a CSV / JSONL with a caption column), cycled; default for
    # the embedded captioned sources: their held-out captions
    prompts: str | None = None
    # FVD's I3D (Kinetics-400) as a state dict file (djepa/video/fvd.py names the release): never downloaded here
    i3d_weights: str | None = None
    feature_batch_size: int = Field(200, ge=1)
    reference_images: int = Field(10000, ge=1)  # real images kept for precision/recall (ADM: 10k)
    is_splits: int = Field(10, ge=1)
    pr_k: int = Field(3, ge=1)
    pngs: bool = False  # also write every sample as a PNG
    save_npz: bool = True  # ADM's samples.npz (a sweep's trials keep only their metrics and grid)
    out_dir: str | None = None  # default: <checkpoint>/../eval/<checkpoint>-<sampling hash>
    cache_dir: str | None = None  # domain classifiers; default $DJEPA_CACHE or ~/.cache/djepa


class TrackingConfig(_Strict):
    experiment: str = "djepa"
    tracking_uri: str | None = None  # None: MLFLOW_TRACKING_URI or a local SQLite store
    run_name: str | None = None


class Config(_Strict):
    name: str = "djepa"
    model: ModelConfig = ModelConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    text: TextConfig = TextConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    sample: SampleConfig = SampleConfig()
    eval: EvalConfig = EvalConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _cross_checks(self):
        if self.sample.ar_steps > self.tokenizer.num_tokens:
            raise ValueError(
                f"sample.ar_steps={self.sample.ar_steps} exceeds the number of tokens "
                f"{self.tokenizer.num_tokens}; use 1..{self.tokenizer.num_tokens}"
            )
        if self.train.eval_every and not self.eval.features:
            raise ValueError("train.eval_every needs eval.features (what to score the samples with), e.g. [domain]")
        if self.train.eval_every and set(self.eval.features) - {"dinov2"} and \
                self.train.eval_samples < self.eval.is_splits:
            raise ValueError(f"train.eval_samples={self.train.eval_samples} is fewer than eval.is_splits="
                             f"{self.eval.is_splits} (the IS splits); raise it or lower eval.is_splits")
        source, frames = self.data.source, self.tokenizer.frames
        if source in CAPTION_SOURCES and frames:  # the cause, named before the eval.features check below
            raise ValueError(f"data.source={source} reads images, but tokenizer.frames={frames}; set "
                             f"tokenizer.frames=0")
        kind = "clips" if self.tokenizer.is_video else "images"
        wrong = set(self.eval.features) - ({"i3d", "domain"} if self.tokenizer.is_video else
                                           {"inception", "dinov2", "domain", "clip"})
        if wrong:
            raise ValueError(f"eval.features {sorted(wrong)} cannot measure {kind} (tokenizer.frames="
                             f"{self.tokenizer.frames}); use " + ("[i3d] (FVD) or [domain]" if self.tokenizer.is_video
                                                                  else "[inception], [dinov2] or [domain]"))
        self._text_checks()
        if self.model.positions == "rope":
            hd, rank = self.model.width // self.model.num_heads, len(self.tokenizer.grid_shape)
            if hd % 2 or hd < 2 * rank:
                raise ValueError(f"model.positions=rope rotates pairs of each head's {hd} dims (model.width / "
                                 f"model.num_heads), at least one pair per grid axis ({rank}): choose an even head "
                                 f"width of {2 * rank} or more")
        if self.train.batch_size % self.train.workers:
            raise ValueError(f"train.batch_size={self.train.batch_size} is not divisible by "
                             f"train.workers={self.train.workers}")
        return self

    def _text_checks(self) -> None:
        m, t, d = self.model, self.text, self.data
        captioned = d.source in ("mnist_pairs", "digits_pairs")  # djepa.data.sources.TEXT_SOURCES (imports this)
        if (captioned or d.source in CAPTION_SOURCES) and m.condition != "text":
            raise ValueError(f"data.source={d.source} is captioned data; set model.condition=text (and a text: section)")
        if captioned and d.hflip:
            raise ValueError(f"data.hflip would swap the digits of data.source={d.source} but not the words of their "
                             f"captions ('3 left of 8'); set data.hflip=false")
        if m.condition == "text" and t.encoder == "words" and m.text_dim != t.words_dim:
            raise ValueError(f"model.text_dim={m.text_dim}, but the words encoder gives {t.words_dim}-d embeddings "
                             f"({len(t.vocab)} words in text.vocab + text.position_dims={t.position_dims}); set "
                             f"model.text_dim={t.words_dim}")
        if "clip" in self.eval.features and m.condition != "text":
            raise ValueError("eval.features clip scores samples against their prompts: it needs model.condition=text")
        if "domain" in self.eval.features and m.condition == "text" and not captioned:
            raise ValueError(f"eval.features domain has no classifier for captions of data.source={d.source}; use "
                             f"[inception, clip] for text-to-image models")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def hash(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]


# the loading functions live in djepa/config_load.py; every `from djepa.config import load_config` keeps working
from djepa.config_load import (  # noqa: E402,F401
    apply_overrides, deep_merge, format_errors, load_config, parse_override, read_yaml, save_config, validate)

"""Feature extractors behind one interface: uint8 images (N, H, W, C) -> features and logits.

- "inception": torch-fidelity's port of the TF FID Inception-v3 (pool3 2048-d features and
  the 1008 unbiased logits), the network of ADM's suite and of every published FID-50K.
- "domain": the classifier of the real embedded digits (djepa/eval/classifier.py): 128-d
  features, 10 logits. FD and IS on it mean something for 8x8 or 28x28 digits; Inception does not.
  For moving_mnist it is a 3-D conv net of the real clips (djepa/video/classifier.py), read from uint8
  clips (N, T, H, W, C): 128-d features that see the digit and its motion, 10 logits.
- "dinov2": DINOv2 ViT-L/14's class token (1024-d, no logits), FD-DINOv2 as EDM2 computes it
  (djepa/eval/dinov2.py): Inception under-rates diffusion models (Stein et al. 2023).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from djepa.config import Config
from djepa.data.sources import TEXT_SOURCES  # their domain features: both halves, djepa/text/pair_metrics.py
from djepa.eval.shards import file_digest

INCEPTION_ENV = "DJEPA_INCEPTION_WEIGHTS"


class FeatureError(RuntimeError):
    """A feature extractor that cannot be built; the message names the setting to fix."""


class Extractor:
    """name, dims, identity (what its features depend on) and __call__(images_u8) -> (features, logits)."""

    name: str
    dims: int
    identity: str
    batch_size: int = 200
    frames_used: int | None = None  # clips: only the first frames_used frames are copied to the network (FVD: 16)

    def __init__(self, device: torch.device | str = "cpu", batch_size: int = 200):
        self.device, self.batch_size = torch.device(device), batch_size

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, images_u8: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (N, H, W, C), or clips (N, T, H, W, C) for an extractor that reads them (the domain
        classifier of moving_mnist) -> features (N, dims) and logits (N, K), float32 on the extractor's device."""
        if images_u8.dtype != np.uint8 or images_u8.ndim not in (4, 5):
            raise ValueError(f"{self.name} features need uint8 (N, H, W, C) images or (N, T, H, W, C) clips, got "
                             f"{images_u8.dtype} {images_u8.shape}")
        feats, logits = [], []
        frames = (slice(None), slice(self.frames_used)) if images_u8.ndim == 5 else (slice(None),)
        for i in range(0, len(images_u8), self.batch_size):
            f, lg = self.forward(torch.from_numpy(np.array(images_u8[i:i + self.batch_size][frames]))  # a copy
                                 .to(self.device))
            feats.append(f.float())
            logits.append(lg.float())
        return torch.cat(feats), torch.cat(logits)


class DomainExtractor(Extractor):
    name, dims = "domain", 128

    def __init__(self, source: str, cache: str | None = None, device="cpu", batch_size: int = 200):
        from djepa.eval.classifier import domain_classifier

        super().__init__(device, batch_size)
        net, info = domain_classifier(source, cache)
        self.net, self.info = net.to(self.device), info
        self.identity = f"domain-{source}-{info['hash']}"

    def forward(self, x):
        from djepa.eval.classifier import DomainClassifier, to_input

        if not isinstance(self.net, DomainClassifier):  # the clip classifier checks (T, H, W, C) itself
            from djepa.video.classifier import clip_input

            return self.net(clip_input(self.net, x))
        if x[0].numel() != self.net.body[0].in_features:
            raise ValueError(f"the domain classifier reads {self.net.body[0].in_features} pixels per image, got "
                             f"images of shape {tuple(x.shape[1:])}; it exists only for the embedded datasets")
        return self.net(to_input(x))


class InceptionExtractor(Extractor):
    name, dims = "inception", 2048

    def __init__(self, weights: str | None = None, device="cpu", batch_size: int = 200):
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        super().__init__(device, batch_size)
        path, self.identity = inception_identity(weights)
        try:
            net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                              feature_extractor_weights_path=str(path) if path else None)
        except (OSError, RuntimeError) as err:  # no internet (URLError is an OSError) or a wrong state dict
            raise FeatureError(f"cannot load the FID Inception weights ({type(err).__name__}: {err}); "
                               f"{_inception_fix()}")
        self.net = net.to(self.device)

    def forward(self, x):
        x = x.permute(0, 3, 1, 2)  # (B, C, H, W) uint8; torch-fidelity resizes to 299 like TF did
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.net(x)


class DinoV2Extractor(Extractor):
    name, dims = "dinov2", 1024

    def __init__(self, weights: str | None = None, device="cpu", batch_size: int = 200):
        from djepa.eval import dinov2

        super().__init__(device, batch_size)
        path, self.identity = dinov2_identity(weights)
        try:
            net, _ = dinov2.load_network(path)
        except (OSError, RuntimeError, ValueError) as err:  # no internet, a truncated file, another network
            raise FeatureError(f"cannot load the DINOv2 ViT-L/14 weights ({type(err).__name__}: {err}); "
                               f"{_dinov2_fix()}") from None
        self.net = net.to(self.device)

    def forward(self, x):
        from djepa.eval.dinov2 import features

        f = features(self.net, x)
        return f, f.new_zeros(len(f), 0)  # no classifier: no IS or class consistency in DINOv2 space


def _dinov2_fix() -> str:
    from djepa.eval.dinov2 import URL

    return f"download {URL} and set eval.dinov2_weights=PATH"


def dinov2_identity(weights: str | None) -> tuple[Path | None, str]:
    """-> (weights file or None for the release download, identity), checked without building the network."""
    from djepa.eval.dinov2 import URL

    if not weights:
        return None, "dinov2-vitl14-" + Path(URL).name
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FeatureError(f"DINOv2 weights not found at {path} (eval.dinov2_weights); {_dinov2_fix()}")
    try:  # mmap: the 1.2 GB are not read, but a pickle holding more than tensors is refused
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:
        raise FeatureError(f"{path} is not a plain state dict of tensors ({type(err).__name__}); {_dinov2_fix()}")
    return path, f"dinov2-vitl14-{file_digest(path)[:16]}"


def _inception_fix() -> str:
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    return (f"download {URL_INCEPTION_V3} and set eval.inception_weights=PATH (or the environment variable "
            f"{INCEPTION_ENV})")


def inception_identity(weights: str | None) -> tuple[Path | None, str]:
    """-> (weights file or None for torch-fidelity's download, identity), without building the network: a missing
    file or a pickle that holds more than tensors is refused here, before torch-fidelity unpickles it."""
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    weights = weights or os.environ.get(INCEPTION_ENV)
    if not weights:
        return None, "inception-" + Path(URL_INCEPTION_V3).name
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FeatureError(f"FID Inception weights not found at {path} (from eval.inception_weights or "
                           f"{INCEPTION_ENV}); {_inception_fix()}")
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise FeatureError(f"{path} is not a plain state dict of tensors ({type(err).__name__}); {_inception_fix()}")
    return path, f"inception-{file_digest(path)[:16]}"


def extractor_identities(cfg: Config) -> dict[str, str]:
    """eval.features -> {name: identity} (what their features depend on), checked but not built: the driver
    of an evaluation needs only these. Only torch-fidelity's own download, when not cached yet, is fetched here
    (by building the network once), so that no internet stops the evaluation before any actor starts."""
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    from djepa.eval.classifier import classifier_hash

    e, out = cfg.eval, {}
    for name in e.features:
        if name == "inception":
            path, out[name] = inception_identity(e.inception_weights)
            cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(URL_INCEPTION_V3).name
            if path is None and not cached.is_file():
                InceptionExtractor(None)
        elif name == "dinov2":
            out[name] = dinov2_identity(e.dinov2_weights)[1]
        elif name == "i3d":
            from djepa.video.fvd import i3d_identity

            out[name] = i3d_identity(e.i3d_weights)[1]
        elif name == "clip":
            from djepa.text.clip_score import clip_identity

            out[name] = clip_identity(e.clip_model)
        elif cfg.data.source in TEXT_SOURCES:
            from djepa.text.pair_metrics import pair_identity

            out[name] = pair_identity(cfg.data.source)
        else:
            out[name] = f"domain-{cfg.data.source}-{classifier_hash(cfg.data.source)}"
    return out


DIMS = {"inception": InceptionExtractor.dims, "domain": DomainExtractor.dims, "dinov2": DinoV2Extractor.dims,
        "i3d": 400}  # djepa.video.fvd.I3DExtractor.dims (imported lazily: the video modality imports this file)


def dims(name: str, source: str) -> int:
    """Width of an extractor's features: the pairs' domain features are two digits' side by side."""
    return 2 * DIMS["domain"] if name == "domain" and source in TEXT_SOURCES else DIMS[name]


def random_inception_weights(path: str | Path, seed: int = 0) -> Path:
    """Write randomly initialised weights in the FID Inception's exact layout to `path`, without the download:
    for tests and speed benchmarks (speed does not depend on the weights; the real ones are a download away)."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    class Unloaded(fe.FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True):
            return None

    orig = fe.load_state_dict_from_url
    fe.load_state_dict_from_url = lambda *a, **k: {}
    try:
        torch.manual_seed(seed)
        net = Unloaded("inception-v3-compat", ["2048"])
    finally:
        fe.load_state_dict_from_url = orig
    torch.save(net.state_dict(), path)
    return Path(path)


def build_extractors(cfg: Config, device="cpu") -> list[Extractor]:
    e = cfg.eval
    out = []
    for name in e.features:
        if name == "inception":
            out.append(InceptionExtractor(e.inception_weights, device, e.feature_batch_size))
        elif name == "dinov2":
            out.append(DinoV2Extractor(e.dinov2_weights, device, e.feature_batch_size))
        elif name == "i3d":
            from djepa.video.fvd import I3DExtractor

            # batch in clips: ~70 MB of activations each at 16 x 224 x 224 (fvd.py), so at most 16 at a time
            out.append(I3DExtractor(e.i3d_weights, device, min(e.feature_batch_size, 16)))
        elif name == "clip":
            continue  # scores a sample against its prompt: not a feature extractor (djepa/text/clip_score.py)
        elif cfg.data.source in TEXT_SOURCES:
            from djepa.text.pair_metrics import PairExtractor

            out.append(PairExtractor(cfg.data.source, e.cache_dir, device, e.feature_batch_size))
        else:
            out.append(DomainExtractor(cfg.data.source, e.cache_dir, device, e.feature_batch_size))
    return out

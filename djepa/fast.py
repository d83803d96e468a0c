"""Sampling speed applied to a model from outside its maths, as `platform.parallel.shard` applies FSDP and
`engine.checkpoint_blocks` / `engine.compile_blocks` apply activation checkpointing and torch.compile.

- `sampling_autocast(device, dtype)`: the precision switch of sampling (sample.dtype): torch.autocast around
  `generate`, without the weight-cast cache. The token sampler keeps its own arithmetic in float32.
- `graph_token_sampler(model)`: in place, the token loss's `sample_from_noise` (the per-token denoising loop,
  a pure function of z, noise, temperature and cfg) becomes a replay of CUDA graphs (sample.cuda_graphs).

Why CUDA graphs: the token sampler runs ~100 denoiser steps of ~150 small kernels each per AR step. Eager,
that is bound by Python and kernel-launch overhead (about 4.6 ms a step on an H100 for any model size); a
replayed graph costs only the GPU time. Shapes change with the number of tokens an AR step samples, so a
batch needs one capture per distinct count (about 7 for 64 steps on 256 tokens), and later batches of the
same size replay them all. Inputs are copied into static buffers and the output is cloned out, so a caller
never sees the graph's memory. A graph reads the weights at their addresses: in-place updates (the EMA's
lerp) are seen, a moved or re-created parameter triggers a new capture.
"""
from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import nullcontext

import torch
import torch.nn as nn


def sampling_autocast(device: torch.device | str, dtype: torch.dtype | None):
    """torch.autocast(dtype) for sampling on `device`, or nothing (dtype None: plain fp32). No weight-cast cache:
    the weights are constant while sampling, and a cached cast made inside one graph capture would be read,
    never written, by the next one after its memory went back to the pool."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype, cache_enabled=False)


class GraphCache:
    """`cache(fn, tensors, scalars, watch)` == `fn(*tensors, *scalars)`, run as a CUDA graph.

    tensors: CUDA tensors (their shapes, dtypes and the caller's autocast state pick the graph);
    scalars: Python floats, passed to `fn` as 0-dim float32 device tensors so a new value needs no
    new capture; watch: tensors whose storage the graph reads (parameters, buffers). `fn` must not
    synchronise with the host and must not draw random numbers (a replay would repeat them)."""

    def __init__(self, max_graphs: int = 32):  # ~7 shapes per (batch size, guidance) for 64 AR steps
        self.max_graphs = max_graphs
        self.entries: OrderedDict = OrderedDict()
        self.stream: torch.cuda.Stream | None = None
        self.pool = None
        self.failed: str | None = None  # set after a failed capture: the caller falls back to eager

    def __deepcopy__(self, memo):  # a copied module (make_ema) starts with no graphs of its own
        return GraphCache(self.max_graphs)

    def __reduce__(self):  # graphs are process-local: a pickled module arrives with an empty cache
        return GraphCache, (self.max_graphs,)

    def __call__(self, fn: Callable, tensors: Sequence[torch.Tensor], scalars: Sequence[float] = (),
                 watch: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        device = tensors[0].device
        amp = (torch.is_autocast_enabled(device.type), torch.get_autocast_dtype(device.type))
        sig = (amp, len(scalars), tuple((tuple(t.shape), t.dtype, t.device) for t in tensors))
        ptrs = tuple(t.data_ptr() for t in watch)
        entry = self.entries.get(sig)
        if entry is None or entry["ptrs"] != ptrs:
            entry = self._capture(fn, tensors, len(scalars), ptrs)
            self.entries[sig] = entry
            while len(self.entries) > self.max_graphs:
                self.entries.popitem(last=False)
        self.entries.move_to_end(sig)
        for static, t in zip(entry["tensors"], tensors):
            static.copy_(t)
        for static, v in zip(entry["scalars"], scalars):
            static.fill_(v)  # a fill kernel, not a host-to-device copy
        entry["graph"].replay()
        return entry["out"].clone()

    def _capture(self, fn, tensors, n_scalars: int, ptrs: tuple) -> dict:
        device = tensors[0].device
        static = [t.clone() for t in tensors]
        scalars = [torch.zeros((), device=device) for _ in range(n_scalars)]
        if self.stream is None:
            self.stream = torch.cuda.Stream(device)
            self.pool = torch.cuda.graph_pool_handle()  # shared: replays never overlap, outputs are cloned
            # lazy initialisation (cuBLAS handle and workspace of this stream) must not happen inside
            # a capture: run once eagerly on the capture stream first
            self.stream.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(self.stream):
                fn(*static, *scalars)
            torch.cuda.current_stream(device).wait_stream(self.stream)
        graph = torch.cuda.CUDAGraph()
        # no autocast weight-cast cache (see sampling_autocast), whatever the caller's autocast says
        with torch.autocast(device.type, enabled=torch.is_autocast_enabled(device.type),
                            dtype=torch.get_autocast_dtype(device.type), cache_enabled=False):
            with torch.cuda.graph(graph, pool=self.pool, stream=self.stream):
                out = fn(*static, *scalars)
        return {"graph": graph, "tensors": static, "scalars": scalars, "out": out, "ptrs": ptrs}


class GraphedTokenSampler:
    """Stands in for `token_loss.sample_from_noise(z, noise, temperature, cfg)`: the same function, replayed
    from a GraphCache when z is on a GPU; eagerly otherwise (CPU, or after a capture failed once, with a
    warning). Guidance needs no key of its own: a guided call has twice the rows of z, so its own graph."""

    def __init__(self, token_loss: nn.Module):
        self.token_loss = token_loss
        self.cache = GraphCache()

    def eager(self, z, noise, temperature=1.0, cfg=1.0) -> torch.Tensor:
        return type(self.token_loss).sample_from_noise(self.token_loss, z, noise, temperature, cfg)

    def __call__(self, z, noise, temperature=1.0, cfg=1.0) -> torch.Tensor:
        if not z.is_cuda or self.cache.failed:
            return self.eager(z, noise, temperature, cfg)
        watch = [*self.token_loss.parameters(), *self.token_loss.buffers()]
        try:
            return self.cache(self.eager, (z, noise), (temperature, cfg), watch)
        except RuntimeError as err:  # e.g. an op that cannot be captured: same results, eager speed
            self.cache.failed = str(err)
            self.cache.entries.clear()
            warnings.warn(f"CUDA graph capture of the token sampler failed, running it eagerly: {err}", stacklevel=2)
            torch.cuda.synchronize(z.device)
            return self.eager(z, noise, temperature, cfg)


def graph_token_sampler(model: nn.Module, on: bool = True) -> GraphedTokenSampler | None:
    """In place: model.token_loss samples through CUDA graphs (on; a no-op if it already does) or eagerly
    again (off; its graphs are dropped). Returns the installed GraphedTokenSampler (None when off).
    Apply to the sampling copy (the EMA), after it is on its device; the weights and checkpoints are unchanged."""
    tl = model.token_loss
    current = tl.__dict__.get("sample_from_noise")
    if not on:
        if current is not None:
            del tl.sample_from_noise  # the class's plain method shows through again
        return None
    if current is None:
        current = tl.sample_from_noise = GraphedTokenSampler(tl)
    return current

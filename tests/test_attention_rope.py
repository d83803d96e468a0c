"""RoPE tables and the attention blocks (djepa/models/rope.py, djepa/models/attention.py) against independent
references: a float64 plain-PyTorch joint attention written here, diffusers' SD3 JointTransformerBlock, timm's
Block, HF LLaMA's rotary embedding and patchify's token order. float32 throughout; tolerance 1e-5."""
from functools import partial

import pytest
import torch
import torch.nn as nn
from timm.models.vision_transformer import Attention as TimmAttention
from timm.models.vision_transformer import Block as TimmBlock

from djepa.models.attention import Attention, Block, JointBlock
from djepa.models.rope import apply_rope, rope_for_sequence, rope_tables
from djepa.models.tokenizer import patchify

D, HEADS, HD = 32, 4, 8
TOL = 1e-5


class RMSQKAttention(TimmAttention):
    """timm's attention with the authors' float32 RMS qk-norm: the attention djepa.py built before its own blocks."""

    def __init__(self, dim, norm_layer=None, **kwargs):
        from djepa.models.attention import Fp32RMSNorm

        super().__init__(dim, norm_layer=Fp32RMSNorm, **kwargs)



def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Move every parameter off its init (norm weights ~1 +- 0.1, biases ~0.1), so none is a no-op."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return module.eval()


def max_diff(a, b) -> float:
    return (a.double() - b.double()).abs().max().item()


# ---------------------------------------------------------------- an independent joint attention, in float64
def ref_norm(x, w, b, kind, eps=1e-6):
    if kind == "rms":
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def ref_rotate(t, cos, sin):
    """Rotate the pairs (i, i + hd/2) as complex numbers by the angle whose cos/sin the table holds."""
    h = t.shape[-1] // 2
    z = torch.complex(t[..., :h], t[..., h:]) * torch.complex(cos[..., :h], sin[..., :h])
    return torch.cat([z.real, z.imag], dim=-1)


def ref_stream(p, prefix, x, qk_norm, rope):
    """One stream's normed q, k, v as (B, H, N, hd), from its raw state-dict tensors."""
    get = lambda k: p[prefix + k]  # noqa: E731
    h = ref_norm(x, get("norm1.weight"), get("norm1.bias"), "layer")
    qkv = h @ get("attn.qkv.weight").T + get("attn.qkv.bias")  # (B, N, 3D)
    b, n, _ = x.shape
    q, k, v = qkv.reshape(b, n, 3, HEADS, HD).permute(2, 0, 3, 1, 4)
    if qk_norm != "none":
        q = ref_norm(q, get("attn.q_norm.weight"), p.get(prefix + "attn.q_norm.bias"), qk_norm)
        k = ref_norm(k, get("attn.k_norm.weight"), p.get(prefix + "attn.k_norm.bias"), qk_norm)
    if rope is not None:
        q, k = ref_rotate(q, *rope), ref_rotate(k, *rope)
    return q, k, v


def ref_tail(p, prefix, x, o):
    get = lambda k: p[prefix + k]  # noqa: E731
    x = x + o.transpose(1, 2).reshape(x.shape) @ get("attn.proj.weight").T + get("attn.proj.bias")
    h = ref_norm(x, get("norm2.weight"), get("norm2.bias"), "layer")
    h = h @ get("mlp.fc1.weight").T + get("mlp.fc1.bias")
    h = 0.5 * h * (1 + torch.erf(h / 2 ** 0.5))  # exact GELU
    return x + h @ get("mlp.fc2.weight").T + get("mlp.fc2.bias")


def ref_joint(block, x, c, qk_norm, rope=None, x_mask=None, c_mask=None):
    p = {k: v.double() for k, v in block.state_dict().items()}
    x, c = x.double(), c.double()
    rope = None if rope is None else tuple(t.double() for t in rope)
    qx, kx, vx = ref_stream(p, "x_stream.", x, qk_norm, rope)
    qc, kc, vc = ref_stream(p, "c_stream.", c, qk_norm, None)
    q, k, v = torch.cat([qc, qx], 2), torch.cat([kc, kx], 2), torch.cat([vc, vx], 2)
    scores = q @ k.transpose(-1, -2) / HD ** 0.5  # (B, H, Nc + Nx, Nc + Nx)
    b = x.shape[0]
    cm = torch.ones(b, c.shape[1], dtype=torch.bool) if c_mask is None else c_mask
    xm = torch.ones(b, x.shape[1], dtype=torch.bool) if x_mask is None else x_mask
    scores = scores.masked_fill(~torch.cat([cm, xm], 1)[:, None, None, :], float("-inf"))
    att = scores.exp() / scores.exp().sum(-1, keepdim=True)
    o = att @ v
    nc = c.shape[1]
    return ref_tail(p, "x_stream.", x, o[:, :, nc:]), ref_tail(p, "c_stream.", c, o[:, :, :nc])


def inputs(b=3, nx=12, nc=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, nx, D, generator=g), torch.randn(b, nc, D, generator=g)


@pytest.mark.parametrize("qk_norm", ["none", "rms", "layer"])
@pytest.mark.parametrize("masked", [False, True])
def test_joint_block_equals_plain_computation(qk_norm, masked):
    torch.manual_seed(0)
    block = randomize(JointBlock(D, HEADS, qk_norm=qk_norm))
    x, c = inputs()
    rope = rope_tables((3, 4), HD)  # x's 12 tokens on a 3 x 4 grid
    x_mask = c_mask = None
    if masked:  # text lengths 5, 2, 0 (the null text); one padding data token in the last sample
        c_mask = torch.arange(5)[None] < torch.tensor([[5], [2], [0]])
        x_mask = torch.ones(3, 12, dtype=torch.bool)
        x_mask[2, 7] = False
    with torch.no_grad():
        out_x, out_c = block(x, c, rope, x_mask, c_mask)
    ref_x, ref_c = ref_joint(block, x, c, qk_norm, rope, x_mask, c_mask)
    assert max_diff(out_x, ref_x) < TOL
    assert max_diff(out_c, ref_c) < TOL


@pytest.mark.parametrize("qk_norm, diffusers_qk_norm", [("none", None), ("rms", "rms_norm"), ("layer", "layer_norm")])
@pytest.mark.parametrize("context_pre_only", [False, True])
def test_joint_block_equals_diffusers_sd3_block_without_modulation(qk_norm, diffusers_qk_norm, context_pre_only):
    from diffusers.models.attention import JointTransformerBlock

    torch.manual_seed(0)
    ref = randomize(JointTransformerBlock(D, HEADS, HD, context_pre_only=context_pre_only, qk_norm=diffusers_qk_norm))
    with torch.no_grad():  # AdaLN-Zero as the identity: shift 0, scale 0, gate 1 whatever the timestep embedding
        for ada in (ref.norm1, ref.norm1_context):
            ada.linear.weight.zero_()
            ada.linear.bias.zero_()
            if ada.linear.out_features == 6 * D:  # (shift, scale, gate) for attention, then for the MLP
                ada.linear.bias.view(6, D)[[2, 5]] = 1.0
            # context_pre_only: AdaLayerNormContinuous gives (scale, shift): zero is already the identity
    sd = ref.state_dict()
    cat = lambda *ks: torch.cat([sd[k] for k in ks])  # noqa: E731
    mapping = {  # ours <- diffusers; our norm1/norm2 keep weight 1, bias 0 = diffusers' non-affine LayerNorms
        "x_stream.attn.qkv.weight": cat("attn.to_q.weight", "attn.to_k.weight", "attn.to_v.weight"),
        "x_stream.attn.qkv.bias": cat("attn.to_q.bias", "attn.to_k.bias", "attn.to_v.bias"),
        "x_stream.attn.proj.weight": sd["attn.to_out.0.weight"],
        "x_stream.attn.proj.bias": sd["attn.to_out.0.bias"],
        "x_stream.mlp.fc1.weight": sd["ff.net.0.proj.weight"], "x_stream.mlp.fc1.bias": sd["ff.net.0.proj.bias"],
        "x_stream.mlp.fc2.weight": sd["ff.net.2.weight"], "x_stream.mlp.fc2.bias": sd["ff.net.2.bias"],
        "c_stream.attn.qkv.weight": cat("attn.add_q_proj.weight", "attn.add_k_proj.weight", "attn.add_v_proj.weight"),
        "c_stream.attn.qkv.bias": cat("attn.add_q_proj.bias", "attn.add_k_proj.bias", "attn.add_v_proj.bias"),
    }
    if not context_pre_only:
        mapping |= {
            "c_stream.attn.proj.weight": sd["attn.to_add_out.weight"],
            "c_stream.attn.proj.bias": sd["attn.to_add_out.bias"],
            "c_stream.mlp.fc1.weight": sd["ff_context.net.0.proj.weight"],
            "c_stream.mlp.fc1.bias": sd["ff_context.net.0.proj.bias"],
            "c_stream.mlp.fc2.weight": sd["ff_context.net.2.weight"],
            "c_stream.mlp.fc2.bias": sd["ff_context.net.2.bias"],
        }
    if qk_norm != "none":
        norms = {"x_stream.attn.q_norm": "attn.norm_q", "x_stream.attn.k_norm": "attn.norm_k",
                 "c_stream.attn.q_norm": "attn.norm_added_q", "c_stream.attn.k_norm": "attn.norm_added_k"}
        for ours_key, theirs in norms.items():
            for suffix in (".weight", ".bias") if qk_norm == "layer" else (".weight",):
                mapping[ours_key + suffix] = sd[theirs + suffix]
    # SD3's MLP uses the tanh GELU; the blocks D-JEPA builds keep timm's exact GELU
    ours = JointBlock(D, HEADS, qk_norm=qk_norm, act_layer=partial(nn.GELU, approximate="tanh"),
                      context_pre_only=context_pre_only).eval()
    own = ours.state_dict()
    assert set(mapping) == {k for k in own if ".norm1." not in k and ".norm2." not in k}
    ours.load_state_dict(own | mapping)
    assert type(ref.attn.processor).__name__ == "JointAttnProcessor2_0"  # the SD3 joint attention
    x, c = inputs()
    with torch.no_grad():
        ref_c, ref_x = ref(x, c, temb=torch.randn(3, D))
        out_x, out_c = ours(x, c)
    assert max_diff(out_x, ref_x) < TOL
    if context_pre_only:
        assert ref_c is None and out_c is None
    else:
        assert max_diff(out_c, ref_c) < TOL


@pytest.mark.parametrize("qk_norm", ["none", "rms", "layer"])
def test_masked_text_stream_is_no_text_stream(qk_norm):
    """The null text (every text key masked, or no text token at all) = the Block of the x stream alone."""
    torch.manual_seed(0)
    joint = randomize(JointBlock(D, HEADS, qk_norm=qk_norm))
    alone = Block(D, HEADS, qk_norm=qk_norm).eval()
    alone.load_state_dict(joint.x_stream.state_dict())
    x, c = inputs()
    rope = rope_tables((12,), HD)
    with torch.no_grad():
        want = alone(x, rope)
        null_x, null_c = joint(x, c, rope, c_mask=torch.zeros(3, 5, dtype=torch.bool))
        empty_x, empty_c = joint(x, c[:, :0], rope)
        real_x, _ = joint(x, c, rope)
    assert max_diff(null_x, want) < TOL and max_diff(empty_x, want) < TOL
    assert torch.isfinite(null_c).all() and empty_c.shape == (3, 0, D)
    assert max_diff(real_x, want) > 1e-3  # and a real text does reach x


def test_padding_rows_stay_finite():
    torch.manual_seed(0)
    attn = randomize(Attention(D, HEADS))
    x = torch.randn(2, 6, D)
    mask = torch.tensor([[True] * 4 + [False] * 2, [False] * 6])  # the second sample has no real key at all
    with torch.no_grad():
        out = attn(x, mask=mask)
        whole = attn(x[:1, :4])
    assert torch.isfinite(out).all()
    assert max_diff(out[:1, :4], whole) < TOL  # padding keys change nothing for the real rows
    joint = randomize(JointBlock(D, HEADS))
    with torch.no_grad():
        out_x, out_c = joint(x, x[:, :3], x_mask=torch.zeros(2, 6, dtype=torch.bool),
                             c_mask=torch.zeros(2, 3, dtype=torch.bool))
    assert torch.isfinite(out_x).all() and torch.isfinite(out_c).all()


@pytest.mark.parametrize("qk_norm", ["none", "rms", "layer"])
def test_block_without_rope_and_mask_equals_timm_block(qk_norm):
    """The timm Block exactly as djepa/models/djepa.py builds it, with its weights loaded strictly into ours."""
    torch.manual_seed(0)
    timm_block = randomize(TimmBlock(
        D, HEADS, 4.0, qkv_bias=True, qk_norm=qk_norm != "none", norm_layer=partial(nn.LayerNorm, eps=1e-6),
        attn_layer=RMSQKAttention if qk_norm == "rms" else TimmAttention))
    ours = Block(D, HEADS, 4.0, qk_norm=qk_norm).eval()
    ours.load_state_dict(timm_block.state_dict())
    x = torch.randn(3, 10, D)
    with torch.no_grad():
        assert max_diff(ours(x), timm_block(x)) < TOL
        assert max_diff(ours(x, mask=torch.ones(3, 10, dtype=torch.bool)), timm_block(x)) < TOL


def test_gathered_rope_rows_travel_with_their_tokens():
    """As in the encoder: [buffer ; visible tokens at idx]; shuffling the visible tokens (and idx with them)
    shuffles the output and changes nothing else, and the buffer rows are not rotated."""
    torch.manual_seed(0)
    block = randomize(Block(D, HEADS, qk_norm="rms"))
    cos, sin = rope_tables((4, 5), HD)
    idx = torch.stack([torch.randperm(20)[:7] for _ in range(2)])  # (B, K)
    perm = torch.randperm(7)
    x = torch.randn(2, 3 + 7, D)  # 3 buffer tokens
    x_perm = torch.cat([x[:, :3], x[:, 3:][:, perm]], 1)
    rope = rope_for_sequence(cos, sin, idx, num_prefix=3)
    assert rope[0].shape == (2, 10, HD)
    assert torch.equal(rope[0][:, :3], torch.ones(2, 3, HD)) and torch.equal(rope[1][:, :3], torch.zeros(2, 3, HD))
    assert torch.equal(rope[0][:, 3:], cos[idx]) and torch.equal(rope[1][:, 3:], sin[idx])
    with torch.no_grad():
        out = block(x, rope)
        out_perm = block(x_perm, rope_for_sequence(cos, sin, idx[:, perm], num_prefix=3))
    assert max_diff(out_perm[:, :3], out[:, :3]) < TOL
    assert max_diff(out_perm[:, 3:], out[:, 3:][:, perm]) < TOL


# ---------------------------------------------------------------- RoPE
GRIDS = [(40,), (5, 7), (3, 4, 5)]


@pytest.mark.parametrize("grid", GRIDS)
def test_rope_scores_depend_on_offsets_only(grid):
    hd = 16
    cos, sin = rope_tables(grid, hd)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(hd, generator=g), torch.randn(hd, generator=g)
    n = cos.shape[0]
    rq = apply_rope(q.expand(1, 1, n, hd), cos, sin)[0, 0]  # q at every position, (N, hd)
    rk = apply_rope(k.expand(1, 1, n, hd), cos, sin)[0, 0]
    scores = rq @ rk.T  # (N, N): score of q at p against k at p'
    coords = torch.stack(torch.meshgrid(*(torch.arange(s) for s in grid), indexing="ij"), -1).reshape(n, -1)
    size = torch.tensor(grid)
    row = lambda c: (c * torch.tensor([size[i + 1:].prod() for i in range(len(grid))])).sum(-1)  # noqa: E731
    for shift in [(1,), (3,), (0, 2), (1, 1), (2, 3), (0, 0, 2), (1, 2, 0), (2, 1, 3)]:
        if len(shift) != len(grid):
            continue
        s = torch.tensor(shift)
        ok = ((coords + s) < size).all(-1)  # positions that stay on the grid after the shift
        a, b = row(coords[ok]), row(coords[ok] + s)
        assert max_diff(scores[a][:, a], scores[b][:, b]) < TOL
    for axis in range(len(grid)):  # and every axis does move the score
        step = torch.zeros(len(grid), dtype=torch.long)
        step[axis] = 1
        assert abs(scores[0, row(step)] - scores[0, 0]) > 1e-3


def test_rope_tables_follow_patchify_order_and_the_axial_layout():
    """Coordinates patchified with patch 1 give each row's (t, h, w); the table's angles are those coordinates
    times theta^(-2i/d_axis), per axis section of the half dim, the leftover pairs unrotated."""
    grid, hd, theta = (3, 4, 5), 16, 100.0
    coords = torch.stack(torch.meshgrid(*(torch.arange(s, dtype=torch.float64) for s in grid), indexing="ij"))
    rows = patchify(coords[None], 1)[0]  # (N, 3): token n's (t, h, w)
    assert rows[1].tolist() == [0, 0, 1] and rows[5 * 2 + 3].tolist() == [0, 2, 3] and rows[20].tolist() == [1, 0, 0]
    pairs = hd // 2 // 3  # 2 per axis, 2 pairs left over
    freqs = theta ** (-torch.arange(pairs, dtype=torch.float64) * 2 / (2 * pairs))
    half = torch.cat([rows[:, a:a + 1] * freqs for a in range(3)] + [torch.zeros(len(rows), 2, dtype=torch.float64)], 1)
    cos, sin = rope_tables(grid, hd, theta)
    assert cos.dtype == torch.float32 and cos.shape == (60, hd)
    assert max_diff(cos, torch.cat([half.cos()] * 2, 1)) < 1e-6 and max_diff(sin, torch.cat([half.sin()] * 2, 1)) < 1e-6
    assert torch.equal(cos[:, 6:8], torch.ones(60, 2)) and torch.equal(sin[:, 14:16], torch.zeros(60, 2))


def test_rope_rank1_equals_hf_llama_rotary_embedding():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    n, hd = 50, 16
    cfg = LlamaConfig(hidden_size=HEADS * hd, num_attention_heads=HEADS, head_dim=hd,
                      rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    q, k = torch.randn(2, HEADS, n, hd), torch.randn(2, HEADS, n, hd)
    hf_cos, hf_sin = LlamaRotaryEmbedding(cfg)(q, torch.arange(n)[None])  # (1, N, hd)
    cos, sin = rope_tables((n,), hd)
    assert max_diff(cos, hf_cos[0]) < TOL and max_diff(sin, hf_sin[0]) < TOL
    hf_q, hf_k = apply_rotary_pos_emb(q, k, hf_cos, hf_sin)
    assert max_diff(apply_rope(q, cos, sin), hf_q) < TOL and max_diff(apply_rope(k, cos, sin), hf_k) < TOL


def test_longer_tables_extend_shorter_ones():
    long_cos, long_sin = rope_tables((100,), 16)
    cos, sin = rope_tables((60,), 16)
    assert torch.equal(long_cos[:60], cos) and torch.equal(long_sin[:60], sin)
    # video: t is the slowest axis, so more frames append rows; a wider frame keeps each (h, w)'s row
    assert torch.equal(rope_tables((6, 3, 4), 24)[0][:24], rope_tables((2, 3, 4), 24)[0])
    assert torch.equal(rope_tables((3, 8), 16)[1].view(3, 8, 16)[:, :5], rope_tables((3, 5), 16)[1].view(3, 5, 16))


def test_identity_rows_and_dtype():
    x = torch.randn(2, HEADS, 3, HD)
    assert torch.equal(apply_rope(x, torch.ones(3, HD), torch.zeros(3, HD)), x)
    cos, sin = rope_tables((3,), HD)
    xb = x.bfloat16()
    out = apply_rope(xb, cos, sin)
    assert out.dtype == torch.bfloat16 and torch.equal(out, apply_rope(xb.float(), cos, sin).bfloat16())


def test_rope_refuses_a_head_dim_it_cannot_split():
    with pytest.raises(ValueError, match="model.width / model.num_heads"):
        rope_tables((2, 3, 4), 4)  # 2 pairs for 3 axes
    with pytest.raises(ValueError, match="model.width / model.num_heads"):
        rope_tables((10,), 7)
    with pytest.raises(ValueError, match="rank 1, 2 or 3"):
        rope_tables((2, 2, 2, 2), 16)
    with pytest.raises(ValueError, match="model.qk_norm"):
        Attention(D, HEADS, qk_norm="rmsnorm")

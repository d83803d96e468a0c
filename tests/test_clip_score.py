"""CLIP score against an independent computation through transformers' CLIPProcessor and CLIPModel's
get_image_features / get_text_features; the default model's exact layout (ViT-L/14, counted on the meta device: a
428M-parameter forward is too slow for CPU tests); a tiny CLIP in a directory laid out as a hub snapshot, with a
byte-level BPE tokenizer written here (nothing downloaded); prompt files and their errors."""
import json

import numpy as np
import pytest
import torch

from djepa.eval.features import FeatureError
from djepa.text import clip_score as cs
from djepa.text.prompts import PromptError, read_prompts

WORDS = ["left", "of", "right", "a", "digit"]


def tiny_config():
    from transformers import CLIPConfig

    text = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2,
            "vocab_size": 1000, "projection_dim": 16, "bos_token_id": 998, "eos_token_id": 999}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2,
              "image_size": 32, "patch_size": 8, "projection_dim": 16}
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return cs.random_clip_dir(tmp_path_factory.mktemp("clip") / "tiny-clip", tiny_config(), WORDS, seed=0)


@pytest.fixture(scope="module")
def scorer(clip_dir):
    return cs.ClipScorer(str(clip_dir), batch_size=4)


def images(n, h=28, w=56, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


CAPTIONS = ["3 left of 8", "1 left of 2", "a digit", "9 right of 0", "", "7 LEFT of 7"]


def test_default_layout_is_openai_vit_l14():
    from transformers import CLIPModel

    with torch.device("meta"):
        state = CLIPModel(cs.vit_l14_config()).state_dict()
    assert sum(v.numel() for v in state.values()) == 427_616_513  # openai/clip-vit-large-patch14's count
    assert state["vision_model.embeddings.position_embedding.weight"].shape == (1 + 16 * 16, 1024)  # 224 / 14
    assert state["vision_model.embeddings.patch_embedding.weight"].shape == (1024, 3, 14, 14)
    assert state["text_model.embeddings.token_embedding.weight"].shape == (49408, 768)
    assert state["text_model.embeddings.position_embedding.weight"].shape == (77, 768)  # the 77-token context
    assert state["visual_projection.weight"].shape == (768, 1024)
    assert state["text_projection.weight"].shape == (768, 768)
    layers = {tower: {k.split(".")[3] for k in state if k.startswith(f"{tower}.encoder.layers.")}
              for tower in ("vision_model", "text_model")}
    assert layers == {"vision_model": {str(i) for i in range(24)}, "text_model": {str(i) for i in range(12)}}


@pytest.mark.parametrize("shape", [(28, 56, 3), (50, 30, 3), (28, 28, 1), (300, 260, 3)])
def test_preprocessing_equals_clip_image_processor(shape):
    from transformers import CLIPImageProcessor

    x = images(3, *shape, seed=sum(shape))
    ref = CLIPImageProcessor()(images=list(x), return_tensors="pt")["pixel_values"]  # 224, bicubic, CLIP mean/std
    ours = cs.preprocess(x)
    assert ours.shape == ref.shape == (3, 3, 224, 224)
    assert (ours - ref).abs().max() < 1e-5  # bit-identical with transformers 5.25; the same uint8 resize, so at
    # most the float order of (x - m) / s could differ
    if shape[-1] == 1:  # grey is repeated to RGB: the same tensor as the RGB image
        assert torch.equal(ours, cs.preprocess(np.repeat(x, 3, axis=-1)))


def test_pad_fit_squares_the_image_with_black_before_the_resize():
    from transformers import CLIPImageProcessor

    x = images(2, 28, 56, 3)
    padded = np.zeros((2, 56, 56, 3), np.uint8)
    padded[:, 14:42] = x  # 28 rows of black bars, 14 above and 14 below
    ref = CLIPImageProcessor()(images=list(padded), return_tensors="pt")["pixel_values"]
    assert (cs.preprocess(x, fit="pad") - ref).abs().max() < 1e-5
    assert not torch.allclose(cs.preprocess(x, fit="pad"), cs.preprocess(x, fit="crop"))


def reference_scores(clip_dir, x, captions):
    """The independent computation: transformers' CLIPProcessor (its tokenizer and image processor) and CLIPModel's
    get_*_features, cosine in float64, 100 * max(cos, 0)."""
    from transformers import CLIPModel, CLIPProcessor

    processor = CLIPProcessor.from_pretrained(clip_dir)
    model = CLIPModel.from_pretrained(clip_dir).eval()
    inputs = processor(text=captions, images=list(x), return_tensors="pt", padding=True, truncation=True,
                       max_length=77)
    with torch.no_grad():
        img = model.get_image_features(pixel_values=inputs["pixel_values"])
        txt = model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    img, txt = (getattr(e, "pooler_output", e).double().numpy() for e in (img, txt))  # v5 returns an output object
    cos = (img * txt).sum(-1) / np.linalg.norm(img, axis=-1) / np.linalg.norm(txt, axis=-1)
    return 100 * np.maximum(cos, 0)


def test_scores_equal_processor_and_get_features(clip_dir, scorer):
    x = images(len(CAPTIONS))
    ours = scorer(x, CAPTIONS)
    ref = reference_scores(clip_dir, x, CAPTIONS)
    assert ours.dtype == np.float64 and ours.shape == (len(CAPTIONS),)
    # float32 networks on differently padded text (77 vs the longest caption): agree to 1e-4 on the 0-100 scale
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)
    assert np.ptp(ours) > 1.0  # the scores depend on the pairs
    assert cs.clip_identity(clip_dir) == scorer.identity and scorer.protocol["context"] == 77
    assert scorer.protocol["image_size"] == 32 and scorer.protocol["fit"] == "crop"
    json.dumps(scorer.protocol)  # written into every result


def test_per_sample_scores_do_not_depend_on_batch_or_shard(clip_dir, scorer):
    x = images(7, seed=1)
    caps = [CAPTIONS[i % len(CAPTIONS)] for i in range(7)]
    whole = scorer(x, caps)
    one = cs.ClipScorer(str(clip_dir), batch_size=1)(x, caps)
    # no sample sees another; only float32 GEMMs of another batch shape round differently (measured 6e-6 here,
    # 1e-7 in the cosine), as for every feature extractor
    np.testing.assert_allclose(one, whole, rtol=0, atol=2e-5)
    shards = [cs.shard_clip_scores(scorer, x[a:b], caps[a:b]) for a, b in ((0, 3), (3, 7))]
    np.testing.assert_allclose(np.concatenate([s["clip.scores"] for s in shards]), whole, rtol=0, atol=2e-5)
    merged = cs.clip_score([s["clip.total"] for s in shards], [3, 4])
    assert merged["clip_score"] == pytest.approx(whole.mean(), abs=2e-5)
    assert merged["clip_score_hessel"] == merged["clip_score"] * 2.5 / 100


def test_grey_is_repeated_to_rgb_and_pairs_are_clipped_at_zero(scorer):
    grey = images(3, c=1, seed=2)
    caps = CAPTIONS[:3]
    assert np.array_equal(scorer(grey, caps), scorer(np.repeat(grey, 3, axis=-1), caps))
    clipped = cs.ClipScorer.__new__(cs.ClipScorer)
    clipped.cosines = lambda im, c: np.array([-0.2, 0.0, 0.31])  # a negative cosine scores 0, not below
    np.testing.assert_allclose(clipped(None, None), [0.0, 0.0, 31.0])


def test_text_is_truncated_at_77_tokens_with_the_end_token_kept(scorer):
    long = " ".join(["left", "of"] * 60)  # 120 words, one token each
    ids = scorer.tokenizer([long], truncation=True, max_length=77)["input_ids"][0]
    assert len(ids) == 77 and ids[-1] == scorer.tokenizer.eos_token_id
    first_75 = " ".join(long.split()[:75])  # start + 75 words + end = 77
    x = images(1, seed=3)
    assert scorer(x, [long])[0] == pytest.approx(scorer(x, [first_75])[0], abs=1e-9)
    assert scorer(x, [long])[0] != pytest.approx(scorer(x, [" ".join(long.split()[:74])])[0], abs=1e-6)


def test_bad_inputs_and_bad_models_are_named(tmp_path, clip_dir, scorer):
    with pytest.raises(ValueError, match="one caption per image"):
        scorer(images(2), ["only one"])
    with pytest.raises(ValueError, match="1 or 3 channels"):
        scorer(images(1, c=4), ["x"])
    with pytest.raises(ValueError, match="uint8"):
        scorer(images(1).astype(np.float32), ["x"])
    with pytest.raises(FeatureError, match="neither a directory nor a hub id"):
        cs.ClipScorer(str(tmp_path / "no" / "such" / "clip"))
    assert cs.clip_identity(cs.DEFAULT_MODEL) == "clip-openai/clip-vit-large-patch14"  # no download for the id
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((clip_dir / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(FeatureError, match="no \\*.safetensors weights .* pickle is not read"):
        cs.ClipScorer(str(pickled))
    # a checkpoint that leaves a tensor of its layout unfilled is refused, not silently left random
    from safetensors.torch import load_file, save_file

    partial = tmp_path / "partial"
    partial.mkdir()
    for f in clip_dir.iterdir():
        (partial / f.name).write_bytes(f.read_bytes())
    state = load_file(partial / "model.safetensors")
    save_file({k: v for k, v in state.items() if k != "visual_projection.weight"}, partial / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(FeatureError, match="not a complete CLIP checkpoint.*visual_projection.weight"):
        cs.ClipScorer(str(partial))
    other = cs.random_clip_dir(tmp_path / "tiny-clip", tiny_config(), WORDS, seed=1)
    assert cs.clip_identity(other) != cs.clip_identity(clip_dir)  # the identity follows the weights' bytes


# --- prompt files -------------------------------------------------------------------------------------------


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return p


def test_prompt_formats_keep_file_order(tmp_path):
    want = ["3 left of 8", "a cat, sitting", "the \"quoted\" one"]
    plain = write(tmp_path, "p.txt", "# digits\n3 left of 8\n\n  a cat, sitting  \r\n   # indented comment\n"
                                     "the \"quoted\" one\n")
    csv_ = write(tmp_path, "p.csv", "\ufeffid,Caption\n1,3 left of 8\n2,\"a cat, sitting\"\n\n"
                                    "3,\"the \"\"quoted\"\" one\"\n")  # a byte-order mark, a blank row, quotes
    tsv = write(tmp_path, "PartiPrompts.tsv", "Prompt\tCategory\n3 left of 8\tx\na cat, sitting\ty\n"
                                              "the \"quoted\" one\tz\n")
    jsonl = write(tmp_path, "p.jsonl", "\n".join(json.dumps({"id": i, "text": t}) for i, t in enumerate(want)) + "\n\n")
    for p in (plain, csv_, tsv, jsonl):
        assert read_prompts(p) == want, p.name
    multi = write(tmp_path, "multi.csv", "prompt\n\"two\nlines\"\nnext\n")  # a quoted field may span lines
    assert read_prompts(multi) == ["two\nlines", "next"]
    sep = write(tmp_path, "sep.jsonl", json.dumps({"prompt": "a\u2028b"}, ensure_ascii=False) + "\n")
    assert read_prompts(sep) == ["a\u2028b"]  # U+2028 inside a caption is not a line break


@pytest.mark.parametrize("name, content, match", [
    ("empty.txt", "", r"empty.txt:1: no prompts"),
    ("comments.txt", "# only\n\n   \n# comments\n", r"comments.txt:1: no prompts"),
    ("header.csv", "caption\n", r"header.csv:1: no prompts"),
    ("blank.csv", "\n\n", r"blank.csv:1: no header row"),
    ("latin1.txt", "ok\nna\xefve\n".encode("latin-1"), r"latin1.txt:2: not UTF-8"),
    ("nokey.csv", "id,label\n1,x\n", r"nokey.csv:1: no caption field"),
    ("twokeys.csv", "text,caption\na,b\n", r"twokeys.csv:1: 2 \(text, caption\) caption field"),
    ("short.csv", "id,caption\n1,a\n2\n", r"short.csv:3: the row has 1 field"),
    ("emptycap.csv", "caption,id\na,1\n ,2\n", r"emptycap.csv:3: empty caption"),
    ("quote.csv", "caption\na\n\"unterminated\n", r"quote.csv:3: malformed CSV"),
    ("junk.csv", "caption\n\"a\"b\n", r"junk.csv:2: malformed CSV"),
    ("bad.jsonl", '{"text": "a"}\n{"text": "b"\n', r"bad.jsonl:2: malformed JSON"),
    ("list.jsonl", '{"text": "a"}\n\n["b"]\n', r"list.jsonl:3: a JSON object"),
    ("missing.jsonl", '{"text": "a"}\n{"label": 3}\n', r"missing.jsonl:2: no caption field"),
    ("number.jsonl", '{"text": 3}\n', r"number.jsonl:1: the caption is int"),
    ("emptyj.jsonl", '{"text": "a"}\n{"text": "  "}\n', r"emptyj.jsonl:2: empty caption"),
])
def test_prompt_file_errors_name_file_and_line(tmp_path, name, content, match):
    with pytest.raises(PromptError, match=match):
        read_prompts(write(tmp_path, name, content))


def test_missing_prompt_file_is_named(tmp_path):
    with pytest.raises(PromptError, match="no such prompts file"):
        read_prompts(tmp_path / "nope.txt")

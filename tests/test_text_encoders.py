"""Text encoders: the embedded words encoder keeps every word and its position; transformers encoders load from a
directory (built here from configs with random weights, with a word-level tokenizer: nothing is downloaded), stay
frozen, and give the hidden state asked for with its padding mask."""
import numpy as np
import pytest
import torch

from djepa.config import TextConfig
from djepa.text.encoders import HFTextEncoder, TextError, WordsEncoder, build_text_encoder, check_dims, sinusoid

VOCAB = ["0", "1", "3", "8", "left", "right", "of", "three", "eight"]


def test_words_encoder_is_one_hot_words_plus_positions():
    enc = WordsEncoder(TextConfig(vocab=VOCAB, max_length=6, position_dims=4))
    emb, mask = enc(["3 left of 8", "Eight,  right of THREE"])
    assert emb.shape == (2, 6, len(VOCAB) + 4) and mask.tolist() == [[True] * 4 + [False] * 2] * 2
    want = ["3", "left", "of", "8"]
    np.testing.assert_array_equal(emb[0, :4, :len(VOCAB)].argmax(1).numpy(), [VOCAB.index(w) for w in want])
    assert emb[0, :4, :len(VOCAB)].sum().item() == 4 and emb[0, 4:].abs().sum().item() == 0  # padding is zeros
    np.testing.assert_allclose(emb[0, :4, len(VOCAB):].numpy(), sinusoid(np.arange(4.0), 4), atol=1e-7)
    np.testing.assert_allclose(sinusoid(np.arange(3.0), 4)[1], [np.sin(1), np.sin(0.01), np.cos(1), np.cos(0.01)])
    # order is in the vectors: the same words in another order are other embeddings
    swapped, _ = enc(["8 left of 3"])
    assert not torch.equal(swapped[0], emb[0])


def test_words_encoder_names_what_it_cannot_read():
    enc = WordsEncoder(TextConfig(vocab=VOCAB, max_length=4))
    with pytest.raises(TextError, match=r"caption '3 above 8': 'above' not in text.vocab \(0 1 3 8 left"):
        enc(["3 above 8"])
    with pytest.raises(TextError, match=r"has 5 words, more than text.max_length=4"):
        enc(["3 left of 8 8"])
    with pytest.raises(TextError, match="needs text.vocab"):
        WordsEncoder(TextConfig())
    with pytest.raises(TextError, match=r"gives 25-d embeddings but model.text_dim=24; set model.text_dim=25"):
        check_dims(WordsEncoder(TextConfig(vocab=VOCAB)), 24)


def _word_tokenizer(words: list[str], eos: str | None = None):
    """A word-level fast tokenizer written from a word list: what a real run reads from the model's directory."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token=eos)


def _save(tmp_path, model, tokenizer):
    model.save_pretrained(tmp_path, safe_serialization=True)
    tokenizer.save_pretrained(tmp_path)
    return str(tmp_path)


def test_qwen2_encoder_from_a_directory_gives_the_asked_hidden_state(tmp_path):
    from transformers import Qwen2Config, Qwen2Model

    torch.manual_seed(0)
    model = Qwen2Model(Qwen2Config(vocab_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2)).eval()
    path = _save(tmp_path, model, _word_tokenizer(VOCAB))
    enc = build_text_encoder(TextConfig(encoder="hf", name=path, max_length=5, hidden_layer=-2))
    assert isinstance(enc, HFTextEncoder) and enc.dim == 32
    assert all(not p.requires_grad for p in enc.model.parameters())  # frozen
    # the directory's own tokenizer class reads it (transformers picks Qwen2's for a qwen2 config, as in a real run)
    long = "left of 3 8 8 eight " * 3
    lengths = [len(enc.tokenizer(c)["input_ids"]) for c in ("3 left of 8", long)]
    assert 0 < lengths[0] < 5 < lengths[1]
    emb, mask = enc(["3 left of 8", long])
    assert emb.shape == (2, 5, 32) and emb.dtype == torch.float32
    assert mask.tolist() == [[True] * lengths[0] + [False] * (5 - lengths[0]), [True] * 5] and enc.truncated == 1
    ids = torch.tensor([enc.tokenizer("3 left of 8")["input_ids"]])
    want = model(input_ids=ids, output_hidden_states=True).hidden_states[-2]  # causal: padding after cannot leak
    torch.testing.assert_close(emb[:1, :lengths[0]], want, atol=1e-5, rtol=1e-5)


def test_t5_and_clip_configs_keep_only_their_text_encoder(tmp_path):
    from transformers import CLIPConfig, CLIPModel, CLIPTextModel, T5Config, T5EncoderModel, T5ForConditionalGeneration

    torch.manual_seed(0)
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=16, d_model=24, d_kv=8, d_ff=48, num_layers=1, num_heads=3))
    enc = HFTextEncoder(TextConfig(encoder="hf", name=_save(tmp_path / "t5", t5, _word_tokenizer(VOCAB, "of")),
                                   max_length=6))
    assert isinstance(enc.model, T5EncoderModel) and enc.dim == 24
    clip = CLIPModel(CLIPConfig(text_config={"vocab_size": 16, "hidden_size": 16, "intermediate_size": 32,
                                             "num_hidden_layers": 1, "num_attention_heads": 2},
                                vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                               "num_attention_heads": 2, "image_size": 32, "patch_size": 16}))
    enc = HFTextEncoder(TextConfig(encoder="hf", name=_save(tmp_path / "clip", clip, _word_tokenizer(VOCAB)),
                                   max_length=6))
    assert isinstance(enc.model, CLIPTextModel) and enc.dim == 16
    assert enc(["3 left of 8"])[0].shape == (1, 6, 16)


def test_a_missing_encoder_is_named(tmp_path):
    with pytest.raises(TextError, match=rf"text.name='{tmp_path}/none': no text encoder there"):
        HFTextEncoder(TextConfig(encoder="hf", name=str(tmp_path / "none")))


def test_qwen2_1_5b_layout_of_the_t2i_preset():
    """The paper's text encoder in its published layout, on the meta device (no memory, nothing downloaded)."""
    from transformers import Qwen2Config, Qwen2Model

    from djepa.text.encoders import QWEN2_1_5B

    with torch.device("meta"):
        model = Qwen2Model(Qwen2Config(**QWEN2_1_5B))
    assert sum(p.numel() for p in model.parameters()) == 1_543_714_304 and model.config.hidden_size == 1536

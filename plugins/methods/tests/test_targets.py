"""Default targets per model family, on tiny models built from configs (random weights)."""

from __future__ import annotations

import pytest
import torch
from adapt_methods.targets import lora_targets, ssf_targets


def tiny(family: str) -> torch.nn.Module:
    import transformers as tf

    small = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    if family == "roberta":
        return tf.RobertaForSequenceClassification(tf.RobertaConfig(vocab_size=50, **small))
    if family == "deberta-v2":
        return tf.DebertaV2ForSequenceClassification(tf.DebertaV2Config(vocab_size=50, **small))
    if family == "t5":
        return tf.T5ForConditionalGeneration(tf.T5Config(vocab_size=50, d_model=32, d_kv=16, d_ff=64, num_layers=1,
                                                         num_heads=2))
    if family == "bart":
        return tf.BartForConditionalGeneration(tf.BartConfig(vocab_size=50, d_model=32, encoder_layers=1, decoder_layers=1,
                                                             encoder_attention_heads=2, decoder_attention_heads=2,
                                                             encoder_ffn_dim=64, decoder_ffn_dim=64))
    if family == "vit":
        return tf.ViTForImageClassification(tf.ViTConfig(image_size=16, patch_size=8, num_labels=3, **small))
    raise ValueError(family)


@pytest.mark.parametrize("family,expected", [
    ("roberta", {"query", "value"}), ("deberta-v2", {"query_proj", "value_proj"}), ("t5", {"q", "v"}),
    ("bart", {"q_proj", "v_proj"}), ("vit", {"q_proj", "v_proj"}),
])
def test_transformers_families(family: str, expected: set[str]) -> None:
    model = tiny(family)
    targets = lora_targets(model, ["classifier"])
    assert {t.rsplit(".", 1)[-1] for t in targets} == expected, targets


class Detector(torch.nn.Module):
    """The shape of an mmdet / mmpose model: backbone, neck, a head with shared convs and predictors."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
        self.neck = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 1), torch.nn.GroupNorm(2, 8))
        self.bbox_head = torch.nn.ModuleDict({"cls_convs": torch.nn.Conv2d(8, 8, 3), "cls": torch.nn.Conv2d(8, 4, 1)})


def test_detectors_adapt_everything_but_their_predictors() -> None:
    """The task's head is its predictors: a head's shared convs are adapted like backbone and neck."""
    model = Detector()
    assert lora_targets(model, ["bbox_head.cls"]) == ["backbone.0", "neck.0", "bbox_head.cls_convs"]
    assert ssf_targets(model, ["bbox_head.cls"]) == ["backbone.0", "backbone.1", "neck.0", "neck.1",
                                                     "bbox_head.cls_convs"]


def test_tied_head_is_never_a_target() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=1, n_head=2))
    assert "lm_head" not in ssf_targets(model, [])
    assert all(t.endswith("c_attn") for t in lora_targets(model, []))

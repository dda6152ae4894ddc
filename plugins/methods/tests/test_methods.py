"""full and lora on a tiny BERT classifier and on a plain torch model: what trains, what changes
after a step, merge equality, and target errors."""

from __future__ import annotations

import pytest
import torch
from adapt import ConfigError
from adapt.testing import check_method, method_run, tiny_bert
from adapt_methods.full import FullMethod
from adapt_methods.lora import LoraMethod, LoraParams


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_bert(tmp_path_factory.mktemp("bert"))


@pytest.fixture
def bert_classifier(bert_dir: str):  # noqa: ANN201
    from transformers import AutoModelForSequenceClassification

    def make():  # noqa: ANN202
        model = AutoModelForSequenceClassification.from_pretrained(bert_dir, num_labels=3)
        ids = torch.randint(5, 40, (4, 9))
        return model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    return make


class TinyNet(torch.nn.Module):
    """Not a transformers model: methods must work on any module."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16))
        self.head = torch.nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(x)))


def make_tinynet():  # noqa: ANN201
    return TinyNet(), {"x": torch.randn(5, 6)}


def test_full_trains_everything(bert_classifier) -> None:
    report = check_method(FullMethod(), bert_classifier, head_modules=["classifier"])
    model, _ = bert_classifier()
    assert len(report["trainable"]) == len(list(model.parameters()))


def test_lora_trains_adapters_and_head_only_and_merges(bert_classifier) -> None:
    params = LoraParams(init_lora_weights=False)
    report = check_method(LoraMethod(), bert_classifier, head_modules=["classifier"], params=params)
    trainable = report["trainable"]
    assert trainable and all("lora_" in n or ".classifier." in n for n in trainable), trainable
    # peft's BERT default targets query and value
    assert any("query.lora_A" in n for n in trainable) and any("value.lora_B" in n for n in trainable)
    assert not any("key.lora" in n for n in trainable)
    assert any(".classifier." in n for n in trainable)
    assert report["merge_difference"] is not None and report["merge_difference"] <= 1e-4


def test_lora_on_a_plain_torch_model(tmp_path) -> None:
    report = check_method(LoraMethod(), make_tinynet, head_modules=["head"], params=LoraParams(init_lora_weights=False))
    assert any("body.0.lora_A" in n for n in report["trainable"])
    assert any("head" in n and "lora" not in n for n in report["trainable"])


def test_user_targets_are_honoured_and_bad_ones_list_candidates(bert_classifier) -> None:
    model, _ = bert_classifier()
    adapted = LoraMethod().apply(model, LoraParams(target_modules=["key"]), method_run(["classifier"]))
    names = [n for n, p in adapted.named_parameters() if p.requires_grad]
    assert any("key.lora_A" in n for n in names) and not any("query.lora" in n for n in names)
    model, _ = bert_classifier()
    with pytest.raises(ConfigError) as err:
        LoraMethod().apply(model, LoraParams(target_modules=["qkv_proj"]), method_run(["classifier"]))
    assert "qkv_proj" in str(err.value) and "query" in str(err.value) and "dense" in str(err.value)


def test_unmerged_lora_is_kept_apart(bert_classifier) -> None:
    model, _ = bert_classifier()
    adapted = LoraMethod().apply(model, LoraParams(), method_run(["classifier"]))
    assert LoraMethod().merge(adapted, LoraParams(merge_weights=False)) is None

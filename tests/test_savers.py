"""The core's savers: each saved model reloads and gives the same outputs."""

from __future__ import annotations

import pytest
import torch
from adapt import ConfigError, LoadedModel
from adapt.builtins import SavePretrainedSaver
from adapt.plugins import get_registry
from adapt.testing import check_saver, tiny_bert


@pytest.fixture(scope="module")
def make_classifier(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    from transformers import AutoModelForSequenceClassification

    folder = tiny_bert(tmp_path_factory.mktemp("bert"))

    def make():  # noqa: ANN202
        model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=3)
        ids = torch.randint(5, 40, (2, 7))
        return model, {"input_ids": ids}

    return make


@pytest.mark.parametrize("name", ["state_dict", "safetensors", "full_torch_model", "save_pretrained"])
def test_saver_round_trip(name: str, make_classifier, tmp_path) -> None:
    check_saver(get_registry().get("saver", name), make_classifier, tmp_path)


def test_save_pretrained_refuses_a_plain_module_before_training() -> None:
    with pytest.raises(ConfigError, match="choose safetensors or state_dict"):
        SavePretrainedSaver().check(LoadedModel(torch.nn.Linear(2, 2)))


def test_state_dict_loading_is_weights_only(tmp_path) -> None:
    class Evil:
        def __reduce__(self):  # noqa: ANN204
            return (print, ("unpickled!",))

    torch.save({"weight": Evil()}, tmp_path / "model_state_dict.pt")
    with pytest.raises(Exception, match="Weights only load failed|Unsupported global"):
        get_registry().get("saver", "state_dict").load(str(tmp_path), like=torch.nn.Linear(1, 1))

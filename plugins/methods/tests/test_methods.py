"""Every method on a tiny BERT classifier, tiny causal LMs (GPT-2's Conv1D, Llama) and a plain
torch CNN: the right parameters train and only those change, the loss falls, an unmerged
adapter reloads exactly, a merged model gives the same outputs; and the errors users meet."""

from __future__ import annotations

import re

import pytest
import torch
from adapt import ConfigError
from adapt.testing import check_method, method_run, tiny_bert
from adapt_methods import METHODS
from adapt_methods.common import quantized_kind

BY_NAME = {m.name: m() for m in METHODS}


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_bert(tmp_path_factory.mktemp("bert"), hidden_size=64)


def bert_factory(bert_dir: str, method, params):  # noqa: ANN001, ANN201
    from transformers import AutoModelForSequenceClassification

    def make():  # noqa: ANN202
        model = AutoModelForSequenceClassification.from_pretrained(bert_dir, num_labels=3,
                                                                   **method.load_options(params))
        ids = torch.randint(5, 40, (4, 9), generator=torch.Generator().manual_seed(0))
        return model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    return make


def causal_factory(family: str, method, params):  # noqa: ANN001, ANN201
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    def make():  # noqa: ANN202
        torch.manual_seed(0)
        if family == "gpt2":
            model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2))
        else:
            model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                                 num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                                                 max_position_embeddings=32))
        ids = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(0))
        return model, {"input_ids": ids}

    return make


class TinyCNN(torch.nn.Module):
    """A plain torch CNN (conv, batch norm, a depthwise conv, a linear head): no transformers."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
        self.depthwise = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.block = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU())
        self.fc = torch.nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.block(self.depthwise(self.stem(x))).mean(dim=(2, 3)))


def cnn_factory(method, params):  # noqa: ANN001, ANN201
    def make():  # noqa: ANN202
        torch.manual_seed(0)
        return TinyCNN(), {"x": torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))}

    return make


ADAPTER = re.compile(r"lora_|ssf_")


def only(trainable: list[str], *patterns: str) -> bool:
    return all(any(re.search(p, n) for p in patterns) for n in trainable)


# method -> what may train on a model whose head is `head`
def expected_patterns(method: str, head: str) -> tuple[str, ...]:
    if method == "full":
        return (".",)
    if method == "last_layer":
        return (rf"(^|\.){head}\.",)
    return (r"lora_", r"ssf_", rf"(^|\.){head}\.")


FP_METHODS = ["full", "last_layer", "lora", "dora", "ssf"]


@pytest.mark.parametrize("name", FP_METHODS)
def test_bert_classifier(name: str, bert_dir: str) -> None:
    method = BY_NAME[name]
    params = method.Params(**({"init_lora_weights": False} if "lora" in method.Params.model_fields
                              and name in ("lora", "dora") else {}))
    report = check_method(method, bert_factory(bert_dir, method, params), head_modules=["classifier"], params=params)
    assert only(report["trainable"], *expected_patterns(name, "classifier")), report["trainable"]
    assert any("classifier" in n for n in report["trainable"])
    if name in ("lora", "dora"):  # peft's BERT defaults: query and value
        assert any("query.lora_A" in n for n in report["trainable"]) and not any("key.lora" in n for n in report["trainable"])
    if name == "dora":
        assert any("lora_magnitude_vector" in n for n in report["trainable"])
    if name == "ssf":
        assert any("LayerNorm.ssf_scale" in n for n in report["trainable"])
    assert report["merge_difference"] is not None and report["merge_difference"] <= 1e-4


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("name", ["lora", "dora", "ssf", "last_layer"])
def test_causal_lm(name: str, family: str) -> None:
    method = BY_NAME[name]
    overrides = {"init_lora_weights": False} if name in ("lora", "dora") else {}
    overrides |= {"head_modules": ["lm_head"]} if name == "last_layer" else {}
    params = method.Params(**overrides)
    # a causal LM's head is tied to its input embeddings: the task says "no separate head"
    report = check_method(method, causal_factory(family, method, params), head_modules=[], params=params)
    if name in ("lora", "dora"):
        target = "c_attn" if family == "gpt2" else "q_proj"
        assert all("lora_" in n for n in report["trainable"]) and any(target in n for n in report["trainable"])
    if name == "ssf" and family == "llama":  # Llama's Linear layers have no bias to take the shift
        assert report["merge_difference"] is None
    elif name != "last_layer":
        assert report["merge_difference"] <= 1e-4  # GPT-2's Conv1D needs fan_in_fan_out: set automatically


@pytest.mark.parametrize("name", FP_METHODS)
def test_plain_torch_cnn(name: str) -> None:
    method = BY_NAME[name]
    params = method.Params(**({"init_lora_weights": False} if name in ("lora", "dora") else {}))
    report = check_method(method, cnn_factory(method, params), params=params)  # head found: the last layer, fc
    assert only(report["trainable"], *expected_patterns(name, "fc")), report["trainable"]
    if name in ("lora", "dora"):
        assert any("stem.0.lora_A" in n for n in report["trainable"])
        assert not any("depthwise" in n for n in report["trainable"]), "grouped convs are not default targets"
    if name == "ssf":
        assert any("stem.1.ssf_scale" in n for n in report["trainable"])  # after batch norm
        assert any("depthwise.ssf_scale" in n for n in report["trainable"])  # folds into grouped convs too
    assert report["merge_difference"] <= 1e-4


@pytest.mark.parametrize("name,bits", [("qlora", 4), ("qdora", 4), ("qssf", 4), ("qlora", 8), ("qssf", 8),
                                       ("lora", 4)])
def test_quantized_forms_train_on_cpu(name: str, bits: int, bert_dir: str) -> None:
    method = BY_NAME[name]
    params = method.Params(**{f"load_in_{bits}bit": True, "bnb_4bit_compute_dtype": "float32"})
    make = bert_factory(bert_dir, method, params)
    model = method.apply(make()[0], params, method_run(["classifier"]))  # quantized by the loader, or by apply
    assert quantized_kind(model) == f"{bits}bit"
    report = check_method(method, make, head_modules=["classifier"], params=params)
    assert only(report["trainable"], r"lora_", r"ssf_", r"classifier\.")
    assert report["merge_difference"] is None, "a quantized base is saved unmerged"


@pytest.mark.parametrize("name", ["qlora", "qssf"])
def test_quantize_embeddings_stores_frozen_tables_in_4_bit(name: str, bert_dir: str) -> None:
    method = BY_NAME[name]
    plain = method.Params(bnb_4bit_compute_dtype="float32")
    params = method.Params(bnb_4bit_compute_dtype="float32", quantize_embeddings=True)
    make = bert_factory(bert_dir, method, params)
    model = method.apply(make()[0], params, method_run(["classifier"]))
    tables = {n: type(m).__name__ for n, m in model.named_modules() if n.endswith("_embeddings")}
    assert tables and set(tables.values()) == {"FrozenEmbedding4bit"}, tables
    assert not any("_embeddings" in k for k in model.state_dict())  # rebuilt from the base on reload, never saved
    baseline = method.apply(make()[0], plain, method_run(["classifier"]))
    assert stored_bytes(model) < stored_bytes(baseline)
    report = check_method(method, make, head_modules=["classifier"], params=params)  # trains; adapter reloads exactly
    assert only(report["trainable"], r"lora_", r"ssf_", r"classifier\.")


def test_quantize_embeddings_needs_4_bit() -> None:
    with pytest.raises(ValueError, match="quantize_embeddings needs load_in_4bit"):
        BY_NAME["qlora"].Params(load_in_8bit=True, quantize_embeddings=True)


def test_quantized_form_quantizes_a_plain_torch_model() -> None:
    method = BY_NAME["qssf"]
    params = method.Params(bnb_4bit_compute_dtype="float32")

    class MLP(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
                                            torch.nn.ReLU(), torch.nn.Linear(64, 16))
            self.head = torch.nn.Linear(16, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.body(x))

    def make():  # noqa: ANN202
        torch.manual_seed(0)
        return MLP(), {"x": torch.randn(4, 64, generator=torch.Generator().manual_seed(0))}

    model = method.apply(make()[0], params, method_run(None))
    kinds = [type(m).__name__ for m in (model.body[0], model.body[2], model.body[4], model.head)]
    # the head stays full precision; so does a layer too narrow for bitsandbytes' CPU blocks
    assert kinds == ["Linear4bit", "Linear4bit", "Linear", "Linear"], kinds
    check_method(method, make, params=params)


def test_q_forms_mean_load_in_4bit() -> None:
    assert BY_NAME["qlora"].Params().load_in_4bit and BY_NAME["qssf"].Params().load_in_4bit
    assert BY_NAME["lora"].Params(load_in_4bit=True).quantized
    eight = BY_NAME["qlora"].Params(load_in_8bit=True)
    assert eight.load_in_8bit and not eight.load_in_4bit
    with pytest.raises(ValueError, match="exclude each other"):
        BY_NAME["lora"].Params(load_in_4bit=True, load_in_8bit=True)


def test_dora_on_8_bit_fails_clearly(bert_dir: str) -> None:
    from pydantic import ValidationError

    method = BY_NAME["qdora"]
    with pytest.raises(ValidationError, match="DoRA on an 8-bit base does not work"):  # so adapt config validate says it
        method.Params(load_in_8bit=True)
    params = method.Params.model_construct(load_in_4bit=False, load_in_8bit=True)  # a base quantized to 8 bit anyway
    model, _ = bert_factory(bert_dir, method, params)()
    with pytest.raises(ConfigError, match="DoRA on an 8-bit base does not work"):
        method.apply(model, params, method_run(["classifier"]))


def test_user_targets_are_honoured_and_bad_ones_list_candidates(bert_dir: str) -> None:
    for name in ("lora", "ssf"):
        method = BY_NAME[name]
        model, _ = bert_factory(bert_dir, method, method.Params())()
        adapted = method.apply(model, method.Params(target_modules=["key"]), method_run(["classifier"]))
        names = [n for n, p in adapted.named_parameters() if p.requires_grad]
        assert any(re.search(r"key\.(lora_A|ssf_scale)", n) for n in names), names
        assert not any(re.search(r"query\.(lora|ssf)", n) for n in names)
        model, _ = bert_factory(bert_dir, method, method.Params())()
        with pytest.raises(ConfigError) as err:
            method.apply(model, method.Params(target_modules=["qkv_proj"]), method_run(["classifier"]))
        assert "qkv_proj" in str(err.value) and "query" in str(err.value) and "dense" in str(err.value)


def test_wrong_head_override_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="classifier is not a module of TinyCNN.*fc"):
        BY_NAME["last_layer"].apply(TinyCNN(), BY_NAME["last_layer"].Params(head_modules=["classifier"]), method_run())


def test_lora_on_grouped_conv_is_kept_unmerged() -> None:
    method = BY_NAME["lora"]
    params = method.Params(target_modules=["depthwise"], r=8)
    model = method.apply(TinyCNN(), params, method_run(["fc"]))
    assert method.merge(model, params) is None


def stored_bytes(model) -> int:  # noqa: ANN001 - the weights and buffers as stored (4-bit weights packed)
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


class WideCNN(torch.nn.Module):
    """Convolutions wide enough that rank 8 would give them large adapters, and a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.narrow = torch.nn.Conv2d(3, 16, 3, padding=1)  # 432 weights: rank 8 would add 8 * (27 + 16) = 344
        self.wide = torch.nn.Conv2d(16, 256, 3, padding=1)  # 36,864 weights: fits rank 2 at a 2% share
        self.proj = torch.nn.Linear(256, 256)
        self.fc = torch.nn.Linear(256, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.proj(self.wide(self.narrow(x)).mean(dim=(2, 3))))


@pytest.mark.parametrize("name", ["lora", "dora"])
def test_convolution_ranks_are_capped_by_their_share_and_keep_the_scale(name: str) -> None:
    """max_conv_share lowers each convolution's rank to fit its share of the layer (alpha follows, so
    alpha / r stays); Linear layers keep r; 0 turns the cap off; merging stays exact."""
    method = BY_NAME[name]
    params = method.Params(r=8, alpha=16, max_conv_share=0.02, init_lora_weights=False)
    model = method.apply(WideCNN(), params, method_run(["fc"]))
    layers = dict(model.named_modules())
    ranks = {n.removeprefix("base_model.model."): m.r["default"] for n, m in layers.items() if hasattr(m, "lora_A")}
    scales = {n.removeprefix("base_model.model."): m.scaling["default"] for n, m in layers.items()
              if hasattr(m, "lora_A")}
    # share * weights / (in*k*k + out) per rank: narrow 0.02 * 432 / 43 -> 1 (the floor); wide 0.02 * 36864 / 400 -> 1
    assert ranks == {"narrow": 1, "wide": 1, "proj": 8}
    assert set(scales.values()) == {16 / 8}
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    uncapped = method.apply(WideCNN(), method.Params(r=8, max_conv_share=0), method_run(["fc"]))
    assert {m.r["default"] for m in uncapped.modules() if hasattr(m, "lora_A")} == {8}
    assert trainable < sum(p.numel() for p in uncapped.parameters() if p.requires_grad)
    def make() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
        torch.manual_seed(0)  # the same base weights each time
        return WideCNN(), {"x": torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))}

    report = check_method(method, make, head_modules=["fc"],
                          params=method.Params(r=8, alpha=16, max_conv_share=0.02))
    assert report["merge_difference"] <= 1e-4


@pytest.mark.parametrize("name", ["lora", "dora", "ssf"])
def test_exclude_modules_are_never_adapted(name: str) -> None:
    """exclude_modules takes names or suffixes out of the default targets and out of your own; one
    that matches nothing is an error naming the candidates."""
    from adapt import ConfigError

    method = BY_NAME[name]
    marker = "ssf_scale" if name == "ssf" else "lora_A"
    model = method.apply(WideCNN(), method.Params(exclude_modules=["wide"]), method_run(["fc"]))
    adapted = {n.removeprefix("base_model.model.").split(".")[0] for n, _ in model.named_parameters() if marker in n}
    assert adapted == {"narrow", "proj"}
    own = method.apply(WideCNN(), method.Params(target_modules=["narrow", "wide"], exclude_modules=["narrow"]),
                       method_run(["fc"]))
    assert {n.removeprefix("base_model.model.").split(".")[0] for n, _ in own.named_parameters() if marker in n} == {"wide"}
    with pytest.raises(ConfigError, match="exclude_modules: nope match no module.*narrow"):
        method.apply(WideCNN(), method.Params(exclude_modules=["nope"]), method_run(["fc"]))


# ------------------------------------------------------------------------------------------
# peft's other adapter families

ADAPTERS = ["ia3", "loha", "lokr", "oft", "boft", "vera", "adalora", "fourierft", "hra", "ln_tuning"]
# what each adapts: Linear (BERT, Llama), GPT-2's Conv1D, Conv2d (a CNN; its only Linear is the head)
ADAPTS = {"ia3": "lcv", "loha": "lv", "lokr": "lv", "oft": "l", "boft": "lv", "vera": "lc", "adalora": "lc",
          "fourierft": "lc", "hra": "lv", "ln_tuning": "lcv"}
# small enough for the tiny models' layers (peft's defaults are sized for real ones); AdaLoRA starts at E = 0 and
# GPT-2 trains with dropout on: a larger scale lets 8 steps show through the noise
TINY = {"fourierft": {"n_frequency": 64}, "oft": {"oft_block_size": 4}, "vera": {"r": 16}, "adalora": {"tinit": 2, "lora_alpha": 64}}


def adapter_params(name: str, **extra: object):  # noqa: ANN201
    method = BY_NAME[name]
    init = {"init_weights": False} if "init_weights" in method.Params.model_fields and name != "fourierft" else {}
    init |= {"init_ia3_weights": False} if name == "ia3" else {}
    return method.Params(**{**init, **TINY.get(name, {}), **extra})


def new_parameters(report: dict, base: torch.nn.Module, head: str) -> None:
    """Only the method's own parameters and the head train (no name prefixes assumed)."""
    names = {n for n, _ in base.named_parameters()}
    for name in report["trainable"]:
        plain = name.removeprefix("base_model.model.")
        assert plain not in names or plain.startswith(head + ".") or f".{head}." in name, name


@pytest.mark.parametrize("name", ADAPTERS)
def test_adapters_on_bert(name: str, bert_dir: str) -> None:
    method = BY_NAME[name]
    params = adapter_params(name)
    make = bert_factory(bert_dir, method, params)
    report = check_method(method, make, head_modules=["classifier"], params=params)
    new_parameters(report, make()[0], "classifier")
    assert any("classifier" in n for n in report["trainable"])
    assert report["merge_difference"] is not None and report["merge_difference"] <= 1e-4


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("name", ADAPTERS)
def test_adapters_on_causal_lms(name: str, family: str) -> None:
    method = BY_NAME[name]
    params = adapter_params(name)
    make = causal_factory(family, method, params)
    if family == "gpt2" and "c" not in ADAPTS[name]:
        with pytest.raises(ConfigError, match=rf"{name} can adapt.*Conv1D|found no layer of GPT2LMHeadModel that {name}"):
            method.apply(make()[0], params, method_run([]))
        return
    report = check_method(method, make, head_modules=[], params=params)
    new_parameters(report, make()[0], "lm_head")
    assert report["merge_difference"] is not None and report["merge_difference"] <= 1e-4


@pytest.mark.parametrize("name", ADAPTERS)
def test_adapters_on_a_plain_torch_cnn(name: str) -> None:
    method = BY_NAME[name]
    params = adapter_params(name)
    make = cnn_factory(method, params)
    if "v" not in ADAPTS[name]:  # Linear-only methods: the CNN's only Linear is its head
        with pytest.raises(ConfigError, match=rf"found no layer of TinyCNN that {name} can adapt"):
            method.apply(make()[0], params, method_run(None))
        return
    report = check_method(method, make, params=params)
    new_parameters(report, make()[0], "fc")
    assert any(n.startswith(("base_model.model.stem", "base_model.model.block")) for n in report["trainable"])
    assert report["merge_difference"] is not None and report["merge_difference"] <= 1e-4


def test_adalora_prunes_ranks_through_the_step_hook(bert_dir: str, tmp_path) -> None:  # noqa: ANN001
    """The engines call after_optimizer_step; AdaLoRA then takes the run's step count as its schedule."""
    method = BY_NAME["adalora"]
    params = method.Params(init_r=6, target_r=2)
    report = check_method(method, bert_factory(bert_dir, method, params), head_modules=["classifier"], params=params,
                          steps=6)
    assert report["losses"][-1] < report["losses"][0]
    model, inputs = bert_factory(bert_dir, method, params)()
    model = method.apply(model, params, method_run(["classifier"]))
    model(**inputs).logits.sum().backward()  # the step hook reads the gradients
    method.after_optimizer_step(model, params, 0, 40)
    assert model.peft_config["default"].total_step == 40
    for step in range(1, 40):  # through the final allocation
        method.after_optimizer_step(model, params, step, 40)
    adalora = model.base_model
    # the allocated ranks are kept aside, so that every checkpoint keeps all ranks and reloads (HF's best checkpoint)
    assert model.peft_config["default"].rank_pattern is None and adalora.adapt_rank_pattern
    ranks = sum(sum(kept) for kept in adalora.adapt_rank_pattern.values())
    assert ranks <= params.target_r * len(adalora.adapt_rank_pattern)
    from peft import PeftModel

    model.save_pretrained(tmp_path / "checkpoint")
    fresh = method.apply(bert_factory(bert_dir, method, params)()[0], params, method_run(["classifier"]))
    fresh.load_adapter(str(tmp_path / "checkpoint"), "default")
    assert isinstance(fresh, PeftModel)
    with pytest.raises(ConfigError, match="leave no budgeting phase in this run's 3 steps"):
        method.after_optimizer_step(model, method.Params(tinit=5), 0, 3)


def test_generic_peft_method_takes_any_config_type(bert_dir: str) -> None:
    from pydantic import ValidationError

    method = BY_NAME["peft"]
    params = method.Params(peft_type="randlora", config={"r": 4, "init_weights": True})
    assert params.peft_type == "RandLoraConfig"
    report = check_method(method, bert_factory(bert_dir, method, params), head_modules=["classifier"], params=params)
    assert any("randlora" in n for n in report["trainable"])
    with pytest.raises(ValidationError, match="no config type 'nosuch'.*ia3"):
        method.Params(peft_type="nosuch")
    with pytest.raises(ValidationError, match="rank not a field of IA3Config"):
        method.Params(peft_type="IA3", config={"rank": 4})


def test_adapter_params_are_peft_s_names_and_defaults() -> None:
    """Each method's own parameters exist in its peft config, with peft's default where adapt keeps it."""
    import dataclasses

    import peft
    from adapt_methods.adapters import COMMON

    own_defaults = {("fourierft", "init_weights")}  # none differ today; listed here if one ever must
    for name in ADAPTERS:
        method = BY_NAME[name]
        fields = {f.name: f for f in dataclasses.fields(getattr(peft, method.config_class))}
        for field, info in method.Params.model_fields.items():
            if field in COMMON:
                continue
            assert field in fields, f"{name}.{field} is not a field of {method.config_class}"
            peft_default = fields[field].default
            if peft_default is not dataclasses.MISSING and (name, field) not in own_defaults:
                assert info.default == peft_default, (name, field, info.default, peft_default)


@pytest.mark.parametrize("init", ["pissa", "olora", "loftq"])
def test_lora_initialisations_keep_the_contract(init: str, bert_dir: str) -> None:
    """PiSSA / OLoRA move the principal part of each targeted weight into the adapter; LoftQ offsets a
    quantized base: all still train, reload exactly and merge to the adapted outputs."""
    method = BY_NAME["lora"]
    params = method.Params(init_lora_weights=init, loftq_bits=4)
    if init == "loftq" and not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="loftq needs a CUDA GPU"):
            method.apply(bert_factory(bert_dir, method, params)()[0], params, method_run(["classifier"]))
        return
    report = check_method(method, bert_factory(bert_dir, method, params), head_modules=["classifier"], params=params)
    assert report["merge_difference"] <= 1e-4


def test_rslora_scales_by_the_square_root_of_the_rank_and_patterns_set_ranks(bert_dir: str) -> None:
    method = BY_NAME["lora"]
    params = method.Params(r=16, alpha=8, use_rslora=True, rank_pattern={"value": 4}, alpha_pattern={"value": 2})
    model = method.apply(bert_factory(bert_dir, method, params)()[0], params, method_run(["classifier"]))
    layers = {n.removeprefix("base_model.model."): m for n, m in model.named_modules() if hasattr(m, "lora_A")}
    query, value = layers["bert.encoder.layer.0.attention.self.query"], layers["bert.encoder.layer.0.attention.self.value"]
    assert query.r["default"] == 16 and query.scaling["default"] == pytest.approx(8 / 16 ** 0.5)
    assert value.r["default"] == 4 and value.scaling["default"] == pytest.approx(2 / 4 ** 0.5)


def test_loraplus_ratio_is_a_learning_rate_multiplier_of_the_b_matrices() -> None:
    assert BY_NAME["lora"].learning_rate_multipliers(BY_NAME["lora"].Params(loraplus_lr_ratio=16)) == {"lora_B": 16}
    assert BY_NAME["lora"].learning_rate_multipliers(BY_NAME["lora"].Params()) == {}

"""peft's adapter families besides LoRA, each a method with peft's parameter names and defaults:
ia3, loha, lokr, oft, boft, vera, adalora, fourierft, hra, ln_tuning; and ``peft``, which takes
any peft config type by name with its fields, so a new peft release needs no adapt release.

They share LoRA's choice of targets (peft's table for the transformers family, else every layer of
a kind the method adapts outside the head: a CNN's or a detector's convolutions where the method
has Conv2d support), its exclude / modules_to_save / head handling, and peft's merge.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any, ClassVar

from adapt import ConfigError, Method, Params
from pydantic import Field, field_validator, model_validator

from adapt_methods.common import CONV_KINDS, LINEAR_KINDS, NORM_KINDS, head_of, in_any, kind, matches, tied
from adapt_methods.targets import lora_targets, peft_defaults, resolve_targets, without_excluded

log = logging.getLogger("adapt")
LINEAR = ("Linear",)
GPT2_CONV1D = ("Conv1D",)
COMMON = {"target_modules", "exclude_modules", "modules_to_save", "merge_weights", "head_modules"}


class PeftParams(Params):
    """What every peft adapter method takes besides its own parameters."""

    target_modules: list[str] | None = Field(
        None, description="Module names or name suffixes to adapt; None: peft's defaults for the transformers family, "
                          "else every layer of a kind the method adapts outside the head.")
    exclude_modules: list[str] = Field(default_factory=list, description="Module names or name suffixes never adapted "
                                                                         "(and what is inside them).")
    modules_to_save: list[str] = Field(default_factory=list, description="Further modules trained in full besides the head.")
    merge_weights: bool = Field(True, description="Fold the adapter into the base weights before saving.")
    head_modules: list[str] | None = Field(None, description="The head, trained in full (None: the task's, else found automatically).")


class PeftMethod(Method):
    """A peft adapter family as an adapt method: ``config_class`` is peft's config, ``kinds`` the
    layer kinds it adapts; the Params' own fields (all but PeftParams') are passed to it as named."""

    config_class: ClassVar[str] = ""
    kinds: ClassVar[tuple[str, ...]] = LINEAR
    Params = PeftParams

    def peft_type(self, params: Any) -> str:
        return self.config_class.removesuffix("Config").upper()

    def config(self, params: Any) -> tuple[type, dict[str, Any]]:
        """peft's config class and the fields this run gives it (besides targets and saved modules)."""
        import peft

        return getattr(peft, self.config_class), params.model_dump(exclude=COMMON)

    def layer_kinds(self, model: Any) -> tuple[str, ...]:
        """The layer kinds (class names) of ``model`` the method adapts."""
        return self.kinds

    def fits(self, module: Any, params: Any) -> bool:
        """Whether a default target suits the method's settings (e.g. its block size divides the layer)."""
        return True

    def default_targets(self, model: Any, head: list[str], params: Any) -> list[str]:
        targets = lora_targets(model, head, self.layer_kinds(model), self.peft_type(params), self.name)
        unfit = [t for t in targets if not self.fits(model.get_submodule(t), params)]
        if unfit:
            log.info("%s: skipped %d layer(s) its settings do not fit: %s", self.name, len(unfit),
                     ", ".join(unfit[:3]) + (" ..." if len(unfit) > 3 else ""))
        targets = [t for t in targets if t not in unfit]
        if not targets:
            raise ConfigError(f"method {self.name}: no layer of {type(model).__name__} outside its head fits its "
                              "settings; set method_params.target_modules or change the method's parameters")
        return targets

    def apply(self, model: Any, params: Any, run: Any) -> Any:
        from peft import get_peft_model

        head, kinds = head_of(model, run, params.head_modules), self.layer_kinds(model)
        if params.target_modules:
            targets = resolve_targets(model, params.target_modules, kinds)
        else:
            targets = self.default_targets(model, head, params)
        targets = without_excluded(model, targets, params.exclude_modules, kinds)
        if not targets:
            raise ConfigError("method_params.exclude_modules: every target is excluded")
        cls, fields = self.config(params)
        if "fan_in_fan_out" in {f.name for f in dataclasses.fields(cls)} and any(
                kind(model.get_submodule(t)) == "Conv1D" for t in targets):
            fields["fan_in_fan_out"] = True  # GPT-2's Conv1D stores weights as (in, out)
        fields.update(self.extra_fields(model, targets, params))
        try:
            config = cls(target_modules=exactly(targets), modules_to_save=[*head, *params.modules_to_save] or None, **fields)
            return get_peft_model(model, config)
        except (ValueError, TypeError, NotImplementedError) as exc:  # peft's checks of a target or a setting
            raise ConfigError(f"method {self.name}: peft cannot adapt these targets with these settings: "
                              f"{str(exc).splitlines()[0]}") from None

    def extra_fields(self, model: Any, targets: list[str], params: Any) -> dict[str, Any]:
        return {}

    def merge(self, model: Any, params: Any) -> Any:
        if not params.merge_weights:
            return None
        return unwrap_saved_modules(model.merge_and_unload())


def exactly(names: list[str]) -> str:
    """peft's form for "these modules and no other": a regex it matches against whole names (a list
    matches name suffixes too, so a target ``norm`` would also take every ``*.norm``)."""
    return "|".join(re.escape(n) for n in names)


def unwrap_saved_modules(model: Any) -> Any:
    """Put the trained copy of each module peft trained in full (the head) in its place: some peft
    types' merge_and_unload (ln_tuning's) leave peft's ModulesToSaveWrapper behind."""
    for name, module in list(model.named_modules()):
        if kind(module) == "ModulesToSaveWrapper":
            model.set_submodule(name, module.modules_to_save[module.active_adapters[0]])
    return model


# ------------------------------------------------------------------------------------------
# The families


class IA3Params(PeftParams):
    feedforward_modules: list[str] | None = Field(
        None, description="Targets whose input (not output) is scaled, as IA3 does for feed-forward layers; None: "
                          "peft's table for the transformers family, else none.")
    init_ia3_weights: bool = Field(True, description="Start the scaling vectors at 1 (the pretrained model).")


class IA3Method(PeftMethod):
    name = "ia3"
    description = "(IA)^3 (Liu et al. 2022): learned vectors scaling the targeted layers' activations, plus the head."
    Params = IA3Params
    config_class = "IA3Config"
    kinds = LINEAR + GPT2_CONV1D + CONV_KINDS
    training_defaults = {"*": {"learning_rate": 3e-3}}

    def extra_fields(self, model: Any, targets: list[str], params: IA3Params) -> dict[str, Any]:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as table

        if params.feedforward_modules is not None:
            forward = resolve_targets(model, params.feedforward_modules, self.kinds)
        else:
            model_type = getattr(getattr(model, "config", None), "model_type", None)
            forward = [t for t in targets if matches(t, table.get(model_type) or [])]
        if not set(forward) <= set(targets):
            raise ConfigError("method_params.feedforward_modules must be among the targets; not targeted: "
                              + ", ".join(sorted(set(forward) - set(targets))[:3]))
        return {"feedforward_modules": exactly(forward) if forward else []}


class LycorisParams(PeftParams):
    r: int = Field(8, ge=1, description="Rank of the decomposition.")
    alpha: float = Field(8, gt=0, description="Scaling of the update, applied as alpha / r.")
    rank_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout of each rank during training.")
    module_dropout: float = Field(0.0, ge=0, lt=1, description="Probability of switching the whole adapter off in a step.")
    use_effective_conv2d: bool = Field(False, description="Decompose k x k convolutions as in FedPara / LyCORIS "
                                                          "(Tucker), for convolutions larger than 1 x 1.")
    init_weights: bool = Field(True, description="Start from the pretrained model (one factor zero); false: random.")


class LoHaMethod(PeftMethod):
    name = "loha"
    description = "LoHa (LyCORIS): a low-rank Hadamard-product update of the targeted layers, plus the head."
    Params = LycorisParams
    config_class = "LoHaConfig"
    kinds = LINEAR + CONV_KINDS
    training_defaults = {"*": {"learning_rate": 3e-3}}


class LoKrParams(LycorisParams):
    decompose_both: bool = Field(False, description="Decompose the left Kronecker factor too.")
    decompose_factor: int = Field(-1, description="Kronecker factor size (-1: as square as the layer allows).")
    rank_dropout_scale: bool = Field(False, description="Rescale the rank dropout as dropout layers do.")


class LoKrMethod(PeftMethod):
    name = "lokr"
    description = "LoKr (LyCORIS): a Kronecker-product update of the targeted layers, plus the head."
    Params = LoKrParams
    config_class = "LoKrConfig"
    kinds = LINEAR + CONV_KINDS
    training_defaults = {"*": {"learning_rate": 3e-3}}


class OFTParams(PeftParams):
    r: int = Field(0, ge=0, description="Number of OFT blocks per layer (0: set by oft_block_size; set one of the two).")
    oft_block_size: int = Field(32, ge=0, description="Size of each orthogonal block (0: set by r).")
    module_dropout: float = Field(0.0, ge=0, lt=1, description="Probability of switching a block off in a step.")
    coft: bool = Field(False, description="Constrained OFT: keep the rotation within eps of the identity.")
    eps: float = Field(6e-5, gt=0, description="COFT's bound.")
    block_share: bool = Field(False, description="One block shared by all blocks of a layer.")
    use_cayley_neumann: bool = Field(True, description="Approximate the Cayley transform by a Neumann series (faster).")
    num_cayley_neumann_terms: int = Field(5, ge=1, description="Terms of that series.")
    init_weights: bool = Field(True, description="Start at the identity rotation (the pretrained model).")

    @model_validator(mode="after")
    def _one_size(self) -> OFTParams:
        if (self.r == 0) == (self.oft_block_size == 0):
            raise ValueError("set exactly one of r and oft_block_size (the other 0)")
        return self


def in_dim(module: Any) -> int:
    """A layer's input size as OFT / BOFT see it: in_features, or in_channels * kernel area."""
    if hasattr(module, "in_features"):
        return int(module.in_features)
    weight = module.weight
    return int(weight.shape[1] * weight[0, 0].numel())


class OFTMethod(PeftMethod):
    """Linear layers only: peft 0.21.2's OFT on a Conv2d fails on feature maps smaller than the kernel
    ("maximum size for tensor at dimension 2") and its merge changes the outputs (measured: by ~5 on a
    random OFT); convolutions are skipped, and said. BOFT and HRA adapt convolutions."""

    name = "oft"
    description = "OFT (Qiu et al. 2023): a learned block-diagonal orthogonal rotation of the targeted weights, plus the head."
    Params = OFTParams
    config_class = "OFTConfig"
    kinds = LINEAR
    training_defaults = {"*": {"learning_rate": 1e-3}}

    def fits(self, module: Any, params: OFTParams) -> bool:
        size = params.oft_block_size or params.r
        return in_dim(module) % size == 0 and in_dim(module) >= size


class BOFTParams(PeftParams):
    boft_block_size: int = Field(4, ge=0, description="Size of each butterfly block (0: set by boft_block_num).")
    boft_block_num: int = Field(0, ge=0, description="Number of blocks per layer (0: set by boft_block_size).")
    boft_n_butterfly_factor: int = Field(1, ge=1, description="Butterfly factors (1: plain block-diagonal OFT).")
    boft_dropout: float = Field(0.0, ge=0, lt=1, description="Multiplicative dropout of the blocks.")
    init_weights: bool = Field(True, description="Start at the identity (the pretrained model).")

    @model_validator(mode="after")
    def _one_size(self) -> BOFTParams:
        if (self.boft_block_size == 0) == (self.boft_block_num == 0):
            raise ValueError("set exactly one of boft_block_size and boft_block_num (the other 0)")
        return self


class BOFTMethod(PeftMethod):
    name = "boft"
    description = "BOFT (Liu et al. 2024): an orthogonal update factored as a butterfly of sparse blocks, plus the head."
    Params = BOFTParams
    config_class = "BOFTConfig"
    kinds = LINEAR + CONV_KINDS
    training_defaults = {"*": {"learning_rate": 1e-3}}

    def fits(self, module: Any, params: BOFTParams) -> bool:
        n = in_dim(module)
        if params.boft_block_size:
            blocks = n // params.boft_block_size
            return n % params.boft_block_size == 0 and blocks % (2 ** (params.boft_n_butterfly_factor - 1)) == 0
        return n % params.boft_block_num == 0


class VeraParams(PeftParams):
    r: int = Field(256, ge=1, description="Rank of the shared random projections (VeRA uses a high one).")
    projection_prng_key: int = Field(0, description="Seed of the shared random projections.")
    save_projection: bool = Field(True, description="Save the projections with the adapter (else regenerated from the seed).")
    vera_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter's input.")
    d_initial: float = Field(0.1, gt=0, description="Initial value of the d scaling vectors.")


class VeraMethod(PeftMethod):
    name = "vera"
    description = "VeRA (Kopiczko et al. 2024): frozen shared random projections, trained scaling vectors, plus the head."
    Params = VeraParams
    config_class = "VeraConfig"
    kinds = LINEAR + GPT2_CONV1D
    training_defaults = {"*": {"learning_rate": 1e-2}}


class AdaLoraParams(PeftParams):
    init_r: int = Field(12, ge=1, description="Starting rank of each adapter.")
    target_r: int = Field(8, ge=1, description="Average rank kept after the budget is allocated.")
    lora_alpha: float = Field(8, gt=0, description="Scaling of the update.")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter's input.")
    tinit: int = Field(0, ge=0, description="Steps of warm-up before the ranks are pruned.")
    tfinal: int = Field(0, ge=0, description="Steps at the end trained with the final ranks.")
    deltaT: int = Field(1, ge=1, description="Steps between two budget allocations.")
    beta1: float = Field(0.85, ge=0, le=1, description="EMA factor of the importance (sensitivity) scores.")
    beta2: float = Field(0.85, ge=0, le=1, description="EMA factor of their uncertainty.")
    orth_reg_weight: float = Field(0.5, ge=0, description="Weight of the orthogonality regularisation of P and Q.")
    total_step: int | None = Field(None, ge=1, description="Steps of the budget schedule; None: the run's number of "
                                                           "optimizer steps.")

    @model_validator(mode="after")
    def _schedule(self) -> AdaLoraParams:
        if self.target_r > self.init_r:
            raise ValueError(f"target_r ({self.target_r}) cannot exceed init_r ({self.init_r})")
        if self.total_step is not None and self.tinit >= self.total_step - self.tfinal:
            raise ValueError(f"tinit ({self.tinit}) + tfinal ({self.tfinal}) leave no budgeting phase in total_step "
                             f"({self.total_step})")
        return self


class AdaLoraMethod(PeftMethod):
    """AdaLoRA prunes ranks as it trains: after each optimizer step (gradients still there) the engine
    calls :meth:`after_optimizer_step`, which updates the importance scores and masks ranks."""

    name = "adalora"
    description = "AdaLoRA (Zhang et al. 2023): SVD-form LoRA whose rank budget is reallocated during training, plus the head."
    Params = AdaLoraParams
    config_class = "AdaLoraConfig"
    kinds = LINEAR + GPT2_CONV1D
    training_defaults = {"*": {"learning_rate": 1e-3}}

    def config(self, params: AdaLoraParams) -> tuple[type, dict[str, Any]]:
        cls, fields = super().config(params)
        if fields["total_step"] is None:  # set to the run's steps at the first step; a placeholder until then
            fields["total_step"] = params.tinit + params.tfinal + 1
        return cls, fields

    def after_optimizer_step(self, model: Any, params: AdaLoraParams, step: int, total_steps: int) -> None:
        adalora = next((m for m in model.modules() if kind(m) == "AdaLoraModel"), None)
        if adalora is None:
            return
        config = adalora.peft_config[adalora.trainable_adapter_name]
        if params.total_step is None and config.total_step != total_steps:
            if params.tinit >= total_steps - params.tfinal:
                raise ConfigError(f"method_params: adalora's tinit ({params.tinit}) + tfinal ({params.tfinal}) leave no "
                                  f"budgeting phase in this run's {total_steps} steps")
            config.total_step = total_steps
        # peft keeps the allocated ranks in the config, and a checkpoint saved with them is cut to those
        # ranks; one saved before the last allocation then no longer fits the model (HF's reload of the
        # best checkpoint fails). Kept aside instead: every checkpoint holds all ranks, the pruned ones zero.
        config.rank_pattern = getattr(adalora, "adapt_rank_pattern", None)
        adalora.update_and_allocate(step)
        adalora.adapt_rank_pattern, config.rank_pattern = config.rank_pattern, None


class FourierFTParams(PeftParams):
    n_frequency: int = Field(1000, ge=1, description="Spectral coefficients learned per layer (at most in x out).")
    scaling: float = Field(150.0, gt=0, description="Scale of the update (peft's guide: 100-150 for text models).")
    random_loc_seed: int = Field(777, description="Seed of the frequencies chosen.")
    init_weights: bool = Field(False, description="false: coefficients start random (the paper); true: at zero.")


class FourierFTMethod(PeftMethod):
    name = "fourierft"
    description = "FourierFT (Gao et al. 2024): a few learned spectral coefficients of each targeted weight, plus the head."
    Params = FourierFTParams
    config_class = "FourierFTConfig"
    kinds = LINEAR + GPT2_CONV1D
    training_defaults = {"*": {"learning_rate": 5e-2}}

    def fits(self, module: Any, params: FourierFTParams) -> bool:
        return module.weight.numel() >= params.n_frequency


class HRAParams(PeftParams):
    r: int = Field(8, ge=1, description="Number of Householder reflections (even when init_weights is true).")
    apply_GS: bool = Field(False, description="Orthogonalise the reflections (Gram-Schmidt).")
    init_weights: bool = Field(True, description="Start at the identity (the pretrained model).")

    @model_validator(mode="after")
    def _even(self) -> HRAParams:
        if self.init_weights and self.r % 2:
            raise ValueError(f"r must be even when init_weights is true (pairs of reflections cancel); got {self.r}")
        return self


class HRAMethod(PeftMethod):
    name = "hra"
    description = "HRA (Yuan et al. 2024): a chain of learned Householder reflections of the targeted weights, plus the head."
    Params = HRAParams
    config_class = "HRAConfig"
    kinds = LINEAR + CONV_KINDS
    training_defaults = {"*": {"learning_rate": 1e-3}}


class LNTuningMethod(PeftMethod):
    name = "ln_tuning"
    description = "LN tuning (Zhao et al. 2024): train only the normalisation layers (a copy of each), plus the head."
    config_class = "LNTuningConfig"
    kinds = NORM_KINDS
    training_defaults = {"*": {"learning_rate": 5e-3}}

    def layer_kinds(self, model: Any) -> tuple[str, ...]:  # and the families' own (LlamaRMSNorm, T5LayerNorm...)
        return tuple(sorted(set(NORM_KINDS) | {kind(m) for m in model.modules() if kind(m).endswith("Norm")}))

    def default_targets(self, model: Any, head: list[str], params: PeftParams) -> list[str]:
        shared, known, kinds = tied(model), peft_defaults(model, "LNTUNING"), self.layer_kinds(model)
        norms = [n for n, m in model.named_modules() if n and kind(m) in kinds and not in_any(n, head)
                 and n not in shared]
        chosen = [n for n in norms if matches(n, known)] or norms
        if not chosen:
            raise ConfigError(f"method ln_tuning: {type(model).__name__} has no normalisation layer "
                              f"({', '.join(NORM_KINDS)}) outside its head; choose another method")
        return chosen


class GenericParams(PeftParams):
    peft_type: str = Field("LoraConfig", description="peft's config type: its class name (IA3Config, RandLoraConfig...) "
                                                     "or its peft type (IA3, RANDLORA...).")
    config: dict[str, Any] = Field(default_factory=dict, description="That config's fields, by peft's names "
                                                                     "(target_modules and modules_to_save: above).")

    @field_validator("peft_type")
    @classmethod
    def _known(cls, value: str) -> str:
        return config_class(value).__name__

    @model_validator(mode="after")
    def _fields(self) -> GenericParams:
        known = {f.name for f in dataclasses.fields(config_class(self.peft_type))}
        unknown = sorted(set(self.config) - known)
        if unknown:
            raise ValueError(f"config: {', '.join(unknown)} not a field of {self.peft_type} (fields: "
                             f"{', '.join(sorted(known - {'peft_type', 'task_type', 'auto_mapping'}))})")
        moved = sorted(set(self.config) & COMMON)
        if moved:
            raise ValueError(f"config: set {', '.join(moved)} as method_params.{moved[0]}, not inside config")
        return self


def config_class(name: str) -> type:
    """peft's config class named by its class name or its peft type (case does not matter)."""
    import peft

    classes = {n.lower(): c for n in dir(peft) if n.endswith("Config") and isinstance(c := getattr(peft, n), type)
               and issubclass(c, peft.PeftConfig) and c is not peft.PeftConfig and hasattr(c, "peft_type")}
    wanted = name.lower().replace("_", "")
    found = classes.get(wanted) or classes.get(wanted + "config")
    if found is None:
        raise ValueError(f"peft {peft.__version__} has no config type {name!r}; types: "
                         f"{', '.join(sorted(n.removesuffix('config') for n in classes))}")
    return found


class GenericPeftMethod(PeftMethod):
    name = "peft"
    description = "Any peft adapter type by name with its fields (method_params.peft_type, method_params.config), plus the head."
    Params = GenericParams
    kinds = LINEAR + GPT2_CONV1D + CONV_KINDS + ("Conv1d", "Conv3d", "Embedding") + NORM_KINDS

    def peft_type(self, params: GenericParams) -> str:
        return config_class(params.peft_type).__name__.removesuffix("Config").upper()

    def config(self, params: GenericParams) -> tuple[type, dict[str, Any]]:
        return config_class(params.peft_type), dict(params.config)

    def default_targets(self, model: Any, head: list[str], params: GenericParams) -> list[str]:
        return lora_targets(model, head, LINEAR_KINDS + CONV_KINDS, self.peft_type(params), self.name)

    def merge(self, model: Any, params: GenericParams) -> Any:
        try:
            return super().merge(model, params)
        except (AttributeError, NotImplementedError, ValueError) as exc:
            log.warning("merge_weights: peft cannot merge %s (%s); the adapter is saved unmerged", params.peft_type, exc)
            return None


ADAPTER_METHODS = (IA3Method, LoHaMethod, LoKrMethod, OFTMethod, BOFTMethod, VeraMethod, AdaLoraMethod,
                   FourierFTMethod, HRAMethod, LNTuningMethod, GenericPeftMethod)

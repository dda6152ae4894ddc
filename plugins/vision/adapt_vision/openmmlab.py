"""What the OpenMMLab tasks share (mmdet detectors, mmpose pose models): finding a model config by
name, building the model (adapted by the method like any other module), COCO files checked with
clear errors, weights saved as safetensors beside the config that rebuilds them."""

from __future__ import annotations

import copy
import difflib
import json
import logging
import weakref
from pathlib import Path
from typing import Any, ClassVar

from adapt import DataError, LoadedModel, ModelError, PluginError, Task, first_line
from pydantic import Field

from adapt_vision.engine import MMEngineParams
from adapt_vision.images import IMAGE_SUFFIXES, check_readable, refuse_attn_implementation

log = logging.getLogger("adapt")
CONFIG_FILE = "config.py"
WEIGHTS_FILE = "model.safetensors"
# Box / quality predictors beside a class predictor (RetinaNet retina_cls -> retina_reg, FCOS conv_cls ->
# conv_reg, conv_centerness, YOLOX / RTMDet ..._obj): found by replacing "cls" in its name.
SIBLINGS = ("reg", "centerness", "obj", "objectness", "iou")
# the config, metadata and task parameters each built model came from (head_modules finds its predictors)
_BUILT: weakref.WeakKeyDictionary[Any, tuple[Any, dict[str, Any], Any]] = weakref.WeakKeyDictionary()


class OpenMMLabParams(MMEngineParams):
    checkpoint: str | None = Field(None, description="A local checkpoint (.pth) of the model config's weights "
                                                     "(OpenMMLab's model zoo files); heads of another shape are re-initialised.")
    backbone: str | None = Field(None, description="A timm network (e.g. efficientnet_lite0, resnet18) replacing the "
                                                  "config's backbone, as many of its deepest feature levels as the "
                                                  "neck takes, their channels wired into the neck (or a pose head).")
    backbone_checkpoint: str | None = Field(None, description="Weights of that timm network as a classifier (a .pth "
                                                              "or .safetensors file: timm's names, or another "
                                                              "library's for the same network, matched by layout); "
                                                              "None: random weights.")
    image_folder: str | None = Field(None, description="Folder the COCO file_name entries are relative to (None: the "
                                                       "annotation file's folder).")
    image_width: int = Field(-1, ge=-1, description="Images are resized to fit this width, keeping their aspect "
                                                    "ratio (-1: the model config's size).")
    image_height: int = Field(-1, ge=-1, description="... and this height (-1: the model config's size).")
    pretrained_init: bool = Field(True, description="Use the model config's own pretrained init (init_cfg type "
                                                   "Pretrained: usually ImageNet backbone weights, downloaded once "
                                                   "into torch's hub cache); false: random weights instead.")
    apply_augmentations: bool = Field(True, description="Random horizontal flips of training images.")
    draw_folder: str | None = Field(None, description="adapt predict: also write each image with its predictions "
                                                      "drawn into this folder.")


class OpenMMLabTask(Task):
    """A task whose model is built from an OpenMMLab config and trained by the mmengine engine."""

    engine = "mmengine"
    eval_loss = False
    carves_validation = False  # a COCO file's images and annotations: validation is its own file
    package: ClassVar[str] = "mmdet"
    evaluators: ClassVar[str] = "adapt_vision.metrics"  # the module that registers the task's evaluators
    install_hint: ClassVar[str] = "pip install adapt-vision"
    head_names: ClassVar[tuple[str, ...]] = ()  # the heads: where predictors are looked for
    # mmdet's 1x schedule: 12 epochs of 2 images per GPU
    training_defaults: ClassVar[dict[str, Any]] = {"per_device_train_batch_size": 2, "per_device_eval_batch_size": 2,
                                                   "num_train_epochs": 12}

    def model_kind(self, config: Any) -> str:
        return "detector"

    # model --------------------------------------------------------------------------------
    def setup(self) -> None:
        """Import the OpenMMLab package and register its modules (ours too)."""
        import importlib
        import warnings

        from adapt_vision import mmcv_ops

        # mmengine 0.10.7 imports pkg_resources (hence setuptools<81), which warns it is deprecated
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        # mmseg's losses warn that they keep their default (averaging over ignored pixels too) at every build
        warnings.filterwarnings("ignore", message="Default ``avg_non_ignore`` is False", category=UserWarning)
        warnings.filterwarnings("ignore", message="``build_loss`` would be deprecated", category=UserWarning)

        from adapt_vision import timm_backbone

        timm_backbone.register()
        if mmcv_ops.install():
            log.debug("mmcv compiled ops: torchvision-backed provider (mmcv-lite install)")
        try:
            importlib.import_module(f"{self.package}.utils").register_all_modules(init_default_scope=False)
        except (ImportError, ValueError) as exc:  # ValueError: a binary built for another numpy
            raise PluginError(f"task {self.name} needs {self.package}, which does not import here ({first_line(exc)}); "
                              f"{self.install_hint}") from None
        from mmengine.logging import MMLogger

        MMLogger.get_current_instance().setLevel(logging.WARNING)  # its init / load reports are not ours to print
        importlib.import_module(self.evaluators)

    def config_path(self, reference: str) -> Path:
        """A config file, a saved model folder's config, or a config name shipped in the package."""
        import importlib

        path = Path(reference)
        if path.is_dir():
            if not (path / CONFIG_FILE).is_file():
                raise ModelError(f"model {reference}: a folder without {CONFIG_FILE}; give a model saved by adapt, an "
                                 f"OpenMMLab config file, or a config name shipped with {self.package}")
            return path / CONFIG_FILE
        if path.suffix == ".py":
            if not path.is_file():
                raise ModelError(f"model {reference}: config file not found")
            return path
        root = Path(importlib.import_module(self.package).__file__).parent / ".mim" / "configs"
        found = sorted(root.rglob(f"{reference}.py"))
        if not found:
            names = [p.stem for p in root.rglob("*.py") if not p.parent.name.startswith("_")]
            close = difflib.get_close_matches(reference, names, n=5, cutoff=0.5)
            hint = f"; close names: {', '.join(close)}" if close else ""
            raise ModelError(f"model {reference}: not a config file, a saved model folder, or a config name shipped "
                             f"with {self.package} ({len(names)} names under {root}){hint}")
        return found[0]

    def shape_config(self, cfg: Any, meta: dict[str, Any], params: Any = None) -> None:
        """Set what the data (number of classes, keypoints) and the task parameters decide in the
        model config."""
        raise NotImplementedError

    def load_model(self, run: Any, source: str, meta: dict[str, Any]) -> LoadedModel:
        from mmengine.config import Config, ConfigDict

        refuse_attn_implementation(run, "OpenMMLab")
        self.setup()
        path = self.config_path(source)
        saved = path.parent / WEIGHTS_FILE if path.name == CONFIG_FILE else None
        try:
            cfg = Config.fromfile(str(path))
        except Exception as exc:  # a config is Python: any error in it
            raise ModelError(f"model {source}: the config could not be read: {first_line(exc)}") from None
        p = run.task_params
        if p.cfg_options and not (saved and saved.is_file()):
            cfg.merge_from_dict(p.cfg_options)
        if "model" not in cfg:
            raise ModelError(f"model {source}: {path} has no `model` section")
        if p.backbone and not (saved and saved.is_file()):
            from adapt_vision.timm_backbone import wire_backbone

            wire_backbone(cfg, p.backbone, p.backbone_checkpoint)
        elif p.backbone_checkpoint and not p.backbone:
            raise ModelError("task_params.backbone_checkpoint: give the timm network it holds as task_params.backbone")
        self.shape_config(cfg, meta, p)
        checkpoint = p.checkpoint
        if checkpoint or (saved and saved.is_file()) or not p.pretrained_init:
            _drop_pretrained(cfg.model)  # the weights come from the checkpoint (or random, as asked)
        if not checkpoint and not (saved and saved.is_file()) and not _pretrained(cfg.model):
            log.warning("model %s: no task_params.checkpoint and no pretrained init in its config: it starts from random "
                        "weights (parameter-efficient methods adapt pretrained weights)", source)
        model = self.build(cfg.model, source)
        _BUILT[model] = (cfg, meta, p)
        if saved and saved.is_file():
            from safetensors.torch import load_file

            missing, unexpected = model.load_state_dict(load_file(str(saved)), strict=False)
            if missing or unexpected:
                raise ModelError(f"model {source}: {WEIGHTS_FILE} does not fit its config (missing: "
                                 f"{', '.join(missing[:3])}; unexpected: {', '.join(unexpected[:3])})")
        elif checkpoint:
            load_weights(model, checkpoint)
        model_cfg = ConfigDict(cfg.model)
        _drop_pretrained(model_cfg)
        state = {"model_cfg": model_cfg, "auto_scale_lr": cfg.get("auto_scale_lr"), "scale": self.scale(cfg)}
        return LoadedModel(model, None, dict(meta), state)

    def build(self, model_cfg: Any, source: str, init: bool = True) -> Any:
        import importlib

        from mmengine.registry import DefaultScope

        registry = importlib.import_module(f"{self.package}.registry").MODELS
        try:
            with DefaultScope.overwrite_default_scope(self.package):
                model = registry.build(model_cfg)
                if init:
                    model.init_weights()
        except Exception as exc:
            downloads = list(dict.fromkeys(_pretrained(model_cfg))) if _is_download_error(exc) else []
            if downloads:
                raise ModelError(_download_help(source, downloads, exc)) from None
            raise ModelError(f"model {source} could not be built for {self.name.replace('_', ' ')}: "
                             f"{first_line(exc)}") from None
        return model

    def scale(self, cfg: Any) -> tuple[int, int]:
        """(width, height) images are resized to: the model config's test pipeline, else 1333 x 800."""
        for loader in ("test_dataloader", "val_dataloader"):
            pipeline = ((cfg.get(loader) or {}).get("dataset") or {}).get("pipeline") or []
            for step in pipeline:
                if step.get("type") == "Resize" and isinstance(step.get("scale"), (tuple, list)):
                    return tuple(step["scale"])  # type: ignore[return-value]
        return (1333, 800)

    def image_scale(self, run: Any, loaded: LoadedModel) -> tuple[int, int]:
        p = run.task_params
        if p.image_width > 0 and p.image_height > 0:
            return (p.image_width, p.image_height)
        return tuple(loaded.state["scale"])  # type: ignore[return-value]

    def head_modules(self, model: Any) -> list[str]:
        """The predictors (see :meth:`predictors`): what every method trains in full; the heads'
        shared layers are adapted by the method like the backbone and neck. The whole heads for a
        model this task did not build, or one whose config cannot be built again."""
        built = _BUILT.get(model)
        found = self.predictors(model, *built) if built is not None else None
        return found if found is not None else [name for name in self.head_names if hasattr(model, name)]

    def predictors(self, model: Any, cfg: Any, meta: dict[str, Any], params: Any) -> list[str] | None:
        """Layers whose shape depends on the data (classes, keypoints), found by building the
        config for one more class / keypoint (on the meta device where it can) and comparing shapes, plus
        the box predictors beside each class predictor: the layers PEFT trains in full."""
        import torch

        bigger = {**meta, **{k: [*meta[k], "_"] for k in ("classes", "keypoints") if k in meta}}
        other = copy.deepcopy(cfg)
        self.shape_config(other, bigger, params)
        _drop_pretrained(other.model)
        shapes = None
        for device in ("meta", "cpu"):  # meta: no memory; some models compute with tensors while they build
            try:
                with torch.device(device):
                    shapes = {n: p.shape for n, p in self.build(other.model, "", init=False).named_parameters()}
                break
            except ModelError:
                continue
        if shapes is None:
            return None
        modules = dict(model.named_modules())
        found = sorted({name.rsplit(".", 1)[0] for name, p in model.named_parameters()
                        if name in shapes and shapes[name] != p.shape and name.startswith(self.head_names)})
        for name in list(found):
            where = name.rfind("cls")
            for sibling in (name[:where] + s + name[where + 3:] for s in SIBLINGS if where >= 0):
                if sibling in modules and sibling not in found and next(modules[sibling].parameters(), None) is not None:
                    found.append(sibling)
        return sorted(found)

    def engine_settings(self, run: Any, loaded: LoadedModel) -> dict[str, Any]:
        settings: dict[str, Any] = {"default_scope": self.package}
        if run.task_params.auto_scale_lr:  # scaled against the model config's batch size (its auto_scale_lr)
            base = (loaded.state.get("auto_scale_lr") or {}).get("base_batch_size", 16)
            settings["auto_scale_lr"] = {"enable": True, "base_batch_size": base}
        return settings

    def save_model(self, loaded: LoadedModel, folder: str) -> None:
        from mmengine.config import Config
        from safetensors.torch import save_file

        Config({"model": loaded.state["model_cfg"], "auto_scale_lr": loaded.state.get("auto_scale_lr"),
                "test_dataloader": {"dataset": {"pipeline": [{"type": "Resize",
                                                              "scale": list(loaded.state["scale"])}]}}}
               ).dump(str(Path(folder) / CONFIG_FILE))
        state = {k: v.detach().cpu().contiguous() for k, v in loaded.model.state_dict().items()}
        save_file(state, str(Path(folder) / WEIGHTS_FILE))

    # data ---------------------------------------------------------------------------------
    def image_root(self, run: Any, ann_file: str) -> Path:
        folder = run.task_params.image_folder
        return Path(folder) if folder else Path(ann_file).resolve().parent

    def read_coco(self, run: Any, split: str, path: str, require: tuple[str, ...] = ("bbox",)) -> dict[str, Any]:
        """A COCO annotation file, checked: images exist, annotations refer to known images and
        categories and have the fields the task needs."""
        file = Path(path)
        if not file.is_file():
            raise DataError(f"{split} data {path} does not exist" if not file.exists() else
                            f"{split} data {path} is a folder; give a COCO annotation file (.json)")
        try:
            coco = json.loads(file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataError(f"{split} data {path}: not valid JSON ({first_line(exc)})") from None
        if not isinstance(coco, dict) or not all(isinstance(coco.get(k), list) for k in ("images", "annotations",
                                                                                        "categories")):
            raise DataError(f"{split} data {path}: a COCO file needs lists `images`, `annotations` and `categories`")
        if not coco["images"]:
            raise DataError(f"{split} data {path}: no images")
        root = self.image_root(run, path)
        images = {}
        for number, image in enumerate(coco["images"], 1):
            if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
                raise DataError(f"{split} data {path}: images[{number - 1}] needs `id` and `file_name`")
            if not (root / image["file_name"]).is_file():
                raise DataError(f"{split} data {path}: image {image['file_name']!r} (id {image['id']}) not found in "
                                f"{root} (task_params.image_folder sets where images are)")
            images[image["id"]] = image
        categories = {c.get("id"): c for c in coco["categories"] if isinstance(c, dict)}
        if not categories:
            raise DataError(f"{split} data {path}: no categories")
        for number, ann in enumerate(coco["annotations"]):
            where = f"{split} data {path}: annotations[{number}]"
            if not isinstance(ann, dict):
                raise DataError(f"{where} is not an object")
            if ann.get("image_id") not in images:
                raise DataError(f"{where} refers to image_id {ann.get('image_id')!r}, which is not in `images`")
            if ann.get("category_id") not in categories:
                raise DataError(f"{where} refers to category_id {ann.get('category_id')!r}, which is not in "
                                f"`categories` (ids: {', '.join(map(str, categories))})")
            for field in require:
                if field not in ann:
                    raise DataError(f"{where} has no `{field}`")
            bbox = ann.get("bbox")
            if "bbox" in require and (not isinstance(bbox, list) or len(bbox) != 4 or bbox[2] < 0 or bbox[3] < 0):
                raise DataError(f"{where}: bbox must be [x, y, width, height] with width, height >= 0, not {bbox!r}")
        return coco

    def examples(self, run: Any, split: str, path: str) -> list[dict[str, Any]]:
        """What training iterates over (``adapt plan`` counts them)."""
        return self.coco_examples(self.read_coco(run, split, path), split)

    def dataset_size(self, run: Any, coco: dict[str, Any], split: str) -> int:
        """How many examples of ``split`` training or evaluation uses: its examples, limited."""
        count, limit = len(self.coco_examples(coco, split)), run.data_limit(split)
        return min(count, limit or count)

    def coco_examples(self, coco: dict[str, Any], split: str) -> list[dict[str, Any]]:
        """A COCO file's images; for training only those with annotations (as mmdet filters them)."""
        if split != "train":
            return coco["images"]
        annotated = {a["image_id"] for a in coco["annotations"]}
        return [image for image in coco["images"] if image["id"] in annotated]

    def check_images(self, run: Any, split: str, path: str, coco: dict[str, Any]) -> None:
        """Every image opens as an image (a corrupted file fails here, not deep in training)."""
        root = self.image_root(run, path)
        for image in coco["images"]:
            check_readable(root / image["file_name"], split, path, image["file_name"])

    def predict_images(self, path: str) -> list[dict[str, Any]]:
        """The images to predict on: a COCO file's images, a folder's images, or a data file
        with an `image` column (paths relative to the file); each checked to open as an image."""
        images = self._predict_images(path)
        for image in images:
            check_readable(image["path"], "predict", path, image["file_name"])
        return images

    def _predict_images(self, path: str) -> list[dict[str, Any]]:
        from adapt import read_table

        file = Path(path)
        if file.is_dir() and not (file / "MLTable").is_file():
            found = sorted(p for p in file.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(f"predict data {path}: a folder with no images ({', '.join(IMAGE_SUFFIXES)})")
            return [{"id": i + 1, "path": str(p), "file_name": p.name} for i, p in enumerate(found)]
        if file.suffix == ".json" and file.is_file():
            try:
                coco = json.loads(file.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise DataError(f"predict data {path}: not valid JSON ({first_line(exc)})") from None
            if isinstance(coco, dict) and isinstance(coco.get("images"), list):
                root = file.resolve().parent
                return [{"id": im["id"], "path": str(root / im["file_name"]), "file_name": im["file_name"]}
                        for im in coco["images"]]
        table = read_table(path, "predict")
        if "image" not in table.column_names:
            raise DataError(f"predict data {path}: no `image` column (columns: {', '.join(table.column_names)}); give "
                            "a COCO file, an image folder, or a table with an `image` column of paths")
        root = file.resolve().parent
        rows = []
        for i, value in enumerate(table["image"]):
            image = Path(value) if Path(value).is_absolute() else root / value
            if not image.is_file():
                raise DataError(f"predict data {path}, row {i + 1}, column image: {value} not found")
            rows.append({"id": i + 1, "path": str(image), "file_name": str(value)})
        return rows

    def predict_columns(self, run: Any, columns: list[str]) -> list[str]:
        return [c for c in columns if c == "image"]

    def example_inputs(self, run: Any, path: str, limit: int) -> list[dict[str, Any]]:
        return [{"image": image["path"]} for image in self.predict_images(path)[:limit]]


def load_weights(model: Any, path: str) -> None:
    """Load an OpenMMLab checkpoint (a .pth with ``state_dict``, or a bare state dict) into
    ``model`` with weights_only loading; tensors whose shape differs (another number of classes)
    are skipped and reported."""
    from mmengine.runner import load_checkpoint

    if not Path(path).is_file():
        raise ModelError(f"task_params.checkpoint: {path} is not a file")
    try:
        load_checkpoint(model, path, map_location="cpu", strict=False, logger="current")
    except Exception as exc:  # torch's weights-only unpickler names the class it refused
        raise ModelError(f"task_params.checkpoint: {path} could not be read as a checkpoint of weights: "
                         f"{first_line(exc)}") from None



def _pretrained(cfg: Any) -> list[str]:
    """The checkpoints a config's ``init_cfg=dict(type='Pretrained', checkpoint=...)`` entries load
    (and mmseg's ``pretrained='open-mmlab://...'``, which its segmentors turn into one)."""
    if isinstance(cfg, dict):
        init = cfg.get("init_cfg")
        own = [init["checkpoint"]] if isinstance(init, dict) and init.get("type") == "Pretrained" else []
        own += [cfg["pretrained"]] if isinstance(cfg.get("pretrained"), str) else []
        return own + [c for v in cfg.values() for c in _pretrained(v)]
    return [c for v in cfg for c in _pretrained(v)] if isinstance(cfg, list) else []


def _is_download_error(exc: BaseException) -> bool:
    import urllib.error

    seen: BaseException | None = exc
    while seen is not None:  # urllib's error, or one that wraps it
        if isinstance(seen, (urllib.error.URLError, ConnectionError, TimeoutError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return "urlopen error" in str(exc) or "Name or service not known" in str(exc)


def _download_url(checkpoint: str) -> str:
    """The URL mmengine downloads for a checkpoint name (torchvision://, open-mmlab://, mmcls://)."""
    from mmengine.runner import checkpoint as known

    scheme, _, name = checkpoint.partition("://")
    if scheme == "torchvision":
        return known.get_torchvision_models().get(name, checkpoint)
    if scheme in ("open-mmlab", "openmmlab"):
        name = known.get_deprecated_model_names().get(name, name)
        return known.get_external_models().get(name, checkpoint)
    if scheme == "mmcls":
        return known.get_mmcls_models().get(name, checkpoint)
    return checkpoint


def _download_help(source: str, checkpoints: list[str], exc: BaseException) -> str:
    import urllib.parse

    import torch

    cache = Path(torch.hub.get_dir()) / "checkpoints"
    files = []
    for checkpoint in checkpoints:
        url = _download_url(checkpoint)
        name = Path(urllib.parse.urlparse(url).path).name
        files.append(f"{url} (as {cache / name})" if url.startswith("http") else url)
    return (f"model {source}: its config starts from pretrained weights that must be downloaded, and the download "
            f"failed ({first_line(exc)}): {'; '.join(files)}. Either put the file in torch's hub cache as named "
            f"(it is then read offline), give the model's weights as task_params.checkpoint, or start from random "
            f"weights with task_params.pretrained_init=false")


def _drop_pretrained(cfg: Any) -> None:
    """Remove ``init_cfg=dict(type='Pretrained', ...)`` and ``pretrained='...'`` entries (they
    download weights)."""
    if isinstance(cfg, dict):
        init = cfg.get("init_cfg")
        if isinstance(init, dict) and init.get("type") == "Pretrained":
            cfg["init_cfg"] = None
        if isinstance(cfg.get("pretrained"), str):
            cfg["pretrained"] = None
        for value in cfg.values():
            _drop_pretrained(value)
    elif isinstance(cfg, list):
        for value in cfg:
            _drop_pretrained(value)


def set_everywhere(cfg: Any, key: str, value: Any) -> int:
    """Set ``key`` wherever it occurs in a nested config (num_classes of every head)."""
    count = 0
    if isinstance(cfg, dict):
        for k in list(cfg):
            if k == key:
                cfg[k] = value
                count += 1
            else:
                count += set_everywhere(cfg[k], key, value)
    elif isinstance(cfg, list):
        count += sum(set_everywhere(v, key, value) for v in cfg)
    return count

"""The package's import graph and dependencies: the declared layer order (which package may import which), no
import cycle inside ``dinov2/``, every third-party module imported is declared in ``pyproject.toml`` (optional ones
only lazily), and the released import surface exists."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import inspect
import json
import re
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python >= 3.11")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dinov2"


class _Import(NamedTuple):
    module: str  # the module after `import` / `from` (relative imports resolved)
    names: tuple[str, ...]  # the names taken from it by `from module import names`; () for `import module`
    module_level: bool  # at module level (`if TYPE_CHECKING:` / `try:` blocks included), not inside a function


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imports(path: Path) -> list[_Import]:
    """Every import in ``path``, including function-level and ``TYPE_CHECKING`` imports (a cycle or an upward
    import through either is still one of the design)."""
    module = _module_name(path)
    tree = ast.parse(path.read_text(), filename=str(path))
    top_level = {id(node) for node in tree.body}
    for node in tree.body:  # `if TYPE_CHECKING:` / `try:` blocks at module level count as module level
        if isinstance(node, (ast.If, ast.Try)):
            top_level |= {id(n) for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [_Import(alias.name, (), id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, path.name == "__init__.py", node)
            found.append(_Import(target, tuple(alias.name for alias in node.names), id(node) in top_level))
    return found


def _targets(imported: _Import, modules: set[str]) -> set[str]:
    """The modules of the package an import reads: ``from package import submodule`` reads the submodule (Python
    imports it, the package's ``__init__`` need not be done), ``from package import name`` reads the ``__init__``."""
    if not imported.names:
        return {imported.module}
    submodules = {f"{imported.module}.{name}" for name in imported.names} & modules
    reads_init = len(submodules) < len(imported.names)
    return submodules | ({imported.module} if reads_init else set())


def _internal_graph() -> dict[str, set[str]]:
    """Module -> the ``dinov2`` modules it imports. Every edge counts, package-to-submodule ones included: a package
    whose ``__init__`` imports its submodules is fine, but a submodule that takes a name from that ``__init__`` (or
    from a sibling that imports it back) closes a circle like any other."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for imported in _imports(path):
            graph[name] |= (_targets(imported, set(modules)) & set(modules)) - {name}
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_find_cycle_detects_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None
    # a package importing its submodule is no cycle; the submodule importing the package's names back is one
    assert _find_cycle({"p": {"p.a"}, "p.a": set()}) is None
    assert _find_cycle({"p": {"p.a"}, "p.a": {"p"}}) == ["p", "p.a", "p"]


def test_from_package_import_submodule_reads_the_submodule_only():
    modules = {"p", "p.a", "p.b"}
    assert _targets(_Import("p", ("a", "b"), True), modules) == {"p.a", "p.b"}
    assert _targets(_Import("p", ("a", "NAME"), True), modules) == {"p", "p.a"}
    assert _targets(_Import("p.a", (), True), modules) == {"p.a"}


def test_no_import_cycle_inside_the_package():
    cycle = _find_cycle(_internal_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# ------------------------------------------------------------------------------------------------ layer order
# The packages of dinov2/ from the floor up, each with the packages it may import (its own package always).
# `dinov2` itself (the version) is importable from anywhere. Top-level modules (demo, plot) count as packages.
# The order follows the README "Architecture": utils is the floor; the config loader sits just above it; the
# device-agnostic building blocks (layers, models, loss, data) come next; features is the one backbone door for
# every tool; train must not import eval (the online k-NN monitor scores through features); the tools
# (curation, visualize, export) import neither eval nor each other nor train; run launches everything.
_CORE = {"utils", "configs", "config", "distributed", "logging"}
_BLOCKS = _CORE | {"layers", "models", "loss", "data", "heads", "hub", "text"}
LAYERS: dict[str, set[str]] = {
    "configs": set(),  # the packaged YAML files: data only
    "utils": set(),  # dtype, io, param_groups, schedules, cli: the floor, imports nothing above it
    "config": {"utils", "configs"},  # the one config loader (defaults <- file <- key=value, strict keys)
    # `distributed` and the building blocks may import `config` to register the value checks of their registries.
    # FSDP2 sharding reads the one dtype table (utils/dtype: torch and numpy only), a downward import.
    "distributed": {"utils", "config"},
    "logging": {"utils", "distributed"},
    "layers": {"utils", "config", "distributed"},
    "models": {"utils", "config", "distributed", "layers"},
    "loss": {"utils", "config", "distributed"},
    "data": {"utils", "config", "distributed", "logging"},
    "heads": {"utils", "config", "distributed", "layers", "models", "data"},  # models: the backbone's family
    "text": {"utils", "config", "distributed", "layers", "models", "data", "heads"},  # dino.txt (heads: windows)
    "hub": {"utils", "config", "distributed", "layers", "models", "heads", "data", "text"},
    "features": _BLOCKS,  # the backbone door: config + weights | hub name | run folder -> backbone; k-NN
    "train": _BLOCKS | {"features"},  # not eval
    "eval": _BLOCKS | {"features", "train"},  # train: the precision policy of the evaluated teacher
    "curation": _BLOCKS | {"features"},
    "visualize": _BLOCKS | {"features"},
    "export": _BLOCKS | {"features"},
    "run": _BLOCKS | {"features", "train", "eval", "curation", "visualize", "export"},
    "demo_dinov3": _BLOCKS | {"features", "train", "eval"},  # `python -m dinov2.demo dinov3`, called by demo
    "demo": _BLOCKS | {"features", "train", "eval", "visualize", "demo_dinov3"},
    "plot": _BLOCKS | {"visualize"},
}

# Imports that break the order on purpose: released import paths that must stay and re-export from above.
ALLOWED_UPWARD: dict[str, set[str]] = {
    # released `dinov2.utils.config` (setup, default_setup, load_cfg, ...): the config loader, the value checks that
    # live beside the registries they read (imported so that a config loaded through the released path is fully
    # checked), and the run set-up, which enables the process group and the logger
    "dinov2.utils.config": {
        "dinov2.config",
        "dinov2.distributed",
        "dinov2.logging",
        "dinov2.data.config_checks",
        "dinov2.loss.config_checks",
        "dinov2.models.config_checks",
    },
    # released `dinov2.utils.utils.load_pretrained_weights`: reads through the one weights door (models/weights.py)
    "dinov2.utils.utils": {"dinov2.models.weights"},
}


def _package(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def _matches(allowed: dict[str, set[str]], module: str, target: str) -> str | None:
    """The entry of ``allowed`` that covers ``module`` importing ``target`` (a module or any module under it)."""
    return next((t for t in allowed.get(module, ()) if target == t or target.startswith(t + ".")), None)


def _layer_violations() -> tuple[list[str], set[tuple[str, str]]]:
    """(violations not excused, the ALLOWED_UPWARD entries used)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    problems, used = [], set()
    for name, path in sorted(modules.items()):
        own = _package(name)
        for imported in _imports(path):
            for target in sorted(_targets(imported, set(modules))):
                other = _package(target)
                if not target.startswith("dinov2.") or other in ("", own) or other in LAYERS.get(own, ()):
                    continue
                entry = _matches(ALLOWED_UPWARD, name, target)
                if entry is not None:
                    used.add((name, entry))
                    continue
                allowed = ", ".join(sorted(LAYERS.get(own, ()))) or "nothing"
                problems.append(f"{name} imports {target}: package {own!r} may import only {allowed} (LAYERS)")
    return problems, used


def test_every_package_has_a_place_in_the_layer_order():
    packages = {_package(_module_name(p)) for p in PACKAGE.rglob("*.py")} - {""}
    missing = packages - set(LAYERS)
    assert not missing, f"packages missing from LAYERS in tests/test_imports.py: {sorted(missing)}"
    assert _find_cycle({name: set(allowed) for name, allowed in LAYERS.items()}) is None, "LAYERS is not an order"


def test_no_package_imports_above_its_layer():
    problems, _ = _layer_violations()
    assert not problems, "imports against the layer order:\n" + "\n".join(problems)


def test_a_violation_names_the_module_the_import_and_the_rule(monkeypatch):
    monkeypatch.setitem(LAYERS, "loss", {"utils", "config"})  # as if loss/ could no longer reach distributed/
    problems, _ = _layer_violations()
    expected = "imports dinov2.distributed: package 'loss' may import only config, utils (LAYERS)"
    assert any(p.startswith("dinov2.loss.") and p.endswith(expected) for p in problems), problems


def test_every_allowed_upward_import_is_still_needed():
    _, used = _layer_violations()
    stale = [f"{m} -> {t}" for m, targets in ALLOWED_UPWARD.items() for t in sorted(targets) if (m, t) not in used]
    assert not stale, "ALLOWED_UPWARD entries no longer needed, remove them from tests/test_imports.py:\n" + "\n".join(
        stale
    )


def test_allowed_upward_imports_name_modules_that_exist():
    """ALLOWED_UPWARD declares released re-exports; it may name an import before the branch that adds it lands."""
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    assert not set(ALLOWED_UPWARD) - modules, f"no such modules: {sorted(set(ALLOWED_UPWARD) - modules)}"


def _declared() -> tuple[set[str], set[str]]:
    """Distribution names required by the project, and those of its optional extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(specs):
        return {re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0].lower().replace("_", "-") for spec in specs}

    return names(project["dependencies"]), set().union(*map(names, project["optional-dependencies"].values()))


def test_every_imported_third_party_module_is_declared():
    required, optional = _declared()
    distributions = importlib.metadata.packages_distributions()
    stdlib = set(sys.stdlib_module_names)
    problems = []
    for path in sorted([*PACKAGE.rglob("*.py"), ROOT / "hubconf.py"]):
        for imported in _imports(path):
            target, module_level = imported.module, imported.module_level
            top = target.split(".")[0]
            if not top or top in stdlib or top in ("dinov2", "configs", "__future__"):
                continue
            dists = {d.lower().replace("_", "-") for d in distributions.get(top, [top])}
            where = path.relative_to(ROOT)
            if dists & required:
                continue
            if dists & optional:
                if module_level:
                    problems.append(f"{where}: optional dependency {top!r} imported at module level")
                continue
            problems.append(f"{where}: {top!r} is imported but not declared in pyproject.toml")
    assert not problems, "\n".join(sorted(set(problems)))


# Public names of the released modules that we keep, with the module path the release has.
RELEASED_NAMES = {
    "dinov2.layers": ["DINOHead", "Mlp", "PatchEmbed", "SwiGLUFFN", "SwiGLUFFNFused", "MemEffAttention",
                      "NestedTensorBlock"],
    "dinov2.layers.dino_head": ["DINOHead"],
    "dinov2.hub.utils": ["CenterPadding", "_make_dinov2_model_name"],
    "dinov2.hub.backbones": ["dinov2_vits14", "dinov2_vitb14", "dinov2_vitl14", "dinov2_vitg14", "dinov2_vits14_reg",
                             "dinov2_vitb14_reg", "dinov2_vitl14_reg", "dinov2_vitg14_reg", "Weights"],
    "dinov2.hub.classifiers": ["dinov2_vits14_lc", "dinov2_vitg14_reg_lc", "Weights"],
    "dinov2.train": ["SSLMetaArch", "get_args_parser", "main"],
    "dinov2.train.ssl_meta_arch": ["SSLMetaArch"],
    "dinov2.train.train": ["get_args_parser", "main", "do_train", "do_test", "build_optimizer"],
    "dinov2.models": ["build_model", "build_model_from_cfg", "vits"],
    "dinov2.models.vision_transformer": ["DinoVisionTransformer", "vit_small", "vit_base", "vit_large", "vit_giant2",
                                         "named_apply", "init_weights_vit_timm", "BlockChunk"],
    "dinov2.data": ["DataAugmentationDINO", "MaskingGenerator", "collate_data_and_cast", "make_dataset",
                    "make_data_loader", "SamplerType"],
    "dinov2.data.transforms": ["GaussianBlur", "MaybeToTensor", "make_normalize_transform",
                               "make_classification_train_transform", "make_classification_eval_transform"],
    "dinov2.loss": ["DINOLoss", "iBOTPatchLoss", "KoLeoLoss"],
    "dinov2.utils.utils": ["CosineScheduler", "fix_random_seeds", "get_sha", "has_batchnorms",
                           "load_pretrained_weights"],
    "dinov2.utils.param_groups": ["get_params_groups_with_decay", "fuse_params_groups"],
    "dinov2.utils.dtype": ["as_torch_dtype"],
    "dinov2.utils.config": ["setup", "get_cfg_from_args", "default_setup", "apply_scaling_rules_to_cfg",
                            "write_config"],
    "dinov2.distributed": ["enable", "get_global_rank", "get_global_size", "get_local_rank", "get_local_size",
                           "is_main_process", "is_enabled"],
    "dinov2.eval.setup": ["get_args_parser", "get_autocast_dtype", "build_model_for_eval", "setup_and_build_model"],
    "dinov2.eval.metrics": ["MetricType", "AccuracyAveraging", "build_metric", "build_topk_accuracy_metric",
                            "build_topk_imagenet_real_accuracy_metric"],
    "dinov2.eval.utils": ["ModelWithNormalize", "ModelWithIntermediateLayers", "evaluate", "extract_features",
                          "extract_features_with_dataloader"],
    "dinov2.eval.knn": ["get_args_parser", "eval_knn", "eval_knn_with_model", "main"],
    "dinov2.eval.linear": ["get_args_parser", "eval_linear", "test_on_datasets", "run_eval_linear", "main"],
    "dinov2.eval.log_regression": ["get_args_parser", "eval_log_regression", "eval_log_regression_with_model",
                                   "main"],
}  # fmt: skip

# Released modules we deliberately do not provide (see README, "Deliberate differences"): the FSDP1 wrapper module
# (FSDP2 is applied from outside, dinov2/train/parallelize.py), the mmcv/mmseg-based segmentation and depth
# evaluation (the model classes, the mmcv hooks, mmseg's resize op; the heads live in dinov2.heads, the probes in
# dinov2.eval.segmentation / dinov2.eval.depth), the hub's copy of the depth heads (dinov2.heads.depth) and the
# vendored OpenAI CLIP code (the tokenizer is dinov2.text.tokenizer).
NOT_PROVIDED = [
    "dinov2.fsdp",
    "dinov2.eval.segmentation_m2f",
    "dinov2.eval.segmentation.models",
    "dinov2.eval.segmentation.hooks",
    "dinov2.eval.depth.models",
    "dinov2.eval.depth.ops",
    "dinov2.hub.depth",
    "dinov2.thirdparty",
]

# Every public name of every module of the release (facebookresearch/dinov2 at b8931f7, 2025-08-14), as listed by
# `python scripts/released_names.py <release checkout> dinov2`. Regenerate it when the release changes.
RELEASED_SURFACE = json.loads((ROOT / "tests" / "released_names_dinov2.json").read_text())

# Public names of modules we keep that the rewrite has no counterpart for, and why (README, "Deliberate differences").
NOT_KEPT = {
    # the k-NN protocol is rewritten on dinov2.features.knn_scoring (knn_class_scores, eval_knn): no nn.Module plumbing
    "dinov2.eval.knn": ["DictKeysModule", "KnnModule", "ModuleDictWithForward", "create_class_indices_mapping",
                        "create_module_dict", "filter_train"],
    # the solver is dinov2.eval.log_regression.solver (LogisticRegression, sweep_c_values, eval_log_regression)
    "dinov2.eval.log_regression": ["LogRegModule", "evaluate_model", "sweep_C_values", "train_and_evaluate",
                                   "train_for_C"],
    # the xformers list path of NestedTensorBlock; multi-crop lists run packed here (dinov2.layers.packing)
    "dinov2.layers.block": ["add_residual", "attn_bias_cache", "drop_add_residual_stochastic_depth_list",
                            "get_attn_bias_and_cat", "get_branges_scales"],
    # FSDP1 stream synchronisation and fused-parameter selection; sharding is FSDP2 (dinov2.train.parallelize)
    "dinov2.train.ssl_meta_arch": ["SSLMetaArch.fsdp_synchronize_streams",
                                   "SSLMetaArch.get_maybe_fused_params_for_submodel"],
}  # fmt: skip


def _not_provided(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in NOT_PROVIDED)


# Released signatures ours does not accept as written, and why (README, "Deliberate differences").
SIGNATURE_DIFFERENCES = {
    # the newest release's second positional argument is is_causal; here it is the packed multi-crop layout (the
    # causal attention of dino.txt is layers.attention.CausalSelfAttention, whose forward(x, is_causal) is released)
    "dinov2.layers.attention:Attention.forward",
    # released (x, w, h) with w = x.shape[2]: the same positions here, named (x, h, w) after what they are
    "dinov2.models.vision_transformer:DinoVisionTransformer.interpolate_pos_encoding",
    # the release's second argument is an xformers attention bias; here it is the packed layout (groups), the same
    # block-diagonal attention without xformers
    "dinov2.layers.attention:MemEffAttention.forward",
    # one metric for every k here (ks=(1, 5), compute() -> {"top-k": value}); the release's is a torchmetrics Metric
    # per k (top_k). build_topk_imagenet_real_accuracy_metric, which users call, keeps its released signature
    "dinov2.eval.metrics:ImageNetReaLAccuracy",
}


def _released_names(module: str) -> list[str]:
    return [name for name in RELEASED_SURFACE[module] if "." not in name]


def _parameters(written: list[str]) -> list[tuple[str, str]]:
    """``(name, kind)`` of a signature as scripts/released_names.py writes it; kinds: positional, keyword, *, **."""
    kinds, keyword_only = [], False
    for item in written:
        if item == "/":
            continue
        if item == "*" or item.startswith("*") and not item.startswith("**"):
            keyword_only = True
            if item != "*":
                kinds.append((item[1:], "*"))
        elif item.startswith("**"):
            kinds.append((item[2:], "**"))
        else:
            kinds.append((item, "keyword" if keyword_only else "positional"))
    return [(name, kind) for name, kind in kinds if name not in ("self", "cls")]


def _incompatibilities(released: list[str], ours: inspect.Signature) -> list[str]:
    """Calls the released signature allows that ours refuses: a parameter missing (without ``**kwargs`` here), or a
    released positional parameter at another position or keyword-only here."""
    mine = [(p.name, p.kind) for p in ours.parameters.values() if p.name not in ("self", "cls")]
    names = {name: kind for name, kind in mine}
    var_keyword = any(kind is inspect.Parameter.VAR_KEYWORD for _, kind in mine)
    var_positional = any(kind is inspect.Parameter.VAR_POSITIONAL for _, kind in mine)
    positional_here = [
        n for n, k in mine if k in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    problems = []
    wanted = _parameters(released)
    for name, kind in wanted:
        if kind in ("*", "**"):
            continue
        if name not in names and not var_keyword:
            problems.append(f"no parameter {name!r}")
    positional = [name for name, kind in wanted if kind == "positional"]
    for index, name in enumerate(positional):
        if index < len(positional_here):
            if positional_here[index] != name:
                problems.append(f"positional parameter {index} is {positional_here[index]!r}, released {name!r}")
                break
        elif not var_positional and name in names:
            problems.append(f"{name!r} cannot be passed by position here")
            break
    return problems


def test_every_public_name_of_the_released_modules_imports_from_its_released_path():
    missing = {}
    for module in RELEASED_SURFACE:
        if _not_provided(module):
            continue
        imported = importlib.import_module(module)
        lacking = [n for n in _released_names(module) if not hasattr(imported, n) and n not in NOT_KEPT.get(module, ())]
        if lacking:
            missing[module] = lacking
    assert not missing, f"released names that do not import from their released path: {missing}"


def test_every_released_function_and_class_takes_the_released_arguments():
    problems = {}
    for module, entries in RELEASED_SURFACE.items():
        if _not_provided(module):
            continue
        imported = importlib.import_module(module)
        for name, released in entries.items():
            owner, _, method = name.partition(".")
            skipped = NOT_KEPT.get(module, ())
            if released is None or {owner, name} & set(skipped) or f"{module}:{name}" in SIGNATURE_DIFFERENCES:
                continue
            ours = getattr(getattr(imported, owner), method, None) if method else getattr(imported, owner)
            if ours is None:
                problems[f"{module}:{name}"] = ["no such method"]
                continue
            found = _incompatibilities(released, inspect.signature(ours))
            if found:
                problems[f"{module}:{name}"] = found
    assert not problems, f"released signatures ours refuses: {problems}"


def test_what_we_do_not_provide_or_keep_is_released_and_really_absent():
    for module in NOT_PROVIDED:
        assert _not_provided(module) and any(m == module or m.startswith(module + ".") for m in RELEASED_SURFACE)
    for module, names in NOT_KEPT.items():
        unreleased = set(names) - set(RELEASED_SURFACE[module])
        assert not unreleased, f"{module}: {unreleased} are not released names"
        imported = importlib.import_module(module)
        present = [n for n in names if _has(imported, n)]
        assert not present, f"{module} has {present} now: remove them from NOT_KEPT"
    for key in SIGNATURE_DIFFERENCES:
        module, name = key.split(":")
        assert name in RELEASED_SURFACE[module], f"{key} is not a released signature"


def _has(module, dotted: str) -> bool:
    owner, _, method = dotted.partition(".")
    return hasattr(getattr(module, owner, None), method) if method else hasattr(module, owner)


# DINOv3's modules whose names a DINOv2 package can serve, at the paths they have here, from the DINOv3 release (at
# commit 6876159) by `python scripts/released_names.py <release checkout> dinov3 --no-submodules --only <the modules
# below>` (the depth package's submodules are mmcv-style building blocks, served under other names in
# dinov2.heads.depth.dpt; the segmentation package's are served one by one; of the detector's, the hub module and
# its config: the rest is served for the released hub model's configuration only, see dinov2.heads.detection).
_SEG = "dinov3.eval.segmentation.models"
RELEASED_SURFACE_DINOV3 = json.loads((ROOT / "tests" / "released_names_dinov3.json").read_text())
DINOV3_PATHS = {  # released module -> (module here, {released class name: its name here})
    "dinov3.models.vision_transformer": (
        "dinov2.models.vision_transformer_v3", {"DinoVisionTransformer": "DinoVisionTransformerV3"}
    ),
    "dinov3.models.convnext": ("dinov2.models.convnext", {}),
    "dinov3.hub.backbones": ("dinov2.hub.dinov3_backbones", {}),
    "dinov3.hub.dinotxt": ("dinov2.hub.dinotxt", {}),
    "dinov3.hub.classifiers": ("dinov2.hub.classifiers", {}),
    "dinov3.hub.depthers": ("dinov2.hub.depthers", {}),
    "dinov3.eval.depth.models": ("dinov2.heads.depth.depther", {}),
    "dinov3.hub.segmentors": ("dinov2.hub.segmentors", {}),
    _SEG: ("dinov2.heads.segmentation.dinov3", {}),
    f"{_SEG}.backbone.dinov3_adapter": ("dinov2.heads.segmentation.adapter", {}),
    f"{_SEG}.heads.linear_head": ("dinov2.heads.segmentation.linear", {}),
    f"{_SEG}.heads.mask2former_head": ("dinov2.heads.segmentation.mask2former", {}),
    f"{_SEG}.heads.mask2former_transformer_decoder": ("dinov2.heads.segmentation.mask2former", {}),
    f"{_SEG}.heads.pixel_decoder": ("dinov2.heads.segmentation.pixel_decoder", {}),
    f"{_SEG}.utils.ms_deform_attn": ("dinov2.layers.ms_deform_attn", {}),
    f"{_SEG}.utils.position_encoding": ("dinov2.heads.segmentation.pixel_decoder", {}),
    f"{_SEG}.utils.batch_norm": ("dinov2.heads.segmentation.pixel_decoder", {}),
    "dinov3.hub.detectors": ("dinov2.hub.detectors", {}),
    "dinov3.eval.detection.config": ("dinov2.heads.detection.dinov3", {}),
}  # fmt: skip
DINOV3_NOT_KEPT = {
    # the layers the ConvNeXt module defines live in dinov2.layers (ConvNeXtBlock, also named Block here; DropPath,
    # drop_path); its two-format LayerNorm is nn.LayerNorm (channels last) and dinov2.layers.LayerNorm2d
    "dinov3.models.convnext": ["DropPath", "LayerNorm", "drop_path"],
    # weights= takes a path or a URL as it is (dinov2.models.weights reads both)
    "dinov3.hub.backbones": ["convert_path_or_url_to_url"],
    # checkpoint_path= is read by dinov2.models.weights (weights_only=True)
    "dinov3.eval.depth.models": ["load_checkpoint"],
    # the compiled CUDA extension and its autograd Function: the core runs through plain autograd here
    f"{_SEG}.utils.ms_deform_attn": ["MSDA", "MSDeformAttnFunction"],
    # batch norm is plain BatchNorm2d / GroupNorm (get_norm): no frozen, naive-sync or cycling variants
    f"{_SEG}.utils.batch_norm": [
        "CycleBatchNormList",
        "FrozenBatchNorm2d",
        "LayerNorm",
        "NaiveSyncBatchNorm",
    ],
}


def test_the_released_dinov3_names_and_signatures_are_served_at_their_paths_here():
    problems = {}
    for released_module, entries in RELEASED_SURFACE_DINOV3.items():
        path, renamed = DINOV3_PATHS[released_module]
        module = importlib.import_module(path)
        for name, released in entries.items():
            owner, _, method = name.partition(".")
            if owner in DINOV3_NOT_KEPT.get(released_module, ()):
                continue
            target = getattr(module, renamed.get(owner, owner), None)
            if target is not None and method:
                target = getattr(target, method, None)
            if target is None:
                problems[f"{released_module}:{name}"] = [f"no {name} in {path}"]
            elif released is not None and (found := _incompatibilities(released, inspect.signature(target))):
                problems[f"{released_module}:{name}"] = found
    assert not problems, f"released DINOv3 names or signatures not served here: {problems}"


@pytest.mark.parametrize("module", sorted(RELEASED_NAMES))
def test_released_names_import_from_the_released_paths(module):
    imported = importlib.import_module(module)
    missing = [name for name in RELEASED_NAMES[module] if not hasattr(imported, name)]
    assert not missing, f"{module} lacks {missing}"


@pytest.mark.parametrize("module", NOT_PROVIDED)
def test_modules_we_do_not_provide_are_absent(module):
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(module)

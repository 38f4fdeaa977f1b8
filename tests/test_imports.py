"""The package's import graph and dependencies: no import cycle inside ``dinov2/``, every third-party module
imported is declared in ``pyproject.toml`` (optional ones only lazily), and the released import surface exists."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python >= 3.11")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dinov2"


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


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import in ``path``, including function-level and
    ``TYPE_CHECKING`` imports (a cycle through either is still a cycle of the design)."""
    module = _module_name(path)
    tree = ast.parse(path.read_text(), filename=str(path))
    top_level = {id(node) for node in tree.body}
    for node in tree.body:  # `if TYPE_CHECKING:` / `try:` blocks at module level count as module level
        if isinstance(node, (ast.If, ast.Try)):
            top_level |= {id(n) for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, path.name == "__init__.py", node)
            found.append((target, id(node) in top_level))
            # `from package import submodule` imports the submodule too
            found += [(f"{target}.{alias.name}", id(node) in top_level) for alias in node.names]
    return found


def _internal_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target, _ in _imports(path):
            if target in modules and target != name:
                graph[name].add(target)
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            # a package importing its own submodules (re-exports) is the normal package structure
            if nxt.startswith(node + "."):
                continue
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


def test_no_import_cycle_inside_the_package():
    cycle = _find_cycle(_internal_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


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
        for target, module_level in _imports(path):
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
# (FSDP2 is applied from outside, dinov2/train/parallelize.py) and the mmcv/mmseg-based segmentation evaluation.
NOT_PROVIDED = ["dinov2.fsdp", "dinov2.eval.segmentation_m2f"]


@pytest.mark.parametrize("module", sorted(RELEASED_NAMES))
def test_released_names_import_from_the_released_paths(module):
    imported = importlib.import_module(module)
    missing = [name for name in RELEASED_NAMES[module] if not hasattr(imported, name)]
    assert not missing, f"{module} lacks {missing}"


@pytest.mark.parametrize("module", NOT_PROVIDED)
def test_modules_we_do_not_provide_are_absent(module):
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(module)

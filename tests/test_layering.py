"""The layers point one way (DESIGN.md): the maths, the data and the evaluation's pure pieces never reach up
into the platform (Ray Train / Tune, MLflow, djepa.platform); the models import no Ray at all."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("djepa.platform", "mlflow", "ray.train", "ray.tune")


def imports(source: str, package: str) -> list[tuple[int, str]]:
    """Every module a file of `package` imports, at module level or inside a function: (line, dotted name),
    with `from ray import tune` read as ray.tune and relative imports resolved against the package."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + [base]).strip(".")
            out += [(node.lineno, base)] + [(node.lineno, f"{base}.{a.name}") for a in node.names]
    return out


def _hits(folder: str, banned: tuple[str, ...]) -> list[str]:
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, f"no modules under {folder}"
    return [f"{f.relative_to(ROOT)}:{line} imports {name}" for f in files
            for line, name in imports(f.read_text(), ".".join(f.relative_to(ROOT).parts[:-1]))
            if any(name == b or name.startswith(b + ".") for b in banned)]


# djepa/video and djepa/speech are modalities (readers, writers, metrics) and djepa/text a condition (prompts, CLIP
# score): lower layers too, as every modality or condition folder is
@pytest.mark.parametrize("folder", ["djepa/models", "djepa/eval", "djepa/data", "djepa/video", "djepa/text",
                                    "djepa/speech"])
def test_lower_layers_do_not_import_the_platform(folder):
    assert _hits(folder, FORBIDDEN) == []


def test_models_import_no_ray():
    assert _hits("djepa/models", ("ray",)) == []


def test_the_check_sees_function_level_and_from_imports():
    source = "def g():\n    from ray import tune\n    from ..platform import tracking\n    import mlflow\n"
    names = {n for _, n in imports(source, "djepa.eval")}
    assert {"ray.tune", "djepa.platform.tracking", "mlflow"} <= names

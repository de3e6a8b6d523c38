"""A clean install: the wheel adds one import name (`tagtrack`) with its data and nothing else, and the
optional dependencies (pip extras) are imported only where used, with a one-line error naming the extra."""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

from tagtrack import main
from tagtrack.model.errors import MissingExtraError, UserFacingError, import_extra

REPO_ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
GENERIC_NAMES = ("model", "main", "training", "tracker", "realtime", "bench", "tests")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(REPO_ROOT)], check=True, capture_output=True, text=True, timeout=300)
    (path,) = out.glob("tagtrack-*.whl")
    return path


@pytest.mark.slow
def test_wheel_holds_one_package_with_its_data_and_no_tests_or_docs(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"tagtrack", "tagtrack-0.1.0.dist-info"}
    for data in ("tagtrack/model/weights/default.safetensors", "tagtrack/realtime/pose_jsonl.schema.json",
                 "tagtrack/__init__.py", "tagtrack/main.py", "tagtrack/realtime/api.py"):
        assert data in names
    assert not [name for name in names if name.startswith(("tagtrack/tests/", "tagtrack/docs/")) or name.endswith(".md")
                and "/weights/" not in name]
    metadata = zipfile.ZipFile(wheel).read("tagtrack-0.1.0.dist-info/METADATA").decode()
    core = [line.split(":", 1)[1].strip() for line in metadata.splitlines()
            if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert not [req for req in core if re.match(r"(onnx|onnxscript|pycocotools|tensorboard|motmetrics|ray)\b", req)]


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_adds_only_tagtrack(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True, timeout=300)
    # The dependencies (torch, OpenCV, ...) come from this test's environment, appended after the fresh
    # site-packages; that folder's .pth files (our editable install) are not read from a path entry.
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    probe = f"""
import importlib, sys
for name in {GENERIC_NAMES!r}:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        continue
    sys.exit(f"import {{name}} works in a fresh environment")
import tagtrack
from tagtrack.model.checkpoint import DEFAULT_WEIGHTS
from tagtrack.realtime.sinks import JSONL_SCHEMA_PATH
assert DEFAULT_WEIGHTS.is_file() and JSONL_SCHEMA_PATH.is_file()
assert callable(tagtrack.track) and tagtrack.PoseEstimator.__doc__
print(tagtrack.__file__)
"""
    result = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout
    assert Path(result.stdout.strip()).is_relative_to(site)  # the wheel's copy, not this checkout
    help_text = subprocess.run([str(venv / "bin" / "tagtrack"), "--help"], capture_output=True, text=True,
                               cwd=tmp_path, timeout=120)
    assert help_text.returncode == 0 and "predict" in help_text.stdout


def installs(requirements: list[str]) -> set[str]:
    """The distribution names a requirement list installs, following `tagtrack[extra,...]` references."""
    names = set()
    for requirement in requirements:
        inner = re.fullmatch(r"tagtrack\[([\w,]+)\]", requirement)
        if inner:
            for extra in inner.group(1).split(","):
                names |= installs(PYPROJECT["project"]["optional-dependencies"][extra])
        else:
            names.add(re.match(r"[A-Za-z0-9_.-]+", requirement).group().lower())
    return names


def test_every_optional_import_names_an_extra_that_installs_it():
    """import_extra("module", "extra", ...) in the code <-> [project.optional-dependencies] in pyproject."""
    extras = PYPROJECT["project"]["optional-dependencies"]
    core = installs(PYPROJECT["project"]["dependencies"])
    found = set()
    for path in REPO_ROOT.glob("**/*.py"):
        if not {".venv", "tests"} & set(path.relative_to(REPO_ROOT).parts):
            found |= set(re.findall(r'import_extra\(\s*"([\w.]+)",\s*"(\w+)"', path.read_text()))
    assert {extra for _, extra in found} == {"train", "bench", "export", "tensorrt", "cluster"}
    # torch.utils.tensorboard is torch's module, but it needs the tensorboard package.
    distribution = {"pycocotools": "pycocotools", "torch": "tensorboard", "onnx": "onnx", "onnxscript": "onnxscript",
                    "motmetrics": "motmetrics", "ray": "ray"}
    for module, extra in found:
        package = distribution[module.split(".")[0]]
        assert package in installs(extras[extra]), f"{module}: the {extra!r} extra does not install {package}"
        assert package not in core, f"{package} is optional but a core dependency"
    # `make setup` installs dev: everything the tests import.
    assert installs(extras["dev"]) >= installs(extras["train"] + extras["bench"] + extras["export"]) | {"jsonschema"}


def block(monkeypatch, *modules: str) -> None:
    """Make `import module` fail as it does when the package is not installed."""
    for name in list(sys.modules):
        if name in modules or name.startswith(tuple(m + "." for m in modules)):
            monkeypatch.delitem(sys.modules, name)
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def test_missing_extra_is_one_line_naming_it(monkeypatch):
    block(monkeypatch, "motmetrics")
    with pytest.raises(MissingExtraError) as raised:
        import_extra("motmetrics", "bench", "scoring trackers")
    message = str(raised.value)
    assert message == ("scoring trackers needs the 'bench' extra (motmetrics is not installed): "
                       "pip install 'tagtrack[bench]'")
    assert isinstance(raised.value, UserFacingError) and isinstance(raised.value, ImportError)


def test_training_without_the_train_extra(monkeypatch):
    block(monkeypatch, "pycocotools")
    monkeypatch.delitem(sys.modules, "tagtrack.training.dataset", raising=False)
    with pytest.raises(MissingExtraError, match=r"pip install 'tagtrack\[train\]'"):
        import tagtrack.training.dataset  # noqa: F401
    from tagtrack.training.evaluate import evaluate_results

    with pytest.raises(MissingExtraError, match=r"'train' extra"):
        evaluate_results([], {"images": [], "annotations": [], "categories": []})


def test_cli_export_without_the_export_extra(monkeypatch, tmp_path, tiny_weights, capsys):
    block(monkeypatch, "onnx", "onnxscript")
    code = main.main(["export", "--weights", str(tiny_weights), "--onnx", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == main.EXIT_USER_ERROR and len(err) == 1
    assert err[0].startswith("error: exporting the model to ONNX") and "pip install 'tagtrack[export]'" in err[0]
    assert not (tmp_path / "m.onnx").exists()


def test_engines_without_the_export_extra(monkeypatch, tmp_path, tiny_weights):
    from tagtrack.realtime.engines import OnnxRuntimeEngine, TorchEngine, create_engine

    exported = tmp_path / "exported"
    create_engine("ort", tiny_weights, "cpu", cache_dir=exported).close()  # with the extra: export cached
    block(monkeypatch, "onnx", "onnxscript")
    with pytest.raises(MissingExtraError, match=r"tagtrack\[export\]"):
        create_engine("ort", tiny_weights, "cpu", cache_dir=tmp_path / "empty")
    assert isinstance(create_engine("auto", tiny_weights, "cpu", cache_dir=tmp_path / "empty"), TorchEngine)
    # A cached export needs only onnxruntime (core).
    assert isinstance(create_engine("auto", tiny_weights, "cpu", cache_dir=exported), OnnxRuntimeEngine)

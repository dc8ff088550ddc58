"""The extension packages what it ships: Slicer installs only the files CMake lists."""

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "SemSegModule"


def _cmake_list(text: str, variable: str) -> list[str]:
    block = re.search(rf"set\({variable}\n(.*?)\n\s*\)", text, re.S).group(1)
    return [line.strip().replace("${MODULE_NAME}", "SemSeg") for line in block.splitlines() if line.strip()]


def test_every_module_file_is_listed_in_cmake_and_every_listed_file_exists():
    text = (MODULE / "CMakeLists.txt").read_text()
    scripts = _cmake_list(text, "MODULE_PYTHON_SCRIPTS")
    packages = [*(MODULE / "SemSegLib").glob("*.py"), *(MODULE / "SemSegMRML").glob("*.py")]
    on_disk = sorted(str(p.relative_to(MODULE)) for p in [MODULE / "SemSeg.py", *packages])
    assert sorted(scripts) == on_disk
    for resource in _cmake_list(text, "MODULE_PYTHON_RESOURCES"):
        assert (MODULE / resource).is_file(), resource


def test_the_extension_depends_on_pytorch_and_its_urls_point_into_this_repository():
    text = (ROOT / "CMakeLists.txt").read_text()
    assert re.search(r'set\(EXTENSION_DEPENDS\s+"?PyTorch"?\)', text)
    for variable in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        url = re.search(rf'set\({variable}\s+"([^"]+)"\)', text).group(1)
        path = url.split("/main/", 1)[1]
        assert (ROOT / path).is_file(), f"{variable} names {path}, which is not in the repository"


def test_the_extensions_index_entry_agrees_with_the_extension_metadata():
    import json

    entry = json.loads((ROOT / "SemSegExtension" / "SemSeg.json").read_text())
    text = (ROOT / "CMakeLists.txt").read_text()
    depends = re.search(r'set\(EXTENSION_DEPENDS\s+"?([^")]+)"?\)', text).group(1).split()
    category = re.search(r'set\(EXTENSION_CATEGORY\s+"([^"]+)"\)', text).group(1)
    assert entry["build_dependencies"] == depends and entry["category"] == category
    assert entry["scm_url"].endswith(".git") and entry["build_subdirectory"] == "."


def _ui_widgets() -> dict[str, object]:
    import xml.etree.ElementTree as ET

    tree = ET.parse(MODULE / "Resources" / "UI" / "SemSeg.ui")
    return {w.get("name"): w for w in tree.iter() if w.tag in ("widget", "layout", "action") and w.get("name")}


def test_the_widget_uses_only_elements_the_ui_file_defines():
    # Slicer finds a widget's elements by object name at run time: a renamed one is an AttributeError that
    # only shows when the person clicks. The panel cannot be built here, so check the names statically.
    used = set(re.findall(r"\bui\.(\w+)", (MODULE / "SemSeg.py").read_text()))
    assert used, "the widget no longer reads its elements through self.ui: update this test"
    missing = sorted(used - set(_ui_widgets()))
    assert not missing, f"SemSeg.py uses {missing}, which SemSeg.ui does not define"


def test_the_widget_calls_only_what_it_and_the_logic_define(logic):
    # The same for the panel's own methods and attributes and the Logic's: a name that is not there fails only when
    # the person presses the button that reaches it.
    import ast

    tree = ast.parse((MODULE / "SemSeg.py").read_text())
    widget = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SemSegWidget")
    attributes = [n for n in ast.walk(widget) if isinstance(n, ast.Attribute)]
    own = {f.name for f in widget.body if isinstance(f, ast.FunctionDef)}
    own |= {a.attr for a in attributes if isinstance(a.value, ast.Name) and a.value.id == "self"
            and isinstance(a.ctx, ast.Store)}
    inherited = {"layout", "parent", "resourcePath", "addObserver", "removeObserver", "removeObservers"}
    used = {a.attr for a in attributes if isinstance(a.value, ast.Name) and a.value.id == "self"}
    assert "_afterTraining" in used and not used - own - inherited, sorted(used - own - inherited)
    of_logic = {a.attr for a in ast.walk(tree) if isinstance(a, ast.Attribute) and isinstance(a.value, ast.Attribute)
                and a.value.attr == "logic" and isinstance(a.value.value, ast.Name)}
    assert "startLoadingStack" in of_logic
    assert not [name for name in of_logic if not hasattr(logic, name)]


def test_the_combo_boxes_offer_what_the_parameter_node_stores():
    widgets = _ui_widgets()

    def items(name: str) -> list[str]:
        return [i.find("property/string").text for i in widgets[name].findall("item")]

    from SemSegMRML.parameters import DEFAULTS as defaults

    source = (MODULE / "SemSeg.py").read_text()
    # The parameter node stores the combo box's text for these two: the default must be one of the items.
    assert defaults["BudgetUnit"] in items("budgetUnitComboBox") == ["seconds", "iterations"]
    assert defaults["Device"] in items("deviceComboBox")
    import torch

    for name in items("deviceComboBox"):
        assert name == "auto" or torch.device(name).type == name  # what resolve_device() hands to torch
    from SemSegLib.starting_points import AUTO, NONE, SHIPPED

    assert defaults["StartingPoint"] in items("startingPointComboBox") == [AUTO, NONE, *SHIPPED]
    assert 'starting_point=node.GetParameter("StartingPoint")' in source  # the choice reaches Logic.train
    # ...and the index for the prediction scope, in the order the widget maps it.
    scopes = re.search(r'\[("current", "painted", "all")\]\[ui\.predictScopeComboBox\.currentIndex\]', source)
    assert scopes and defaults["PredictScope"] == "all"
    assert [s.split()[0] for s in items("predictScopeComboBox")] == ["current", "painted", "all"]


def test_the_panel_starts_with_the_engines_defaults():
    # The benchmark's figures are the engine's defaults (180 s, ending after 750 steps, ...); a panel that trains
    # less by default gives the person less than the README reports (it started with 60 s until session 60).
    from SemSegLib.prediction import PredictConfig
    from SemSegLib.training import TrainConfig
    from SemSegMRML.parameters import DEFAULTS as defaults

    assert (defaults["BudgetUnit"], float(defaults["BudgetValue"])) == ("seconds", TrainConfig().seconds)
    assert float(defaults["CorrectionWeight"]) == TrainConfig().correction_weight
    assert defaults["StartingPoint"] == TrainConfig().starting_point
    assert defaults["TTA"] == str(PredictConfig().tta).lower()
    spin = _ui_widgets()["budgetSpinBox"]
    shown = {p.get("name"): p.find("number").text for p in spin.findall("property") if p.find("number") is not None}
    assert float(shown["value"]) == TrainConfig().seconds
    tip = spin.find("property[@name='toolTip']/string").text
    assert f"after {TrainConfig().max_iterations} iterations" in tip
    assert TrainConfig().max_finetune_iterations == TrainConfig().max_iterations and "375" not in tip


def _top_level_imports(path: Path) -> set[str]:
    import ast

    names = set()
    for node in ast.parse(path.read_text()).body:  # module level only: a function may import slicer lazily
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_the_engine_imports_no_slicer_and_the_mrml_helpers_no_qt():
    # The engine runs headless (`semseg` on a cluster, pip install without Slicer); the MRML helpers run in
    # CI against slicer-core, which has no Qt.
    for path in (MODULE / "SemSegLib").glob("*.py"):
        found = _top_level_imports(path) & {"slicer", "vtk", "vtkmodules", "qt", "ctk", "SemSegMRML"}
        assert not found, f"{path.name} imports {sorted(found)} at module level"
    for path in (MODULE / "SemSegMRML").glob("*.py"):
        found = _top_level_imports(path) & {"qt", "ctk"}
        assert not found, f"SemSegMRML/{path.name} imports {sorted(found)}"


def test_slicer_installs_every_package_the_engine_declares_and_only_those():
    from SemSegLib.dependencies import PACKAGES

    text = (ROOT / "pyproject.toml").read_text()
    block = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    declared = {re.split(r"[<>=!~ ]", d)[0] for d in re.findall(r'"([^"]+)"', block)}
    # torch comes from PyTorchUtils, numpy with Slicer, matplotlib and tqdm serve only the command line.
    in_slicer = {re.split(r"[<>=!~ ]", r)[0] for r in PACKAGES.values()}
    assert in_slicer == declared - {"torch", "numpy", "matplotlib", "tqdm"}


def test_loading_the_module_imports_no_heavy_package():
    # Slicer imports every module at startup, before PyTorch may be installed (SemSeg asks first, on first use),
    # and a torch import would add seconds to every start. The engine is imported inside the Logic's methods.
    pytest.importorskip("slicer", reason="slicer-core wheel not installed")
    heavy = ("torch", "monai", "sklearn", "skimage", "nrrd", "tifffile", "PIL")
    code = f"import sys, SemSeg; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], cwd=MODULE, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_loading_a_stack_starts_a_first_training_s_imports_on_a_thread_of_their_own():
    # In a fresh interpreter, as in a fresh Slicer: the module loads without them, a stack's loading starts them.
    pytest.importorskip("slicer", reason="slicer-core wheel not installed")
    code = f"""
import sys, tempfile, pathlib
sys.path.insert(0, {str(ROOT / "Testing")!r})
import numpy as np, tifffile
from slicer_scene import make_scene
import SemSeg
from SemSegLib import warm_up
before = [m for m in warm_up.MODULES if m in sys.modules]
folder = pathlib.Path(tempfile.mkdtemp())
for k in range(2):
    tifffile.imwrite(folder / f"img_{{k + 1}}.tif", np.zeros((8, 8), np.uint8))
scene, app, logics = make_scene()
SemSeg.SemSegLogic(scene).loadStack(str(folder))
thread = warm_up._thread
warm_up.wait()
print(before, [m for m in warm_up.MODULES if m not in sys.modules], thread.name, thread.daemon, warm_up.start())
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=MODULE, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[] [] SemSeg warm-up True False"  # once per process


def test_a_developer_reload_imports_the_logic_and_the_engine_afresh(monkeypatch):
    # Slicer's Reload runs SemSeg.py again; the Logic and the engine live in packages it would keep as first imported.
    pytest.importorskip("slicer", reason="slicer-core wheel not installed")
    import types

    import SemSeg
    from SemSegLib.worker import Worker

    reloaded = []
    monkeypatch.setattr(SemSeg.ScriptedLoadableModuleWidget, "onReload", lambda self: reloaded.append(self),
                        raising=False)
    worker = Worker()
    monkeypatch.setattr(SemSeg.SemSegLogic, "_worker", worker)
    ours = {name: module for name, module in sys.modules.items() if name.split(".")[0] in ("SemSegLib", "SemSegMRML")}
    assert "SemSegMRML.logic" in ours and "SemSegLib.training" in ours
    widget = types.SimpleNamespace(_task=None)
    try:
        SemSeg.SemSegWidget.onReload(widget)
        assert not [name for name in sys.modules if name in ours] and reloaded == [widget] and not worker.alive
    finally:
        sys.modules.update(ours)  # the other tests hold these modules' classes


def test_a_pip_install_carries_the_engine_its_starting_points_and_the_command(tmp_path):
    # `pip install .` is the headless / cluster install (README). Data files ship only where pyproject.toml says
    # so, and a wheel without the starting points would fail at the first training, far from the install.
    setuptools = pytest.importorskip("setuptools", reason="a wheel is built without network from this setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip("pyproject.toml needs setuptools >= 77")
    source = tmp_path / "source"  # built from a copy: a build leaves build/ beside pyproject.toml
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        (source / name).write_bytes((ROOT / name).read_bytes())
    shutil.copytree(MODULE / "SemSegLib", source / "SemSegModule" / "SemSegLib",
                    ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
                    "--disable-pip-version-check", str(source), "-w", str(tmp_path / "wheel")],
                   check=True, capture_output=True)
    with zipfile.ZipFile(next((tmp_path / "wheel").glob("semseg-*.whl"))) as wheel:
        names = set(wheel.namelist())
        entry_points = next(wheel.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    shipped = {f"SemSegLib/{p.relative_to(MODULE / 'SemSegLib').as_posix()}"
               for p in (MODULE / "SemSegLib").rglob("*") if p.suffix in (".py", ".pt")}
    assert any(n.endswith(".pt") for n in shipped)
    assert shipped <= names, f"missing from the wheel: {sorted(shipped - names)}"
    assert re.search(r"^semseg = SemSegLib\.cli:main$", entry_points, re.M)

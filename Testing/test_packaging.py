"""The extension packages what it ships: Slicer installs only the files CMake lists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "SemSegModule"


def _cmake_list(text: str, variable: str) -> list[str]:
    block = re.search(rf"set\({variable}\n(.*?)\n\s*\)", text, re.S).group(1)
    return [line.strip().replace("${MODULE_NAME}", "SemSeg") for line in block.splitlines() if line.strip()]


def test_every_module_file_is_listed_in_cmake_and_every_listed_file_exists():
    text = (MODULE / "CMakeLists.txt").read_text()
    scripts = _cmake_list(text, "MODULE_PYTHON_SCRIPTS")
    on_disk = sorted(str(p.relative_to(MODULE)) for p in [MODULE / "SemSeg.py", *(MODULE / "SemSegLib").glob("*.py")])
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

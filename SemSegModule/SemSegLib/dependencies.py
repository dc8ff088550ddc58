"""Installing what SemSeg needs inside Slicer: asked for when first needed, never when the module loads.

torch comes from the PyTorch extension (PyTorchUtils picks the build that fits the GPU); the small packages
come from pip. `slicer` is imported inside the functions, so the engine stays importable without Slicer.
"""

from __future__ import annotations

import importlib
import importlib.util

# import name -> pip requirement
PACKAGES = {"tifffile": "tifffile", "imagecodecs": "imagecodecs", "nrrd": "pynrrd", "scipy": "scipy",
            "skimage": "scikit-image", "sklearn": "scikit-learn", "monai": "monai>=1.3"}


def missing_packages() -> list[str]:
    """Pip requirements of the packages that cannot be imported now."""
    return [req for module, req in PACKAGES.items() if importlib.util.find_spec(module) is None]


def ensure_dependencies() -> bool:
    """torch through PyTorchUtils, the rest through pip, each only after the person agrees."""
    import slicer

    if importlib.util.find_spec("torch") is None:
        try:
            import PyTorchUtils
        except ImportError:
            slicer.util.errorDisplay("SemSeg needs PyTorch. Install the 'PyTorch' extension from the "
                                     "Extensions Manager, restart Slicer, and try again.")
            return False
        torch_logic = PyTorchUtils.PyTorchUtilsLogic()
        if not torch_logic.torchInstalled() and torch_logic.installTorch(askConfirmation=True) is None:
            return False
    missing = missing_packages()
    if not missing:
        return True
    if not slicer.util.confirmOkCancelDisplay(
            f"SemSeg needs these Python packages: {', '.join(missing)}. Install them now?",
            "SemSeg: missing packages"):
        return False
    with slicer.util.tryWithErrorDisplay("Installing Python packages failed.", waitCursor=True):
        install_packages(missing)
    return not missing_packages()


def install_packages(requirements: list[str]) -> None:
    """pip_ensure (`slicer.packaging` in Slicer >= 5.12, `slicer.pydeps` before) or pip_install.

    MONAI is installed without its dependencies: they are torch (which must stay the build PyTorchUtils
    chose for this GPU) and numpy (bundled with Slicer).
    """
    import slicer

    plain = [r for r in requirements if not r.startswith("monai")]
    if plain:
        for module_name in ("slicer.packaging", "slicer.pydeps"):
            try:
                pip_helpers = importlib.import_module(module_name)
            except ImportError:
                continue
            if hasattr(pip_helpers, "pip_ensure"):
                # The `packaging` distribution (bundled with Slicer), not `slicer.packaging`.
                from packaging.requirements import Requirement

                pip_helpers.pip_ensure([Requirement(r) for r in plain], requester="SemSeg")
                break
        else:
            slicer.util.pip_install(plain)
    if len(plain) != len(requirements):
        slicer.util.pip_install("--no-deps monai>=1.3")

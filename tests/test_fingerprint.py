"""Code fingerprints follow the code a stage runs: comments never count, other methods never count."""

import shutil

import pytest

from sparsecl import fingerprint as fp

from .workflow_helpers import ROOT


@pytest.fixture
def package(tmp_path):
    root = tmp_path / "sparsecl"
    shutil.copytree(ROOT / "src" / "sparsecl", root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def stage(root, method):
    mods = [
        "sparsecl.stages",
        fp.registered_module("method", method, root),
        "sparsecl.models.mlp",
        "sparsecl.data.digits",
    ]
    return fp.fingerprint(mods, root)


def edit(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_a_comment_or_docstring_edit_changes_no_fingerprint(package):
    before = {m: stage(package, m) for m in ("finetune", "dst", "focil")}
    masks = package / "sparse" / "masks.py"
    edit(masks, "def apply_masks(", "# a comment\ndef apply_masks(")
    edit(masks, '"""Dense weight x {0, 1} mask:', '"""Dense weight times a {0, 1} mask (reworded):')
    assert {m: stage(package, m) for m in before} == before


def test_a_real_change_in_sparse_reruns_the_sparse_methods_only(package):
    before = {m: stage(package, m) for m in ("finetune", "joint", "dst", "focil")}
    edit(package / "sparse" / "masks.py", "FREE = 255", "FREE = 254")
    after = {m: stage(package, m) for m in before}
    assert after["dst"] != before["dst"] and after["focil"] != before["focil"]
    assert after["finetune"] == before["finetune"] and after["joint"] == before["joint"]


def test_report_code_is_the_reports_alone(package):
    train = stage(package, "finetune")
    report = fp.fingerprint(["sparsecl.report.build"], package)
    edit(package / "report" / "tables.py", "METRICS = (", "METRICS_SHOWN = 1\nMETRICS = (")
    assert fp.fingerprint(["sparsecl.report.build"], package) != report
    assert stage(package, "finetune") == train


def test_each_registered_name_maps_to_the_module_that_registers_it():
    assert fp.registered_module("method", "joint") == "sparsecl.methods.joint"
    assert fp.registered_module("backbone", "resnet18_seed") == "sparsecl.models.resnet_seed"
    assert fp.registered_module("dataset", "fashion_mnist") == "sparsecl.data.mnist"
    assert fp.registered_module("dataset", "mini_imagenet84") == "sparsecl.data.mini_imagenet"

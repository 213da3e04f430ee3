"""``featuregap import coco|voc|yolo``: progress on stderr, a summary, a JSON report of every
skipped annotation, and nothing added the second time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.cli import main
from benchmarks.synthetic import SyntheticDataset, make_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> SyntheticDataset:
    return make_dataset(tmp_path_factory.mktemp("ds"), 6, 2, seed=21)


def test_import_coco_reports_progress_skips_and_is_idempotent(
    dataset: SyntheticDataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert dataset.coco is not None
    document = json.loads(dataset.coco.read_text())
    document["images"][0]["file_name"] = "missing.jpg"
    document["annotations"][3]["bbox"] = [0, 0, 0, 5]
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps(document))
    report = tmp_path / "report.json"
    args = [
        "import",
        "coco",
        str(coco),
        "--images",
        str(dataset.images_dir),
        "--data-dir",
        str(tmp_path / "data"),
        "--report",
        str(report),
    ]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "import coco: 100%" in err and "6/6" in err
    assert out.splitlines()[0] == (
        "images: 5 added, 0 already stored (same bytes); boxes: 9 "
        "added, 0 already there; 3 annotations skipped"
    )
    assert "  2 skipped: no file 'missing.jpg' under the images folder" in out
    written = json.loads(report.read_text())
    assert (written["boxes_added"], written["annotations_skipped"]) == (9, 3)
    assert {(s["what"], s["annotations"]) for s in written["skipped"]} == {
        ("image 'missing.jpg'", 2),
        (f"image {dataset.file_names[1]!r}, annotation 1009", 1),
    }
    assert main([*args, "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert (
        out.startswith(
            "images: 0 added, 5 already stored (same bytes); boxes: 0 added, 9 already there"
        )
        and err == ""
    )


def test_import_voc_and_yolo_folders(
    dataset: SyntheticDataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path / "data")
    assert main(["import", "voc", str(dataset.voc_dir), "--data-dir", data, "--quiet"]) == 0
    assert capsys.readouterr().out.startswith(
        "images: 6 added, 0 already stored (same bytes); boxes: 12 added"
    )
    assert (
        main(
            [
                "import",
                "yolo",
                str(dataset.yolo_dir),
                "--classes",
                str(dataset.classes_file),
                "--data-dir",
                data,
                "--quiet",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.startswith(
        "images: 0 added, 6 already stored (same bytes); boxes: 0 added, 12 already there"
    )


def test_import_errors_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "import",
                "yolo",
                str(tmp_path),
                "--classes",
                str(tmp_path / "none.txt"),
                "--data-dir",
                str(tmp_path / "data"),
            ]
        )
        == 2
    )
    assert capsys.readouterr().err.startswith(
        "featuregap import: error: cannot read the classes file"
    )

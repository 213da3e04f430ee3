"""Dataset imports over HTTP: folders under FEATUREGAP_IMPORT_ROOT (escapes refused) and
uploaded zips (hostile ones refused before anything is unpacked)."""

from __future__ import annotations

import io
import json
import stat
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from benchmarks.synthetic import SyntheticDataset, coco_annotations, make_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> SyntheticDataset:
    return make_dataset(tmp_path_factory.mktemp("root") / "ds", 5, 3, seed=11)


def _client(tmp_path: Path, **settings: Any) -> TestClient:
    return TestClient(create_app(Settings(data_dir=tmp_path / "data", **settings)))


@pytest.fixture
def client(tmp_path: Path, dataset: SyntheticDataset) -> Iterator[TestClient]:
    with _client(
        tmp_path, import_root=dataset.root.parent, max_zip_members=50, max_zip_bytes=3 * 1024 * 1024
    ) as test_client:
        yield test_client


def _finished(client: TestClient, job_id: str) -> dict[str, Any]:
    for _ in range(600):
        job: dict[str, Any] = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


def test_a_coco_folder_under_the_root_imports_as_a_job_and_exports_the_same(
    client: TestClient, dataset: SyntheticDataset
) -> None:
    assert dataset.coco is not None
    body = {"format": "coco", "annotations": "ds/annotations.json", "images_dir": "ds/images"}
    answer = client.post("/api/import/dataset", json=body)
    assert answer.status_code == 202, answer.text
    job = _finished(client, answer.json()["job_id"])
    assert job["state"] == "done", job
    result = job["result"]
    assert (result["images_added"], result["boxes_added"], result["skipped"]) == (5, 15, [])
    exported = client.get("/api/export/coco").json()
    assert coco_annotations(exported) == coco_annotations(json.loads(dataset.coco.read_text()))
    again = _finished(client, client.post("/api/import/dataset", json=body).json()["job_id"])
    assert (again["result"]["boxes_added"], again["result"]["boxes_present"]) == (0, 15)


def test_voc_and_yolo_folders_with_absolute_paths_inside_the_root(
    client: TestClient, dataset: SyntheticDataset
) -> None:
    assert dataset.voc_dir and dataset.yolo_dir
    voc = client.post(
        "/api/import/dataset", json={"format": "voc", "annotations": str(dataset.voc_dir)}
    )
    assert _finished(client, voc.json()["job_id"])["result"]["boxes_added"] == 15
    yolo = client.post(
        "/api/import/dataset",
        json={"format": "yolo", "annotations": "ds/yolo", "classes": "ds/yolo/classes.txt"},
    )
    result = _finished(client, yolo.json()["job_id"])["result"]
    assert (result["images_present"], result["boxes_present"]) == (5, 15)


def test_importing_from_disk_is_off_unless_the_root_is_set(
    tmp_path: Path, dataset: SyntheticDataset
) -> None:
    with _client(tmp_path) as client:
        answer = client.post(
            "/api/import/dataset", json={"format": "voc", "annotations": str(dataset.voc_dir)}
        )
    assert answer.status_code == 403
    assert "FEATUREGAP_IMPORT_ROOT" in answer.json()["detail"]


@pytest.mark.parametrize("where", ["../outside", "/etc", "ds/../../outside", "link"])
def test_paths_and_links_leading_out_of_the_root_are_refused(
    client: TestClient, dataset: SyntheticDataset, tmp_path: Path, where: str
) -> None:
    outside = dataset.root.parent.parent / "outside"
    outside.mkdir(exist_ok=True)
    link = dataset.root.parent / "link"
    if not link.is_symlink():
        link.symlink_to(outside, target_is_directory=True)
    answer = client.post("/api/import/dataset", json={"format": "voc", "annotations": where})
    assert answer.status_code == 403, answer.text
    assert "leads outside FEATUREGAP_IMPORT_ROOT" in answer.json()["detail"]
    coco = client.post(
        "/api/import/dataset",
        json={"format": "coco", "annotations": "ds/annotations.json", "images_dir": where},
    )
    assert coco.status_code == 403


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"format": "coco", "annotations": "ds/none.json", "images_dir": "ds/images"},
            "nothing there",
        ),
        ({"format": "coco", "annotations": "ds/annotations.json"}, "needs images_dir"),
        ({"format": "coco", "annotations": "ds", "images_dir": "ds/images"}, "is not a file"),
        ({"format": "yolo", "annotations": "ds/yolo"}, "needs classes"),
        ({"format": "voc", "annotations": "ds/annotations.json"}, "is not a folder"),
    ],
)
def test_missing_or_wrong_paths_are_422(
    client: TestClient, body: dict[str, Any], message: str
) -> None:
    answer = client.post("/api/import/dataset", json=body)
    assert answer.status_code == 422 and message in answer.json()["detail"], answer.text


def _zip(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _dataset_zip(dataset: SyntheticDataset) -> dict[str, bytes]:
    assert dataset.coco is not None
    members = {
        f"export/images/{name}": (dataset.images_dir / name).read_bytes()
        for name in dataset.file_names
    }
    members["export/annotations.json"] = dataset.coco.read_bytes()
    return members


def _post_zip(client: TestClient, data: bytes, format: str = "coco", **fields: str) -> Any:
    return client.post(
        "/api/import/zip",
        files={"file": ("ds.zip", data, "application/zip")},
        data={"format": format, **fields},
    )


def test_a_coco_zip_imports_as_a_job_and_leaves_no_files_behind(
    client: TestClient, dataset: SyntheticDataset, tmp_path: Path
) -> None:
    answer = _post_zip(client, _zip(_dataset_zip(dataset)))
    assert answer.status_code == 202, answer.text
    job = _finished(client, answer.json()["job_id"])
    assert job["state"] == "done", job
    assert (job["result"]["images_added"], job["result"]["boxes_added"]) == (5, 15)
    exported = client.get("/api/export/coco").json()
    assert sorted(a["id"] for a in exported["annotations"]) == [1000 + 3 * k for k in range(15)]
    assert list((tmp_path / "data" / "imports").iterdir()) == []


def test_a_yolo_zip_finds_its_folders_and_classes(
    client: TestClient, dataset: SyntheticDataset, tmp_path: Path
) -> None:
    assert dataset.yolo_dir is not None
    members = {
        str(p.relative_to(dataset.yolo_dir.parent)): p.read_bytes()
        for p in dataset.yolo_dir.rglob("*")
        if p.is_file()
    }
    job = _finished(client, _post_zip(client, _zip(members), "yolo").json()["job_id"])
    assert (job["state"], job["result"]["boxes_added"]) == ("done", 15), job


def _symlink_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("images/link.jpg")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (_zip({"../evil.json": b"{}"}), 422, "climbs out with '..'"),
        (_zip({"ok/../../evil.json": b"{}"}), 422, "climbs out with '..'"),
        (_zip({"/etc/evil.json": b"{}"}), 422, "absolute path"),
        (_zip({"C:/evil.json": b"{}"}), 422, "names a drive"),
        (_symlink_zip(), 422, "is a symlink"),
        (b"PK\x03\x04 not really a zip", 422, "not a readable .zip"),
        (_zip({"bomb.bin": bytes(2 * 1024 * 1024)}), 413, "FEATUREGAP_MAX_ZIP_RATIO"),
        (_zip({f"f{i}.txt": b"x" for i in range(51)}), 413, "FEATUREGAP_MAX_ZIP_MEMBERS"),
        (
            _zip({"big.bin": bytes(4 * 1024 * 1024)}, zipfile.ZIP_STORED),
            413,
            "FEATUREGAP_MAX_ZIP_BYTES",
        ),
    ],
)
def test_hostile_zips_are_refused_before_anything_is_unpacked(
    client: TestClient, tmp_path: Path, data: bytes, status: int, message: str
) -> None:
    answer = _post_zip(client, data)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["detail"]
    assert list((tmp_path / "data" / "imports").iterdir()) == []
    assert not (tmp_path / "evil.json").exists() and not Path("/etc/evil.json").exists()


def test_a_zip_without_its_annotations_fails_the_job_with_the_reason(
    client: TestClient, dataset: SyntheticDataset, tmp_path: Path
) -> None:
    members = _dataset_zip(dataset)
    members["export/other.json"] = b"{}"
    job = _finished(client, _post_zip(client, _zip(members)).json()["job_id"])
    assert job["state"] == "failed" and "name it in the 'annotations' field" in job["error"]
    named = _post_zip(client, _zip(members), annotations="export/annotations.json")
    assert _finished(client, named.json()["job_id"])["result"]["boxes_added"] == 15
    assert list((tmp_path / "data" / "imports").iterdir()) == []


def test_zip_uploads_have_their_own_size_limit(tmp_path: Path, dataset: SyntheticDataset) -> None:
    data = _zip(_dataset_zip(dataset))
    assert 30_000 < len(data) < 1_000_000
    with _client(tmp_path / "a", max_upload_bytes=1000) as client:  # images and COCO files
        assert client.post("/api/images", files={"file": ("a.png", data)}).status_code == 413
        job = _finished(client, _post_zip(client, data).json()["job_id"])
        assert job["result"]["boxes_added"] == 15
    with _client(tmp_path / "b", max_zip_upload_bytes=30_000) as client:
        for body in (data, data + bytes(2 * 1024 * 1024)):  # checked by the route, the edge
            answer = _post_zip(client, body)
            assert answer.status_code == 413
            assert "FEATUREGAP_MAX_ZIP_UPLOAD_BYTES" in answer.json()["detail"]
        assert list((tmp_path / "b" / "data" / "imports").glob("*")) == []

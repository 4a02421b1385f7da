"""dnx.photos: the real mix of photographs perf_analyzer sends to the ensemble."""

from __future__ import annotations

import base64
import io
import json
import struct

import pytest
from PIL import Image

from dnx.errors import InputError
from dnx.photos import PHONE_SIZE, describe, photo_mix, synthesize, write_input_data


def _decoded(path):
    out = []
    for entry in json.loads(path.read_text())["data"]:
        raw = base64.b64decode(entry["image"]["b64"])
        (length,) = struct.unpack("<I", raw[:4])
        assert length == len(raw) - 4
        out.append(raw[4:])
    return out


def test_default_mix_is_the_shipped_photographs_plus_a_12_mp_phone_photo(tmp_path, photos):
    mix = photo_mix()
    assert len(mix) == len(photos) + 1
    with Image.open(io.BytesIO(mix[-1][1])) as img:
        assert img.format == "JPEG" and img.size == PHONE_SIZE
    assert all(Image.open(io.BytesIO(b)).format == "JPEG" for _, b in mix)
    path = write_input_data(tmp_path / "mix.json", "image", mix)
    assert _decoded(path) == [b for _, b in mix]
    assert describe(mix)["count"] == len(mix) and describe(mix)["max_kb"] > 1000


def test_a_photos_folder_replaces_the_mix(tmp_path):
    (tmp_path / "sub").mkdir()
    blob = synthesize((800, 600))
    (tmp_path / "sub" / "a.jpg").write_bytes(blob)
    (tmp_path / "notes.txt").write_text("not an image")
    assert photo_mix(tmp_path) == [("sub/a.jpg", blob)]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no JPEG/PNG/WebP images found"):
        photo_mix(tmp_path / "empty")
    with pytest.raises(InputError, match="not a folder"):
        photo_mix(tmp_path / "sub" / "a.jpg")


def test_perf_analyzer_sends_the_mix_to_the_ensemble(triton_server, tmp_path):
    """A real perf_analyzer run with the --input-data JSON: every request is answered."""
    import subprocess

    import tritonclient.grpc as grpcclient

    from dnx.perf.analyzer import build_argv, find_perf_analyzer, perf_analyzer_env
    from dnx.perf.levels import ConcurrencyRange

    def counts():
        client = grpcclient.InferenceServerClient(triton_server.grpc_url)
        try:
            s = client.get_inference_statistics("densenet121", as_json=True)["model_stats"][0]["inference_stats"]
        finally:
            client.close()
        return int(s["success"].get("count", 0)), int(s["fail"].get("count", 0))

    mix = photo_mix()
    data = write_input_data(tmp_path / "mix.json", "image", mix)
    argv = build_argv(find_perf_analyzer(), "densenet121", url=triton_server.grpc_url, protocol="grpc", batch_size=1,
                      concurrency=ConcurrencyRange(1, 1), measurement_interval_ms=4000, csv_path=tmp_path / "out.csv",
                      stability_percentage=100, max_trials=3, input_data=data)
    before = counts()
    r = subprocess.run(argv, env=perf_analyzer_env(), capture_output=True, text=True, timeout=600)
    after = counts()
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert after[1] == before[1], "perf_analyzer's requests failed in the ensemble"
    assert after[0] - before[0] >= len(mix), "fewer requests than photographs in the mix"
    assert (tmp_path / "out.csv").read_text().count("\n") >= 2

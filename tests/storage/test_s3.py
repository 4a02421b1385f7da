"""Pure parts of the S3 helpers: URL parsing, endpoint choice, Triton's spelling of a custom endpoint."""

import pytest
from click.testing import CliRunner

from dnx.cli import cli
from dnx.errors import InputError
from dnx.storage.s3 import S3Location, parse_s3_uri, resolve_endpoint, triton_uri


def test_parse_and_format():
    loc = parse_s3_uri("s3://models/densenet/prod/")
    assert loc == S3Location("models", "densenet/prod") and str(loc) == "s3://models/densenet/prod"
    assert loc.key("versions", "abc", "x/1/model.onnx") == "densenet/prod/versions/abc/x/1/model.onnx"
    assert parse_s3_uri("s3://models").key("dnx-current.json") == "dnx-current.json"
    for bad in ("models/densenet", "s3:/models", "gs://b/p", "s3://host:9000/b/p"):
        with pytest.raises(InputError):
            parse_s3_uri(bad)


def test_endpoint_flag_then_standard_variables(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    assert resolve_endpoint(None) is None
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://10.0.0.5:9000/")
    assert resolve_endpoint(None) == "http://10.0.0.5:9000"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://s3.local:9000")
    assert resolve_endpoint(None) == "http://s3.local:9000"
    assert resolve_endpoint("https://minio.example:443") == "https://minio.example:443"


def test_triton_uri_names_the_endpoint_inside_the_url(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    loc = S3Location("models", "densenet/versions/0123")
    assert triton_uri(loc) == "s3://models/densenet/versions/0123"
    assert triton_uri(loc, "http://127.0.0.1:9000") == "s3://http://127.0.0.1:9000/models/densenet/versions/0123"


def test_bad_destination_and_endpoint_flags(fp32_repository):
    runner = CliRunner()
    result = runner.invoke(cli, ["publish", "-r", str(fp32_repository), "models/densenet"])
    assert result.exit_code == 1 and "is not an S3 location; write it as s3://BUCKET/PREFIX" in result.stderr
    result = runner.invoke(cli, ["publish", "-r", str(fp32_repository), "s3://b/p", "--endpoint-url", "127.0.0.1:9000"])
    assert result.exit_code == 1 and "must start with http:// or https://" in result.stderr


def test_server_command_lines_keep_an_s3_url_as_is(tmp_path):
    from dnx.serving.docker import docker_run_argv
    from dnx.serving.server import tritonserver_argv

    url = "s3://http://10.0.0.5:9000/models/densenet/versions/0123"
    argv = tritonserver_argv("tritonserver", url, tmp_path, ["m"], host="127.0.0.1", grpc_port=1, http_port=2, metrics_port=3)
    assert argv[1] == f"--model-repository={url}"
    docker = docker_run_argv(url, tag="26.03", models=["m"], gpu=False, env_names=["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"])
    assert "-v" not in docker and f"--model-repository={url}" in docker
    assert docker[docker.index("AWS_ACCESS_KEY_ID") - 1] == "-e" and "AWS_SECRET_ACCESS_KEY" in docker
    assert not any("=" in a and a.startswith("AWS_") for a in docker)  # values never on the command line
    local = docker_run_argv(tmp_path, tag="26.03", models=["m"], gpu=False)
    assert f"{tmp_path.resolve()}:/models:ro" in local and "--model-repository=/models" in local

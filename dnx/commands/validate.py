"""``dnx validate``: parity table of every model, locally and (``--served``) through Triton."""

from __future__ import annotations

import click


@click.command("validate")
@click.option("--repository", type=click.Path(path_type=str), default="model_repository", show_default=True,
              help="A folder, or s3://BUCKET/PREFIX (fetched into a local cache, checksums verified).")
@click.option("--endpoint-url", envvar="AWS_ENDPOINT_URL", show_envvar=True,
              help="S3-compatible endpoint for an s3:// --repository. Default: AWS S3.")
@click.option("--models", help="Comma-separated model names (default: every model in the manifest).")
@click.option("--served", is_flag=True, help="Also send the inputs through the running server and compare.")
@click.option("--url", help="Server URL (default 127.0.0.1:8001 for gRPC, 127.0.0.1:8000 for HTTP).")
@click.option("--protocol", type=click.Choice(["grpc", "http"]), default="grpc", show_default=True)
@click.option("--random-inputs", type=click.IntRange(min=0), default=4, show_default=True,
              help="Seeded random inputs added to the real photographs.")
@click.option("--json", "as_json", is_flag=True, help="Print the reports as JSON.")
def command(repository, endpoint_url, models, served, url, protocol, random_inputs, as_json):
    """Check every model's outputs against the PyTorch FP32 reference; exit 1 past a gate.

    \b
    Example:
      dnx validate
      dnx validate --served --models densenet121_onnx,densenet121_openvino_bf16

    The first line says how INT8 models were calibrated (bundled or synthetic data is flagged).
    Gates: fp32 max abs <= 1e-3; fp16/bf16 cosine >= 0.999; int8 cosine >= 0.99; with trained
    weights also top-1 agreement (fp16/bf16 99%, int8 95%).
    """
    import json

    from dnx.errors import ParityError
    from dnx.manifest import repository_calibration
    from dnx.validate import validate

    result = validate(repository, models=[m for m in (models or "").split(",") if m] or None, served=served,
                      url=url, protocol=protocol, random_inputs=random_inputs, endpoint_url=endpoint_url)
    calibration = repository_calibration(repository)  # so a demo calibration is never taken for production
    if as_json:
        click.echo(json.dumps({"local": result.local.to_dict(),
                               "served": result.served.to_dict() if result.served else None,
                               "skipped": result.skipped, "calibration": calibration}, indent=2))
    else:
        click.echo(f"Calibration: {calibration}")
        click.echo(result.local.format_table())
        for name, why in result.skipped.items():
            click.echo(f"SKIPPED {name}: {why}")
        if result.served is not None:
            click.echo("")
            click.echo(result.served.format_table())
    if not result.passed:
        bad = result.local.failures() + (result.served.failures() if result.served else [])
        raise ParityError("parity gate failed for " + ", ".join(r.variant for r in bad))

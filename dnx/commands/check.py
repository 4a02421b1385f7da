"""``dnx check``: verify deployed replicas against the repository's golden answers (client only)."""

from __future__ import annotations

import click


@click.command("check")
@click.option("--url", "urls", multiple=True, required=True,
              help="HOST:PORT of a replica (repeatable: every replica must pass). gRPC 8001, HTTP 8000.")
@click.option("--protocol", type=click.Choice(["grpc", "http"]), default="grpc", show_default=True)
@click.option("--repository", help="Where the golden set comes from: the exported folder, or s3://BUCKET/PREFIX "
                                   "(the published version; only small files are fetched).")
@click.option("--golden", type=click.Path(dir_okay=False, path_type=str),
              help="A dnx-golden.json file instead of --repository.")
@click.option("--endpoint-url", envvar="AWS_ENDPOINT_URL", show_envvar=True,
              help="S3-compatible endpoint for an s3:// --repository. Default: AWS S3.")
@click.option("--models", help="Comma-separated model names (default: every model of the golden set).")
@click.option("--requests", type=click.IntRange(min=0), default=0, show_default=True,
              help="Single-image requests for the latency check (0: no latency check).")
@click.option("--concurrency", type=click.IntRange(min=1), default=1, show_default=True,
              help="Requests in flight during the latency check.")
@click.option("--p99-ms", type=click.FloatRange(min=0, min_open=True),
              help="Fail when the p99 latency is above this budget (needs --requests).")
@click.option("--latency-model", help="Model the latency check calls. Default: the ensemble (bytes in).")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds per server call.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def command(urls, protocol, repository, golden, endpoint_url, models, requests, concurrency, p99_ms, latency_model,
            timeout, as_json):
    """Check running replicas: every model ready at the expected version, served config equal to the
    repository's, golden answers within each model's parity gate, the served labels equal to the
    repository's labels.txt, and (--requests) p99 latency.

    Needs only tritonclient: no torch, no model files. Exit 0 only when every check passes, 1 with
    the failing replica, model and figure named.

    \b
    Example:
      dnx check --url triton:8001 --repository s3://models/densenet121 --requests 200 --concurrency 8 --p99-ms 250
      dnx check --url 10.0.0.5:8001 --url 10.0.0.6:8001 --golden dnx-golden.json
    """
    import json

    from dnx.ops.check import CheckFailed, check

    if p99_ms is not None and not requests:
        raise click.UsageError("--p99-ms needs --requests N (the latency check sends N requests)")
    report = check(list(urls), protocol=protocol, repository=repository, golden=golden, endpoint_url=endpoint_url,
                   models=[m for m in (models or "").split(",") if m] or None, requests=requests,
                   concurrency=concurrency, p99_ms=p99_ms, latency_model=latency_model, timeout=timeout)
    for warning in report.warnings:
        click.echo(f"Warning: {warning}", err=True)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(f"Golden set: {report.source}")
        click.echo(report.format_table())
    if not report.passed:
        raise CheckFailed(report.failure_line())

"""``dnx serve``: run tritonserver on a model repository until Ctrl-C."""

import click

from dnx.serving.server import DEFAULT_PORTS, MODES


@click.command("serve")
@click.option("--repository", "-r", default="model_repository", show_default=True,
              type=click.Path(file_okay=False, path_type=str),
              help="Model repository to serve: a folder, or s3://BUCKET/PREFIX published by `dnx publish` "
                   "(Triton reads it from S3).")
@click.option("--endpoint-url", envvar="AWS_ENDPOINT_URL", show_envvar=True,
              help="S3-compatible endpoint for an s3:// --repository, e.g. http://127.0.0.1:9000. Default: AWS S3.")
@click.option("--s3-sync", is_flag=True,
              help="With an s3:// --repository: copy it into ~/.cache/dnx/s3 first (checksums verified, reused "
                   "on restart) instead of Triton reading S3 itself.")
@click.option("--mode", type=click.Choice(MODES), default="auto", show_default=True,
              help="local: tritonserver from the nvidia-pytriton wheel (CPU); docker: the NGC image; "
                   "auto: docker when a Docker engine answers, else local.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the server listens on.")
@click.option("--grpc-port", default=DEFAULT_PORTS["grpc"], show_default=True, type=click.IntRange(0, 65535))
@click.option("--http-port", default=DEFAULT_PORTS["http"], show_default=True, type=click.IntRange(0, 65535))
@click.option("--metrics-port", default=DEFAULT_PORTS["metrics"], show_default=True, type=click.IntRange(0, 65535))
@click.option("--log-file", default="tritonserver.log", show_default=True, type=click.Path(dir_okay=False),
              help="Where the server log is written.")
@click.option("--timeout", default=180.0, show_default=True, type=click.FloatRange(min=1),
              help="Seconds to wait for the server and every model to be ready.")
def command(repository, endpoint_url, s3_sync, mode, host, grpc_port, http_port, metrics_port, log_file, timeout):
    """Serve a model repository with Triton until Ctrl-C or SIGTERM.

    Models the chosen mode cannot run (e.g. TensorRT plans on a CPU machine) are
    skipped with the reason printed. A port of 0 picks a free one. Triton has no
    authentication: a --host other than 127.0.0.1 gets a warning.

    \b
    Example:
      dnx serve --repository model_repository --mode local
      dnx serve --repository s3://models/densenet121 --endpoint-url http://127.0.0.1:9000
      dnx infer cat.jpg --top-k 5          # in another shell
    """
    from dnx.serving.server import TritonServer, exposure_warning, serve

    warning = exposure_warning(host)
    if warning:
        click.echo(f"Warning: {warning}", err=True)

    def ready(server):
        source = server.repository
        if server.remote:
            source = f"{server.remote.uri} (version {server.remote.published.version}"
            source += f", synced to {server.remote.view})" if server.remote.synced else ", read by Triton from S3)"
        click.echo(f"tritonserver ({server.mode} mode) serving {source}")
        for proto, url in server.urls.items():
            click.echo(f"  {proto:8s} {url}")
        for name in server.loaded:
            click.echo(f"  loaded   {name}")
        for name, reason in server.skipped.items():
            click.echo(f"  skipped  {name}: {reason}")
        for warning in server.cpu_warnings():
            click.echo(f"Warning: {warning}", err=True)
        click.echo(f"log: {server.log_file}   (Ctrl-C to stop)")

    server = TritonServer(
        repository, mode=mode, host=host, grpc_port=grpc_port, http_port=http_port,
        metrics_port=metrics_port, log_file=log_file, ready_timeout=timeout, endpoint_url=endpoint_url,
        s3_sync=s3_sync,
    )
    serve(server, on_ready=ready)
    click.echo("tritonserver stopped")

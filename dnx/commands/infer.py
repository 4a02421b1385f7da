"""``dnx infer``: classify images on a running Triton server."""

import json

import click

from dnx.errors import InputError
from dnx.serving.client import DEFAULT_MODEL_NAME, DEFAULT_TIMEOUT_S, PROTOCOLS


@click.command("infer")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--model", "-m", default=DEFAULT_MODEL_NAME, show_default=True, help="Model name on the server.")
@click.option("--url", default=None, help="Server address host:port [default: 127.0.0.1:8001 (grpc), 127.0.0.1:8000 (http)].")
@click.option("--protocol", type=click.Choice(PROTOCOLS), default="grpc", show_default=True)
@click.option("--top-k", "-k", default=5, show_default=True, type=click.IntRange(min=1), help="Labels per image.")
@click.option("--batch-size", "-b", default=8, show_default=True, type=click.IntRange(min=1),
              help="Images per request (capped at the model's max_batch_size).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.option("--async", "async_", is_flag=True, help="Keep a few requests in flight instead of one at a time.")
@click.option("--timeout", default=DEFAULT_TIMEOUT_S, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds to wait for each answer before giving up.")
def command(images, model, url, protocol, top_k, batch_size, as_json, async_, timeout):
    """Classify image files (or folders of them) with a model served by Triton.

    Labels come from the server (Triton's classification extension). Unreadable
    files are reported one by one; the others are still answered (exit code 1 then).
    Folders are read batch by batch as requests go out.

    \b
    Example:
      dnx infer cat.jpg mug.png --top-k 5
      dnx infer photos/ --protocol http --url 127.0.0.1:8000 --json
    """
    from dnx.serving.client import classify

    results = classify(images, url=url, model=model, protocol=protocol, top_k=top_k, batch_size=batch_size, async_=async_,
                       timeout=timeout)
    if as_json:
        click.echo(json.dumps({"model": model, "results": [r.as_dict() for r in results]}, indent=2))
    else:
        for r in results:
            if r.ok:
                click.echo(r.path)
                for rank, p in enumerate(r.predictions, 1):
                    click.echo(f"  {rank}. {p.score:10.4f}  {p.label or '?'} ({p.index})")
            else:
                click.echo(f"error: {r.error}", err=True)
    failed = [r for r in results if not r.ok]
    if failed:
        raise InputError(f"{len(failed)} of {len(results)} files could not be classified (see above); pass readable image files")

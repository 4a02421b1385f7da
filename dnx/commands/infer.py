"""``dnx infer``: classify images on a running Triton server."""

import json

import click

from dnx.errors import InputError
from dnx.serving.client import DEFAULT_ENSEMBLE_NAME, DEFAULT_MODEL_NAME, DEFAULT_TIMEOUT_S, PROTOCOLS


@click.command("infer")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--model", "-m", default=None,
              help=f"Model name on the server [default: {DEFAULT_ENSEMBLE_NAME} (the ensemble), "
                   f"{DEFAULT_MODEL_NAME} with --client-preprocess].")
@click.option("--client-preprocess", is_flag=True,
              help="Decode and preprocess here and send float tensors to a variant (the pre-ensemble path).")
@click.option("--url", default=None, help="Server address host:port [default: 127.0.0.1:8001 (grpc), 127.0.0.1:8000 (http)].")
@click.option("--protocol", type=click.Choice(PROTOCOLS), default="grpc", show_default=True)
@click.option("--top-k", "-k", default=5, show_default=True, type=click.IntRange(min=1), help="Labels per image.")
@click.option("--batch-size", "-b", default=8, show_default=True, type=click.IntRange(min=1),
              help="Images per request (capped at the model's max_batch_size).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.option("--async", "async_", is_flag=True, help="Send all requests before waiting for answers.")
@click.option("--timeout", default=DEFAULT_TIMEOUT_S, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds to wait for each answer before giving up.")
def command(images, model, client_preprocess, url, protocol, top_k, batch_size, as_json, async_, timeout):
    """Classify image files (or folders of them) with a model served by Triton.

    By default the encoded files are sent as they are to the ensemble, which decodes and
    preprocesses them on the server and answers probabilities (printed as percentages).
    --client-preprocess sends float tensors to a variant instead and prints its raw scores.
    Labels come from the server (Triton's classification extension). Unreadable files are
    reported one by one; the others are still answered (exit code 1 then). Folders are read
    batch by batch as requests go out (--client-preprocess).

    \b
    Example:
      dnx infer cat.jpg mug.png --top-k 5
      dnx infer photos/ --protocol http --url 127.0.0.1:8000 --json
      dnx infer cat.jpg --model resnet50
      dnx infer cat.jpg --client-preprocess --model densenet121_openvino_int8
    """
    from dnx.serving.client import classify, classify_bytes

    run = classify if client_preprocess else classify_bytes
    model = model or (DEFAULT_MODEL_NAME if client_preprocess else DEFAULT_ENSEMBLE_NAME)
    results = run(images, url=url, model=model, protocol=protocol, top_k=top_k, batch_size=batch_size, async_=async_,
                  timeout=timeout)
    if as_json:
        click.echo(json.dumps({"model": model, "scores": "logits" if client_preprocess else "probabilities",
                               "results": [r.as_dict() for r in results]}, indent=2))
    else:
        for r in results:
            if r.ok:
                click.echo(r.path)
                for rank, p in enumerate(r.predictions, 1):
                    score = f"{p.score:10.4f}" if client_preprocess else f"{100 * p.score:9.2f}%"
                    click.echo(f"  {rank}. {score}  {p.label or '?'} ({p.index})")
            else:
                click.echo(f"error: {r.error}", err=True)
    failed = [r for r in results if not r.ok]
    if failed:
        raise InputError(f"{len(failed)} of {len(results)} files could not be classified (see above); pass readable image files")

"""``dnx publish``: upload a model repository to S3 (versioned, verified, incremental)."""

import json

import click


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


@click.command("publish")
@click.argument("destination", metavar="s3://BUCKET/PREFIX")
@click.option("--repository", "-r", default="model_repository", show_default=True,
              type=click.Path(file_okay=False, path_type=str), help="Local model repository to publish.")
@click.option("--endpoint-url", envvar="AWS_ENDPOINT_URL", show_envvar=True,
              help="S3-compatible endpoint (MinIO, Ceph, ...), e.g. http://127.0.0.1:9000. Default: AWS S3.")
@click.option("--dry-run", is_flag=True, help="List what would be uploaded, copied or kept; write nothing.")
@click.option("--allow-extra", is_flag=True,
              help="Also publish files dnx-manifest.json does not list (listed as extra, not verified against it).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def command(destination, repository, endpoint_url, dry_run, allow_extra, as_json, quiet):
    """Publish a model repository to S3 so that no reader ever sees a half-written copy.

    Files go under DESTINATION/versions/<content id>/ and DESTINATION/dnx-current.json is
    switched to that version last. Every file must be one dnx-manifest.json lists (what
    `dnx export` and `dnx tune` wrote), with its SHA-256, before anything is uploaded, and
    every object's SHA-256 is checked again after; files already published with the same hash
    are not uploaded again.
    Credentials and region come from the standard AWS variables or ~/.aws.

    \b
    Example:
      dnx publish --repository model_repository s3://models/densenet121
      dnx publish s3://models/densenet121 --endpoint-url http://127.0.0.1:9000 --dry-run
      dnx serve --repository s3://models/densenet121
    """
    from dnx.deploy.publish import publish

    result = publish(repository, destination, endpoint_url=endpoint_url, dry_run=dry_run, allow_extra=allow_extra,
                     progress=not (quiet or as_json), on_wait=lambda line: click.echo(line, err=True))
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    plan = result.plan
    for path in plan.extra:
        click.echo(f"  extra   {path} (not in dnx-manifest.json: published unverified, --allow-extra)")
    if dry_run:
        for obj in plan.objects:
            click.echo(f"  {obj.action:7s} {obj.path} ({_size(obj.size)})")
        click.echo(f"dry run: {plan.count('upload')} files to upload ({_size(plan.upload_bytes)}), "
                   f"{plan.count('copy')} to copy in S3, {plan.count('keep')} already there")
    else:
        click.echo(f"{plan.count('upload')} files uploaded ({_size(result.uploaded_bytes)}), {plan.count('copy')} "
                   f"copied in S3, {plan.count('keep')} already there; all {result.verified} checksums verified"
                   + (f" ({len(plan.extra)} extra files against the local file only)" if plan.extra else ""))
    if plan.switches_pointer:
        action = "would switch" if dry_run else "switched"
        click.echo(f"{action} {plan.location}/dnx-current.json: {plan.previous or '(none)'} -> {plan.version}")
    else:
        click.echo(f"{plan.location} already serves version {plan.version}; nothing to switch")
    if not dry_run:
        click.echo(f"published {result.uri} in {result.seconds:.1f}s")

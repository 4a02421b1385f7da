"""``dnx deploy``: deployment manifests for a published repository (``dnx deploy kubernetes``)."""

import json

import click

from dnx.deploy.kubernetes import CLIENT_IMAGE, DEFAULT_SLO_P99_MS, KUBE_VERSION, SCALE_METRICS, TARGETS


@click.group("deploy")
def command():
    """Write deployment manifests for a repository published with `dnx publish`.

    \b
    Example:
      dnx deploy kubernetes --repository s3://models/densenet121 --out deploy/
    """


@command.command("kubernetes")
@click.option("--repository", "-r", required=True, help="Published repository, s3://BUCKET/PREFIX (see `dnx publish`).")
@click.option("--out", default="deploy", show_default=True, type=click.Path(file_okay=False, path_type=str),
              help="Folder for plain/, kserve/, prometheus-adapter/ and monitoring/.")
@click.option("--replicas", default=2, show_default=True, type=click.IntRange(min=1),
              help="Replicas (and the autoscaler's minimum).")
@click.option("--max-replicas", type=click.IntRange(min=1), help="Autoscaler maximum. Default: 4 x --replicas.")
@click.option("--target", type=click.Choice(TARGETS), default="cpu", show_default=True,
              help="cpu: ONNX Runtime / OpenVINO models; gpu: also TensorRT plans, one nvidia.com/gpu per replica.")
@click.option("--image", help="tritonserver image of the plain Deployment. Default (the rule of `dnx serve --mode "
                              "docker`): nvcr.io/nvidia/tritonserver:<YY.MM>-py3 matching the manifest's TensorRT "
                              "version, or dnx-tritonserver:<YY.MM> (docker/Dockerfile.serve: + Pillow) when the "
                              "repository has the bytes-in ensemble; push it where the cluster pulls from.")
@click.option("--name", help="Name of the Kubernetes objects. Default: the model name from dnx-manifest.json.")
@click.option("--namespace", help="Namespace written into the manifests. Default: none (kubectl's current one).")
@click.option("--scale-metric", type=click.Choice(list(SCALE_METRICS)), default="queue-time", show_default=True,
              help="Triton metric the HorizontalPodAutoscaler follows (through prometheus-adapter).")
@click.option("--scale-target", type=click.IntRange(min=1),
              help="Per-pod target of --scale-metric. Default: 20000 (us queue time) / 50 (inferences/s).")
@click.option("--slo-p99-ms", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_SLO_P99_MS, show_default=True,
              help="p99 latency SLO: the DnxLatencyP99AboveSLO alert (10 minutes above it) and the check Job's budget.")
@click.option("--check-image", default=CLIENT_IMAGE, show_default=True,
              help="Image of plain/check-job.yaml (docker/Dockerfile.client: runs `dnx check`).")
@click.option("--endpoint-url", envvar="AWS_ENDPOINT_URL", show_envvar=True,
              help="S3-compatible endpoint dnx reads the repository from. Default: AWS S3.")
@click.option("--cluster-endpoint-url", help="The same endpoint as the pods reach it (e.g. http://minio.minio:9000). "
                                             "Default: --endpoint-url.")
@click.option("--kube-version", default=KUBE_VERSION, show_default=True,
              help="Kubernetes version whose schemas validate the manifests.")
@click.option("--validate/--no-validate", default=True, show_default=True, help="Validate offline before writing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def kubernetes(repository, out, replicas, max_replicas, target, image, name, namespace, scale_metric, scale_target,
               slo_p99_ms, check_image, endpoint_url, cluster_endpoint_url, kube_version, validate, as_json):
    """Write Kubernetes manifests: plain Triton Deployment (+ Service, HPA, PDB, ServiceMonitor) and a KServe InferenceService.

    Also monitoring/ (Grafana dashboard, PrometheusRule with recording rules and SLO alerts, the
    same rules as a plain Prometheus file) and plain/check-job.yaml (`dnx check` after a rollout).

    The repository's published version is resolved now and written into the manifests, so
    every replica serves the same bytes; publishing again and re-running this command is
    the rollout. Credentials come from the Secret dnx-s3-credentials (see docs/DEPLOY.md).

    \b
    Example:
      dnx deploy kubernetes --repository s3://models/densenet121 --out deploy/ --replicas 2
      kubectl apply -f deploy/plain/          # or: kubectl apply -f deploy/kserve/
    """
    from dnx.deploy.kubernetes import deploy_kubernetes

    result = deploy_kubernetes(
        repository, out, validate=validate, kube_version=kube_version, endpoint_url=endpoint_url,
        cluster_endpoint_url=cluster_endpoint_url, target=target, replicas=replicas, max_replicas=max_replicas,
        image=image, name=name, namespace=namespace, scale_metric=scale_metric, scale_target=scale_target,
        slo_p99_ms=slo_p99_ms, check_image=check_image,
    )
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    spec = result.spec
    click.echo(f"{spec.storage_uri} (version {spec.version}) on {spec.image}, {spec.target} target")
    click.echo(f"  models   {', '.join(spec.models)}")
    for model, reason in spec.skipped.items():
        click.echo(f"  skipped  {model}: {reason}")
    for path, how in result.files.items():
        click.echo(f"  wrote    {result.out / path}  [{how}]")

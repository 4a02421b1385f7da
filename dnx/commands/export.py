"""``dnx export``: build the Triton model repository."""

from __future__ import annotations

from pathlib import Path

import click

from dnx.commands import int_list
from dnx.errors import DnxError
from dnx.spec import PRECISIONS


def _int_list(ctx, param, value):
    return None if value is None else int_list(value, "--" + param.name.replace("_", "-"))


@click.command("export")
@click.option("--model", default="densenet121", show_default=True,
              help="torchvision classifier: densenet121, resnet50, mobilenet_v3_large, efficientnet_b0, convnext_tiny.")
@click.option("--serve-variant", help="Variant behind the <model> ensemble (bytes in, probabilities out). Default: "
                                      "the fastest on this CPU by the export's own timing (--speed-seconds), "
                                      "else the most accurate that passed its gate.")
@click.option("--precision", "precisions", multiple=True, type=click.Choice(PRECISIONS),
              help="Precision variant to build; repeat for several. Default: fp32 (+ bf16 OpenVINO on CPU).")
@click.option("--target", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True,
              help="cpu: ONNX Runtime + OpenVINO, KIND_CPU. gpu: ONNX Runtime + TensorRT, KIND_GPU. "
                   "auto: gpu when TensorRT and a GPU are usable.")
@click.option("--runtime", "runtimes", multiple=True, type=click.Choice(["onnxruntime", "openvino", "tensorrt"]),
              help="Restrict to these runtimes (repeatable). Default: every runtime of the target.")
@click.option("--weights", default="imagenet", show_default=True,
              help="imagenet (torchvision IMAGENET1K_V1, needs network or the torch hub cache), "
                   "random (seeded), or a path to a .pth state dict.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for random weights and inputs.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("model_repository"), show_default=True,
              help="Model repository folder (replaced atomically).")
@click.option("--max-batch", type=click.IntRange(min=1),
              help="Triton max_batch_size (and TensorRT profile max). Default: 16; OpenVINO models use "
                   "their tuned size (the openvino backend pads every batch to it).")
@click.option("--preferred-batch", callback=_int_list, help="Dynamic batcher preferred sizes, e.g. 4,8.")
@click.option("--max-queue-delay-us", type=click.IntRange(min=0), help="Dynamic batcher max queue delay (µs).")
@click.option("--instances", type=click.IntRange(min=1), help="Model instances per model (instance_group count).")
@click.option("--threads", type=click.IntRange(min=1), help="ONNX Runtime intra-op threads per instance.")
@click.option("--opset", type=click.IntRange(min=17), default=17, show_default=True, help="ONNX opset.")
@click.option("--calib-dir", type=click.Path(path_type=Path),
              help="INT8 calibration images (JPEG/PNG, any nesting). Default: the generic photographs bundled "
                   "with scikit-image (a demo, not production; the manifest says so).")
@click.option("--calib-samples", type=click.IntRange(min=1), default=512, show_default=True)
@click.option("--calib-method", type=click.Choice(["entropy", "max", "percentile"]), default="max", show_default=True,
              help="Calibration range method (max: best measured parity on DenseNet-121, and fastest).")
@click.option("--calib-synthetic", is_flag=True,
              help="Calibrate INT8 on random data instead of the bundled photographs (or when --calib-dir has no images).")
@click.option("--speed-seconds", type=click.FloatRange(min=0), default=1.5, show_default=True,
              help="In-process timing of each CPU variant that passed its gate, interleaved, on this CPU "
                   "(chooses the served variant; 0: none).")
@click.option("--keep-failing", is_flag=True, help="Write variants that fail their parity gate anyway.")
@click.option("--cuda-graphs", is_flag=True, help="Enable CUDA graphs in TensorRT model configs.")
@click.option("--workspace-mib", type=click.IntRange(min=64), default=4096, show_default=True,
              help="TensorRT builder workspace limit.")
@click.option("--builder-opt-level", type=click.IntRange(0, 5), default=3, show_default=True)
@click.option("--hardware-compatible", is_flag=True, help="TensorRT engines for Ampere and newer GPUs (slower).")
@click.option("--version-compatible", is_flag=True, help="TensorRT engines loadable by later minor TensorRT versions.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=Path(".dnx-cache"), show_default=True,
              help="Calibration and timing caches.")
@click.option("--wait", is_flag=True, help="Wait for another dnx writing this --out instead of failing.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def command(quiet, wait, **kwargs):
    """Export a torchvision classifier to ONNX, build variants, gate parity, write a Triton repository.

    \b
    Example:
      dnx export --precision int8
      dnx export --precision fp32 --weights random --out model_repository
      dnx export --precision int8 --calib-dir ~/imagenet-val-subset --calib-samples 512
      dnx export --model resnet50 --weights random --serve-variant resnet50_onnx

    Besides the variants, the repository gets <model>_preprocess (encoded image bytes in),
    <model>_softmax and the <model> ensemble (image bytes -> probabilities with labels).
    Flags, --out, --weights and calibration images are checked before any work starts.
    The repository is built beside --out and swapped in only when every stage passed.
    """
    from dnx.pipeline import ExportOptions, export

    options = ExportOptions(**{k: v for k, v in kwargs.items() if v is not None}, progress=not quiet)
    options.precisions = tuple(kwargs["precisions"])
    options.runtimes = tuple(kwargs["runtimes"])
    result = export(options, on_stage=_print_stage, on_warning=lambda w: click.echo(f"Warning: {w}", err=True),
                    wait=wait, on_wait=lambda line: click.echo(line, err=True))
    if not result.committed:
        failed = [s for s in result.stages if s.status.value == "FAILED"]
        reason = failed[0].reason if failed else "no stage completed"
        raise DnxError(f"export failed, {options.out} left unchanged: {reason}"
                       + ("; pass --keep-failing to write failing variants anyway" if result.failed_gate else ""))
    click.echo(f"Wrote {result.repository} ({len(result.manifest.models)} models; "
               f"weights: {result.manifest.weights['source']})")
    ens = result.manifest.ensemble
    if ens:
        click.echo(f"Ensemble {ens['name']}: image bytes -> {ens['preprocess']} -> {ens['variant']} -> "
                   f"{ens['softmax']} -> probabilities ({ens['why']})")
    if result.parity is not None:
        click.echo(result.parity.format_table())
        if not result.parity.passed:
            names = ", ".join(r.variant for r in result.parity.failures())
            click.echo(f"Warning: written despite failing the parity gate (--keep-failing): {names}", err=True)


def _print_stage(r) -> None:
    figs = " ".join(f"{k}={_fmt(v)}" for k, v in r.figures.items() if not isinstance(v, (dict, list)))
    click.echo(f"{r.status.value:8s} {r.name:22s} {r.seconds:6.1f}s  {r.reason or figs}", err=True)


def _fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)

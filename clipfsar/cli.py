"""The ``clipfsar`` command. Subcommands are imported only when run, so ``clipfsar run`` never imports torch."""
from __future__ import annotations

import importlib
import logging
import sys
from typing import Dict, Optional, Tuple

import click

# name -> (module, attribute, one-line help)
COMMANDS: Dict[str, Tuple[str, str, str]] = {
    "synth": ("clipfsar.train.cli", "synth", "Write the synthetic action-clip dataset."),
    "archs": ("clipfsar.train.cli", "archs", "List the backbone architectures."),
    "train": ("clipfsar.train.cli", "train", "Train CLIP-FSAR on episodic N-way K-shot tasks."),
    "pretrain": ("clipfsar.train.pretrain_cli", "pretrain", "Contrastive image-text pretraining (captions)."),
    "eval": ("clipfsar.eval_cli", "evaluate", "Evaluate a checkpoint on seeded test episodes."),
    "ablation": ("clipfsar.train.ablation_cli", "ablation",
                 "The paper's ablation (text token, fusion, zero-shot) over training seeds, with CIs."),
    "calibrate": ("clipfsar.calib.cli", "calibrate",
                  "Add fp16/bf16/int8 graph variants to a bundle, with a precision report."),
    "export": ("clipfsar.export.cli", "export", "Export a checkpoint and support clips to a bundle."),
    "run": ("clipfsar.runtime.cli.run", "run", "Classify a camera, file or network stream with a bundle."),
    "bench": ("clipfsar.runtime.cli.run", "bench", "Per-stage latency and memory of the streaming runtime."),
    "enroll": ("clipfsar.runtime.cli.enroll", "enroll", "Enrol a class from a few clips or its name (torch-free)."),
    "classes": ("clipfsar.runtime.cli.enroll", "classes", "List, remove or rename a bundle's classes."),
    "calibrate-threshold": ("clipfsar.runtime.cli.enroll", "calibrate_threshold",
                            "Fit the 'unknown' threshold at a false-accept rate."),
    "engine": ("clipfsar.runtime.cli.engine", "engine", "Build TensorRT engines on this GPU (cached per device)."),
    "demo": ("clipfsar.demo", "demo", "Run the whole chain on synthetic data (the README's main job)."),
    "studio": ("clipfsar.runtime.cli.studio", "studio",
               "Teach the bundle from the live source in a web page (record, name, enrol, see it)."),
    "serve": ("clipfsar.runtime.cli.serve", "serve", "Serve a bundle from NVIDIA Triton (PyTriton), batching clients."),
    "export-triton": ("clipfsar.export.triton_cli", "export_triton",
                      "Write a Triton model repository (stock tritonserver, DeepStream nvinferserver)."),
}


# modules of the `train` extra (pyproject.toml): a command that needs one says how to install it
TRAIN_EXTRA_MODULES = {"torch", "torchvision", "open_clip", "onnx", "onnxscript", "tensorboard"}


def missing_extra_message(e: ModuleNotFoundError) -> Optional[str]:
    """What to tell a user of a runtime-only install who ran a training-side command (None: not that case)."""
    if (e.name or "").split(".")[0] not in TRAIN_EXTRA_MODULES:
        return None
    command = next((a for a in sys.argv[1:] if a in COMMANDS), "this command")
    return (f"`clipfsar {command}` needs the training extra ({e.name} is not installed); install it with: "
            f"pip install 'clip-fsar[train]' (from a checkout: pip install -e '.[train]')")


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.version_option(package_name="clip-fsar")
def cli(verbose: bool) -> None:
    """clip-fsar: few-shot action recognition from a handful of clips and a name."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for chatty in ("onnx_ir", "onnxscript"):  # the ONNX optimizer logs every pass at INFO
        logging.getLogger(chatty).setLevel(logging.DEBUG if verbose else logging.WARNING)
    from clipfsar.runtime.base.redact import RedactingFilter
    for handler in logging.getLogger().handlers:  # no password of a stream URL reaches a log
        handler.addFilter(RedactingFilter())
    if not verbose:  # open_clip logs through the root logger at every model build ("initialized randomly")
        for handler in logging.getLogger().handlers:
            handler.addFilter(lambda r: "open_clip" not in r.pathname or r.levelno >= logging.ERROR)


def main() -> None:
    from clipfsar.runtime.base.errors import ClipFsarError
    try:
        cli(standalone_mode=False)
    except ClipFsarError as e:
        from clipfsar.runtime.base.redact import redact
        click.echo(f"error: {redact(str(e))}", err=True)
        sys.exit(2)
    except ModuleNotFoundError as e:  # a runtime-only install: say how to get the training side
        message = missing_extra_message(e)
        if message is None:
            raise
        click.echo(f"error: {message}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # a full disk outside a staged write (a temporary folder): the one message, exit 2
        from clipfsar.runtime.base.errors import is_disk_full
        if not is_disk_full(e):
            raise
        where = getattr(e, "filename", None) or "a temporary file"
        click.echo(f"error: no space left on device while writing {where}; nothing was changed", err=True)
        sys.exit(2)

"""``clipfsar pretrain``: contrastive image-text pretraining (see ``clipfsar.train.pretrain``)."""
from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--data", type=click.Path(path_type=Path), required=True,
              help="Dataset folder: clips or images, and a captions file (path<TAB>caption per line, or "
                   "path<TAB>frame<TAB>caption for one frame of a clip).")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Run folder (new, or an empty folder): weights.safetensors, log.csv, pretrain.json.")
@click.option("--captions", type=click.Path(path_type=Path), help="Captions file [default: DATA/captions.txt].")
@click.option("--split", default="train", show_default=True,
              help="With DATA/splits/, only this split's clips are used.")
@click.option("--arch", default="tiny", show_default=True, help="Any open_clip architecture, or tiny.")
@click.option("--weights", help="Initial weights (open_clip tag or file) [default: random init].")
@click.option("--steps", default=1000, show_default=True, type=int)
@click.option("--batch", default=64, show_default=True, type=int, help="(frame or clip, caption) pairs per step.")
@click.option("--frames", default=8, show_default=True, type=int, help="T frames per clip row, mean-pooled.")
@click.option("--clip-fraction", default=0.25, show_default=True, type=float,
              help="Share of each batch drawn from clip rows when the captions file has frame rows too.")
@click.option("--hard-fraction", default=0.0, show_default=True, type=float,
              help="Share of each batch's frame pairs drawn from two neighbourhoods of the current image embedding "
                   "(hard negatives: frames that look alike, told apart only by what differs).")
@click.option("--mine-every", default=100, show_default=True, type=int,
              help="Steps between re-groupings of the clips (k-means of one frame's embedding each).")
@click.option("--mine-clusters", default=10, show_default=True, type=int, help="k-means groups for hard negatives.")
@click.option("--lr", default=2e-3, show_default=True, type=float)
@click.option("--warmup-steps", default=50, show_default=True, type=int)
@click.option("--weight-decay", default=0.1, show_default=True, type=float)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=int, help="Decoding threads.")
@click.option("--cache-mb", default=4096, show_default=True, type=int, help="Decoded frames kept in memory.")
def pretrain(**opts) -> None:
    """CLIP-style contrastive pretraining of the image and text towers on (frame or clip, caption) pairs.

    Writes OUT/weights.safetensors, an ordinary open_clip state dict: `clipfsar train --weights FILE` and
    `open_clip.create_model(ARCH, pretrained=FILE)` load it (for tiny, register its config first:
    `open_clip.create_model(clipfsar.train.backbone.resolve_arch("tiny"), pretrained=FILE)`).
    """
    from .pretrain import PretrainConfig, Pretrainer
    opts = {k: (str(v) if isinstance(v, Path) else v) for k, v in opts.items()}
    file = Pretrainer(PretrainConfig(**opts)).run()
    click.echo(f"weights: {file}")

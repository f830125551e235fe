"""`ppkt synth`: render the synthetic labelled RGB-D dataset."""
from __future__ import annotations

import argparse
from pathlib import Path

from ppkt.commands import add_command
from ppkt.commands.options import count, number, output_dir

# `--preset NAME`: the values it sets; an option given on the command line wins. A copy of
# ppkt.synthetic.dataset.WORLD_PRESETS (importing that here would import numpy into `--help`); a test keeps them equal.
PRESETS = {
    "benchmark": {"scenes": 120, "frames_per_scene": 8, "point_spacing": 0.025, "compact": True},
}


class _Given(argparse.Action):
    """Store the value and remember that the option was given (so that --preset leaves it alone)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.given = getattr(namespace, "given", frozenset()) | {self.dest}


class _GivenFlag(argparse.BooleanOptionalAction):
    """--flag / --no-flag that remembers being given, like _Given."""

    def __call__(self, parser, namespace, values, option_string=None):
        super().__call__(parser, namespace, values, option_string)
        namespace.given = getattr(namespace, "given", frozenset()) | {self.dest}


def apply_preset(args: argparse.Namespace) -> None:
    """Set the values of ``args.preset`` (if any) on the options not given on the command line."""
    given = getattr(args, "given", frozenset())
    for key, value in PRESETS.get(getattr(args, "preset", None) or "", {}).items():
        if key not in given:
            setattr(args, key, value)


# the most points of a room at 2.5 cm spacing (measured on 10 rooms: 155k to 310k); points grow as 1 / spacing^2
POINTS_AT_25MM = 310_000
MAX_PIXELS = 2048 * 4096  # a frame's pixels beyond this: refused (frames are rendered and stored whole)
MAX_POINTS = 20_000_000  # a scene's points (and arrays of ~100 bytes a point while it is sampled) beyond this: refused


def check_synth_args(args: argparse.Namespace) -> None:
    """ArgumentTypeError naming the first bad option (before anything is written)."""
    h, w = args.image_size
    if h * w > MAX_PIXELS:
        raise argparse.ArgumentTypeError(f"--image-size: {h} x {w} is {h * w:.3g} pixels a frame; at most "
                                         f"{MAX_PIXELS:.3g} (e.g. 2048 x 4096)")
    points = POINTS_AT_25MM * (0.025 / args.point_spacing) ** 2 if args.point_spacing > 0 else float("inf")
    if points > MAX_POINTS:
        smallest = 0.025 * (POINTS_AT_25MM / MAX_POINTS) ** 0.5
        raise argparse.ArgumentTypeError(
            f"--point-spacing: {args.point_spacing:g} m would sample up to {points:.3g} points a room "
            f"(about {points * 100 / 2**30:.3g} GiB while it is made); use >= {smallest:.3f} m")
    problems = [("--scenes", args.scenes >= 1, "must be >= 1", args.scenes),
                ("--frames-per-scene", args.frames_per_scene >= 1, "must be >= 1", args.frames_per_scene),
                ("--image-size", h >= 2 and w >= 2, "H and W must be >= 2 pixels", f"{h} {w}"),
                ("--point-spacing", args.point_spacing > 0, "must be > 0 (metres)", args.point_spacing),
                ("--workers", args.workers >= 1, "must be >= 1", args.workers),
                ("--out", not Path(args.out).exists() or Path(args.out).is_dir(), "must be a folder, not a file",
                 args.out)]
    for flag, ok, need, value in problems:
        if not ok:
            raise argparse.ArgumentTypeError(f"{flag}: {need}, got {value}")


def _synth(args: argparse.Namespace) -> int:
    apply_preset(args)
    check_synth_args(args)
    from ppkt.synthetic.dataset import write_dataset

    try:
        out = write_dataset(args.out, scenes=args.scenes, frames_per_scene=args.frames_per_scene, seed=args.seed,
                            image_size=tuple(args.image_size), workers=args.workers,
                            point_spacing=args.point_spacing, depth_noise=not args.no_depth_noise,
                            compact=args.compact)
    except FileExistsError as err:  # --out holds something else: its message says what
        raise argparse.ArgumentTypeError(f"--out: {err}") from None
    print(f"wrote {out}: frames in {out / 'frames'}, labelled scenes in {out / 'scenes'}")
    return 0


def add_commands(subparsers) -> None:
    p = add_command(subparsers, "synth", "render a synthetic labelled RGB-D dataset (frames + 3D scenes)")
    p.add_argument("--out", type=output_dir, required=True, metavar="DIR",
                   help="output folder (new or empty; the same arguments resume it)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="named settings for the options not given: benchmark = the transfer benchmark's world, "
                        "--scenes 120 (24 val) --frames-per-scene 8 --point-spacing 0.025 --compact (375 MB; under "
                        "3.5 min with 2 workers on 2 cores)")
    p.add_argument("--scenes", type=count(1), metavar="N", default=40, action=_Given,
                   help="rooms to generate (a fifth of them, rounded, are the val split)")
    p.add_argument("--frames-per-scene", type=count(1), metavar="N", default=25, action=_Given,
                   help="RGB-D frames rendered per room")
    p.add_argument("--seed", type=count(0), metavar="N", default=0, help="seed of every random choice")
    p.add_argument("--image-size", type=count(2), nargs=2, default=[240, 320], metavar=("H", "W"), help="frame size")
    p.add_argument("--workers", type=count(1), metavar="N", default=2, help="processes rendering scenes in parallel")
    p.add_argument("--point-spacing", type=number(above=0), metavar="M", default=0.02, action=_Given,
                   help="metres between sampled scene points (half the fine-tuning voxel size is enough)")
    p.add_argument("--compact", action=_GivenFlag, default=False,
                   help="scene files with only what segmentation reads: coord float16 (<= 2 mm error), color, "
                        "segment int8, boxes (no normal, instance): 10 instead of 33 bytes a point")
    p.add_argument("--no-depth-noise", action="store_true", help="exact depth, no sensor noise or holes")
    p.set_defaults(func=_synth)

"""Every choice on which the paper's text and the authors' released code
differ, in one place, as two frozen recipes (docs/REPRODUCE.md, "Paper and
release": one row per field, with the sentence, the release's file and
line, and the expected effect).

- ``release``: what produced the published numbers; every tool's default.
- ``paper``: the paper's text taken literally.

Tools take ``--recipe release|paper``; their single flags (``--min-box-side``,
``--ensemble``, ...) override one field of it (``Recipe.with_overrides``).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, fields, replace
from typing import Any

# The paper's weight decay (docs/PAPER.md, section 3).
PAPER_WEIGHT_DECAY = 0.0005


def solver_weight_decay(rule: str, iter_size: int) -> float:
    """The ``weight_decay`` to write into a BVLC Caffe solver with this
    ``iter_size`` so that its update follows ``rule`` (see Recipe)."""
    if rule == "release":
        return PAPER_WEIGHT_DECAY / iter_size
    if rule == "bvlc":
        return PAPER_WEIGHT_DECAY
    raise ValueError(f"weight decay rule must be release or bvlc, not {rule!r}")


@dataclass(frozen=True)
class Recipe:
    name: str
    # How weight decay meets gradient accumulation. "release": the authors'
    # 2015 Caffe added decay x W to the gradient summed over iter_size
    # passes, then scaled the sum by lr / iter_size, so the effective decay
    # was decay / iter_size. "bvlc": the Caffe we build averages the passes
    # first, then adds decay x W.
    weight_decay_rule: str
    # Examples per forward pass, so per BatchNorm statistics; the mini-batch
    # of 64 is reached by iter_size = 64 / batch_per_pass.
    batch_per_pass: int
    # Edge Boxes' edges: "structured" (the structured-edge forest, falling
    # back to gradient edges with a warning when its model is missing) or
    # "gradient".
    edges: str
    # Proposals whose shorter side is below this are skipped at test time ...
    min_box_side: float
    # ... measured on the "enlarged" (1.2x) box or on the "proposal" itself.
    box_side_of: str
    # DeconvNet + FCN-8s: "mean" of probabilities or "product" of scores.
    ensemble: str
    # What fills a test-time proposal crop where its enlarged box leaves the
    # image: "black" (zero pixels, -mean after mean subtraction: the release
    # zero-pads the image before cropping) or "mean" (the mean colour, 0
    # after subtraction, as the training crops are padded).
    proposal_padding: str
    # The FCN-8s partner: "2014" (fcn-8s-pascal, 62.2 on test) or "heavy".
    fcn_variant: str
    # Stage-1 void pixels: "ignore" (kept as 255) or "background".
    stage1_void: str
    # Learning-rate rule: "step" (the solvers' steps) or "plateau".
    lr_policy: str
    # Plateau rule: what validation measures, and how many validations
    # without improvement cut the rate by 10.
    plateau_metric: str
    patience: int

    def solver_weight_decay(self, iter_size: int) -> float:
        return solver_weight_decay(self.weight_decay_rule, iter_size)

    @property
    def iter_size(self) -> int:
        return 64 // self.batch_per_pass

    def with_overrides(self, **values: Any) -> Recipe:
        """This recipe with the fields given (not None) replaced."""
        given = {k: v for k, v in values.items() if v is not None}
        unknown = set(given) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"not recipe fields: {sorted(unknown)}")
        return replace(self, **given) if given else self


RELEASE = Recipe(
    name="release", weight_decay_rule="release", batch_per_pass=8, edges="structured",
    min_box_side=112, box_side_of="enlarged", ensemble="product", proposal_padding="black", fcn_variant="2014",
    stage1_void="ignore", lr_policy="step", plateau_metric="pixel_accuracy", patience=3)

PAPER = Recipe(
    name="paper", weight_decay_rule="bvlc", batch_per_pass=64, edges="structured",
    min_box_side=0, box_side_of="enlarged", ensemble="mean", proposal_padding="black", fcn_variant="2014",
    stage1_void="background", lr_policy="plateau", plateau_metric="pixel_accuracy", patience=3)

RECIPES = {r.name: r for r in (RELEASE, PAPER)}
# The fields that decide inference (tools/infer.py and tools/figures.py).
INFERENCE_FIELDS = ("min_box_side", "box_side_of", "ensemble", "proposal_padding", "fcn_variant", "edges")
CHOICES = dict(weight_decay_rule=("release", "bvlc"), edges=("structured", "gradient"),
               box_side_of=("enlarged", "proposal"), ensemble=("mean", "product"),
               proposal_padding=("black", "mean"),
               fcn_variant=("2014", "heavy"), stage1_void=("ignore", "background"),
               lr_policy=("step", "plateau"), plateau_metric=("pixel_accuracy", "mean_iou"))


def add_recipe_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", choices=tuple(RECIPES), default="release",
                        help="release (default): what produced the paper's numbers; paper: its text taken "
                             "literally (docs/REPRODUCE.md, 'Paper and release'); single flags override one "
                             "field")


def add_field_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *names: str,
                      help: dict[str, str] | None = None) -> None:
    """One flag per recipe field, defaulting to None (the recipe's value)."""
    kinds = {f.name: f.type for f in fields(Recipe)}
    for name in names:
        kind = {"float": float, "int": int}.get(str(kinds[name]), str)
        text = (help or {}).get(name, "")
        values = " / ".join(f"{r}: {getattr(RECIPES[r], name)}" for r in RECIPES)
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, choices=CHOICES.get(name),
                            help=f"{text} (default from --recipe; {values})".strip())


def recipe_from_args(args: argparse.Namespace, *names: str) -> Recipe:
    """The --recipe with the field flags ``names`` that were given laid over it."""
    return RECIPES[args.recipe].with_overrides(**{n: getattr(args, n) for n in names})


@dataclass(frozen=True)
class DeepLabRecipe:
    """DeepLab-CRF-LargeFOV's training as its authors released it (Chen et
    al., ICLR 2015; docs/DEEPLAB.md lists where ours differs and why)."""

    name: str
    crop_size: int          # random crops of whole images (mean/void padding below it)
    test_size: int          # validation and deploy: images padded to this side
    batch_size: int         # images per update (the paper's mini-batch of 20)
    batch_per_pass: int     # images per forward pass; iter_size makes up the rest
    base_lr: float
    fc8_lr_mult: tuple[float, float]  # the new classifier's weights and biases
    gamma: float
    stepsize: int
    max_iter: int
    momentum: float
    weight_decay: float     # BVLC rule: passes averaged, then decay x W added once
    image_set: str          # deconvnet.data.image_sets: train_aug, VOC 2012 val left out
    mirror: bool

    @property
    def iter_size(self) -> int:
        if self.batch_size % self.batch_per_pass:
            raise ValueError(f"batch_per_pass {self.batch_per_pass} must divide the batch {self.batch_size}")
        return self.batch_size // self.batch_per_pass


DEEPLAB_LARGEFOV = DeepLabRecipe(
    name="deeplab-largefov", crop_size=321, test_size=513, batch_size=20, batch_per_pass=10, base_lr=0.001,
    fc8_lr_mult=(10, 20), gamma=0.1, stepsize=2000, max_iter=6000, momentum=0.9,
    weight_decay=PAPER_WEIGHT_DECAY, image_set="union-minus-voc-val", mirror=True)

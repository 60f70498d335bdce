#!/usr/bin/env python3
"""Segments images with DeconvNet (docs/PAPER.md, section 4): edge-box proposals (top
--top-k by objectness), each enlarged 1.2x, resized to the net's input and
run in batches; score maps pasted back and aggregated (max, Eq. 1, or sum,
Eq. 2); softmax; optionally the FCN-8s ensemble and a dense CRF.

--recipe (release, the default, or paper; docs/REPRODUCE.md) decides what
the paper and the authors' release disagree on; single flags override it:

  --min-box-side, --box-side-of  release: skip proposals whose enlarged box
                 has a side under 112 px (the whole image when none is left);
                 paper: no minimum
  --proposal-padding  both: black (what fills a crop beyond the image: the
                 release zero-pads the image before cropping); mean: the mean
                 colour, as the training crops are padded
  --ensemble     release: product (aggregated DeconvNet scores times
                 max(0, FCN-8s scores), then softmax, then CRF); paper: mean
                 (average of the two probability maps, then CRF)
  --fcn-variant  both: 2014 (fcn-8s-pascal.caffemodel, the paper's FCN-8s, with
                 prototxt/fcn8s_2014_deploy.prototxt); heavy: fcn8s-heavy-pascal
  --edges        both: structured (models/sed_model.yml.gz, or --edge-model;
                 gradient edges with a warning when missing)

Ensembles of any of DeconvNet, FCN-8s and DeepLab-LargeFOV (docs/DEEPLAB.md):
--ensemble-member NET WEIGHTS, once per net (deconvnet, fcn8s, deeplab-largefov;
--weights and --fcn-weights are the same as naming deconvnet and fcn8s).
The nets' probabilities are averaged (the paper's rule); the release's
product rule is defined for DeconvNet + FCN-8s only, and the recipe's rule
applies to that pair alone. One net alone is that net's segmentation
(DeepLab-LargeFOV or FCN-8s: whole image, upsampled scores, softmax). The
CRF's settings default to DeepLab-LargeFOV's own for DeepLab alone and to
DeconvNet's otherwise; --crf-* flags override them.

The settings used (recipe, edges, models) are written to <out>/run.json; a
later run into the same --out with other settings is refused (--overwrite
redoes the folder with the new ones), and so is a shard of another image
list than the folder's earlier shards. Flags that would have no effect
(--crf-* without --crf, --ensemble without --fcn-weights, ...) are refused.

Outputs under --out: labels/<id>.png (VOC palette, values 0..20), with
--save-probs probs/<id>.npy (float16, 21xHxW), with --overlays
overlays/<id>.png, and with --voc-submission the server's layout
results/VOC2012/Segmentation/comp6_test_cls/<id>.png plus results.tgz.
Images whose label PNG exists are skipped (--overwrite redoes them).

--shard K/N (or a Slurm array task, by itself) segments only the K-th of N
parts of the image list into the same --out; eval_voc.py then scores the
whole folder.

--workers N (default: the usable cores less one) pipelines the run: worker
processes compute the proposals and crops ahead of the forward pass and do
the paste-back, aggregation, ensemble, CRF and writing behind it, while this
process runs the networks; the outputs are the same bytes as --workers 0's
(one image after another, in this process). Ctrl-C or SIGTERM stops the
workers and leaves no partial file; images done stay done. On the CPU this
process's BLAS then runs on the cores the workers leave (--blas-threads),
so that the two do not compete for the same cores.
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from dataclasses import asdict, replace
from pathlib import Path

from tqdm import tqdm

from deconvnet.common.atomic import atomic_path
from deconvnet.common.blas import blas_threads, set_blas_threads
from deconvnet.common.cli import (
    PROTOTXT,
    add_options,
    check_output_folder,
    cli_fields,
    given_options,
    non_negative_int,
    positive_int,
    refuse_ineffective,
    run_tool,
    setup_logging,
)
from deconvnet.common.machine import usable_cores, use_device
from deconvnet.common.recipes import INFERENCE_FIELDS, add_field_options, add_recipe_option, recipe_from_args
from deconvnet.common.sharding import add_shard_option, shard_from_env
from deconvnet.data.proposals import EdgeBoxParams, EdgeModelError, ProposalCache, edges_record, resolve_edges
from deconvnet.data.voc import read_split
from deconvnet.infer import run_record
from deconvnet.infer.crf import DECONVNET_CRF, MODEL_CRF, CRFParams
from deconvnet.infer.models import (
    DEEPLAB_DEPLOY,
    FCN_DEPLOY,
    MEMBERS,
    DeconvNetModel,
    WeightsMismatch,
    WholeImageModel,
)
from deconvnet.infer.outputs import OutputOptions, submission_archive
from deconvnet.infer.pipeline import PRODUCT_PAIR, Pipeline
from deconvnet.infer.pipelined import PipelinedRun, RunReport, WorkerFailed, describe_bound, queue_bytes, run_serial

BATCH_HELP = (
    "proposals per forward pass. By default, the most that fit, evened out over the passes, at the net's "
    "memory per proposal: its blobs plus the input-sized buffers of BatchNorm (2) and in-place Scale (1), "
    "counted from the loaded net (the full net needs 432 MiB per proposal, folded 138 MiB; "
    "docs/BENCHMARKS.md). On the CPU: in 60%% of the memory available once the net is loaded (MemAvailable, "
    "or the cgroup's limit) less the --workers queues; on a 24 GiB machine 2 passes of 25 unfolded, all 50 "
    "folded in one. On a GPU: in 90%% of the device's free memory (cudaMemGetInfo) less the weights, "
    "cuDNN's workspaces (8 MiB x 3 streams per convolution) and the FCN-8s partner; on a 12 GB card 3 passes "
    "of 17 unfolded. The choice is logged")
WORKERS_HELP = (
    "worker processes for the CPU stages (proposals and crops ahead of the forward pass; aggregation, "
    "ensemble, CRF and writing behind it); 0: one image after another in this process. Default: the usable "
    "cores (affinity, cgroup quota, SLURM_CPUS_PER_TASK) less one, here %(default)s. The queues hold at most "
    "N+1 images ahead (crops: 30 MiB each for the full net at 50 proposals) and N+1 behind (score maps: "
    "201 MiB each), whatever the image count; the log states the bound")

# What Pillow reads (read_image); other files in an input folder are listed as skipped.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif"}


def folder_images(folder: Path) -> list[Path]:
    """The image files of a folder; what else it holds is logged, not lost silently."""
    entries = sorted(folder.iterdir())
    images = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    others = [p.name + ("/" if p.is_dir() else "") for p in entries if p not in images]
    if others:
        logging.info("infer: %s: skipping %d entries that are not images (%s): %s", folder, len(others),
                     ", ".join(sorted(IMAGE_SUFFIXES)), ", ".join(others[:10]) + (" ..." if len(others) > 10 else ""))
    return images


def gather_inputs(args) -> list[tuple[str, Path]]:
    """(id, path) pairs from files, folders, or a VOC root with a split/list."""
    items: list[tuple[str, Path]] = []
    for path in args.inputs:
        if path.is_dir():
            items += [(p.stem, p) for p in folder_images(path)]
        else:
            items.append((path.stem, path))  # a missing file is reported per image
    if args.voc_root:
        ids = read_split(args.list) if args.list else read_split(
            args.voc_root / "ImageSets" / "Segmentation" / f"{args.split}.txt")
        items += [(i, args.voc_root / "JPEGImages" / f"{i}.jpg") for i in ids]
    return unique_ids(items)


def unique_ids(items: list[tuple[str, Path]]) -> list[tuple[str, Path]]:
    """Outputs are named by id: the same file listed twice runs once, and
    different files with one stem (same.jpg, same.png, or a/x.jpg and
    b/x.jpg) get ids that keep them apart, with a warning."""
    seen: dict[Path, str] = {}
    by_stem: dict[str, list[Path]] = {}
    for image_id, path in items:
        if path.resolve() not in seen:
            seen[path.resolve()] = image_id
            by_stem.setdefault(image_id, []).append(path)
    result = []
    for image_id, paths in by_stem.items():
        if len(paths) == 1:
            result.append((image_id, paths[0]))
            continue
        renamed = [(_distinct_id(image_id, p, paths), p) for p in paths]
        if len({i for i, _ in renamed}) < len(renamed):  # still alike: number them
            renamed = [(f"{image_id}_{k}", p) for k, (_, p) in enumerate(renamed, start=1)]
        logging.warning("infer: %d inputs share the name %r; their outputs are named %s", len(paths), image_id,
                        ", ".join(f"{i} ({p})" for i, p in renamed))
        result += renamed
    return result


def _distinct_id(stem: str, path: Path, group: list[Path]) -> str:
    """stem_ext when the extensions differ, else the parent folder's name too."""
    if len({p.suffix.lower() for p in group}) == len(group):
        return f"{stem}_{path.suffix.lstrip('.').lower()}"
    return f"{path.parent.name}_{stem}{'_' + path.suffix.lstrip('.').lower() if path.suffix else ''}"


def ineffective_rules(args, recipe) -> list[tuple[tuple[str, ...], bool, str]]:
    """Flags that would be accepted and ignored (deconvnet.common.cli.refuse_ineffective)."""
    crf_flags = tuple(f"crf_{f.name}" for f in cli_fields(CRFParams))
    members = ensemble_members(args)
    return [
        (crf_flags, not args.crf, "without --crf (the CRF does not run)"),
        (("ensemble",), len(members) < 2, "without --fcn-weights or a second --ensemble-member (no ensemble runs)"),
        (("fcn_variant", "fcn_model"), "fcn8s" not in members,
         "without --fcn-weights (the FCN-8s ensemble does not run)"),
        (("deeplab_model",), "deeplab-largefov" not in members, "without DeepLab-LargeFOV among the nets"),
        (("model",), "deconvnet" not in members, "without DeconvNet among the nets (--weights)"),
        (("edge_model",), recipe.edges == "gradient", "with gradient edges (--edges gradient)"),
        (("box_side_of",), recipe.min_box_side == 0, "when no minimum box side is set (--min-box-side 0)"),
        (("blas_threads",), args.gpu is not None, "with --gpu (the networks run on the GPU)"),
    ]


def ensemble_members(args) -> dict[str, Path]:
    """The nets of this run and their weights, in the order DeconvNet,
    FCN-8s, DeepLab-LargeFOV; ValueError for an unknown or repeated net."""
    given: list[tuple[str, Path]] = []
    if args.weights is not None:
        given.append(("deconvnet", args.weights))
    if args.fcn_weights is not None:
        given.append(("fcn8s", args.fcn_weights))
    given += [(name, Path(weights)) for name, weights in args.ensemble_member or []]
    found: dict[str, Path] = {}
    for name, weights in given:
        if name not in MEMBERS:
            raise ValueError(f"--ensemble-member {name}: the nets are {', '.join(MEMBERS)}")
        if name in found:
            raise ValueError(f"{name} given twice ({found[name]} and {weights}; --weights is deconvnet's, "
                             "--fcn-weights fcn8s's): one set of weights per net")
        found[name] = weights
    return {name: found[name] for name in MEMBERS if name in found}


def ensemble_rule(members: dict[str, Path], recipe_rule: str, typed: bool) -> str | None:
    """The rule combining ``members`` (None for one net): the recipe's for
    DeconvNet + FCN-8s, the mean otherwise; ValueError for a product
    asked of other nets."""
    if len(members) < 2:
        return None
    if set(members) == PRODUCT_PAIR:
        return recipe_rule
    if typed and recipe_rule == "product":
        raise ValueError(f"--ensemble product is the release's DeconvNet x FCN-8s rule, not defined for "
                         f"{' + '.join(members)}: use --ensemble mean (the paper's)")
    return "mean"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", type=Path, help="image files or folders")
    p.add_argument("--voc-root", type=Path, help="VOCdevkit/VOC2012: take images from a split")
    p.add_argument("--split", default="val", help="split of --voc-root (default val)")
    p.add_argument("--list", type=Path, help="file of image ids (with --voc-root)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--model", type=Path, default=PROTOTXT / "deconvnet_deploy.prototxt",
                   help="deploy prototxt (default %(default)s); with a caffemodel from tools/fold_bn.py, "
                        "its folded prototxt, such as prototxt/deconvnet_deploy_folded.prototxt")
    p.add_argument("--weights", type=Path, help="DeconvNet caffemodel (the same as --ensemble-member deconvnet W)")
    p.add_argument("--allow-missing-weights", action="store_true",
                   help="go on when a caffemodel lacks learned layers of its net (they are listed and keep their "
                        "random fillers); by default that stops the tool")
    p.add_argument("--top-k", type=positive_int, default=50, help="proposals per image (default 50)")
    p.add_argument("--batch", type=positive_int, help=BATCH_HELP)
    p.add_argument("--aggregate", choices=("max", "sum"), default="max", help="Eq. 1 max (default) or Eq. 2 sum")
    p.add_argument("--proposal-cache", type=Path, help="default: <out>/proposals")
    p.add_argument("--edge-model", default="",
                   help="structured-edge model.yml.gz (default: models/sed_model.yml.gz if present)")
    add_recipe_option(p)
    add_field_options(p, "min_box_side", "box_side_of", "proposal_padding", "edges", help=dict(
        min_box_side="skip proposals whose shorter side is below this", box_side_of="the box that side is "
        "measured on: enlarged (1.2x, cropped) or proposal", edges="Edge Boxes' edges",
        proposal_padding="what fills a proposal crop beyond the image: black (the release's zero-padded "
        "image) or mean (the mean colour)"))
    crf = p.add_argument_group("dense CRF")
    crf.add_argument("--crf", action="store_true",
                     help="apply the fully connected CRF, with the settings of DeepLab-LargeFOV when it is the only "
                          f"net ({MODEL_CRF['deeplab-largefov']}), else DeconvNet's ({DECONVNET_CRF}); the "
                          "flags below override single settings")
    add_options(crf, CRFParams, prefix="crf-", overrides=True)
    ens = p.add_argument_group("ensembles")
    ens.add_argument("--ensemble-member", nargs=2, action="append", metavar=("NET", "WEIGHTS"),
                     help=f"a net of the ensemble ({', '.join(MEMBERS)}) and its caffemodel; once per net")
    ens.add_argument("--fcn-weights", type=Path, help="FCN-8s caffemodel (the same as --ensemble-member fcn8s W)")
    ens.add_argument("--fcn-model", type=Path, help="FCN-8s deploy prototxt (default: the --fcn-variant's)")
    ens.add_argument("--deeplab-model", type=Path, default=DEEPLAB_DEPLOY,
                     help="DeepLab-LargeFOV deploy prototxt (default %(default)s)")
    add_field_options(ens, "ensemble", "fcn_variant", help=dict(
        ensemble="mean of probabilities or product of scores", fcn_variant="the FCN-8s partner's layout"))
    out = p.add_argument_group("outputs")
    out.add_argument("--save-probs", action="store_true", help="write float16 probability maps")
    out.add_argument("--overlays", action="store_true", help="write overlay PNGs")
    out.add_argument("--voc-submission", action="store_true", help="write the VOC server layout and archive")
    out.add_argument("--overwrite", action="store_true", help="redo images already done")
    p.add_argument("--gpu", type=int, help="GPU id (default: CPU)")
    p.add_argument("--workers", type=non_negative_int, default=max(usable_cores() - 1, 0), help=WORKERS_HELP)
    p.add_argument("--blas-threads", type=positive_int,
                   help="threads of Caffe's BLAS on the CPU (default: the usable cores less --workers, at least 1; "
                        "the results do not depend on it)")
    p.add_argument("--timings", type=Path, help="also write the mean seconds per image of each step (proposals, "
                                                "forward, aggregation, crf, fcn, writing: busy time, which "
                                                "overlaps with --workers) and the wall time to this JSON file")
    add_shard_option(p, "image list (every shard writes into the same --out)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging()
    recipe = recipe_from_args(args, *INFERENCE_FIELDS)
    try:
        members = ensemble_members(args)
        rule = ensemble_rule(members, recipe.ensemble, args.ensemble is not None)
    except ValueError as err:
        logging.error("infer: %s", err)
        return 2
    if not members:
        logging.error("infer: no net given: --weights (DeconvNet), --fcn-weights (FCN-8s) or --ensemble-member "
                      "NET WEIGHTS")
        return 2
    if refuse_ineffective("infer", parser, argv, ineffective_rules(args, recipe)):
        return 2
    problem = check_output_folder(args.out)
    if problem:
        logging.error("infer: %s", problem)
        return 2
    items = gather_inputs(args)
    if not items:
        logging.error("infer: no images given (files, folders, or --voc-root)")
        return 2
    try:
        shard = args.shard or shard_from_env()
    except ValueError as err:
        logging.error("infer: %s", err)
        return 2
    listed = items
    if shard is not None:
        start, end = shard.bounds(len(items))
        logging.info("infer: shard %s: images %d to %d of %d", shard, start + 1, end, len(items))
        items = shard.take(items)
    fcn_model = args.fcn_model or FCN_DEPLOY[recipe.fcn_variant]
    prototxts = {"deconvnet": args.model, "fcn8s": fcn_model, "deeplab-largefov": args.deeplab_model}
    for name, weights in members.items():
        for path, what in ((prototxts[name], f"{name}'s prototxt"), (weights, f"{name}'s weights")):
            if not path.is_file():
                logging.error("infer: %s %s not found", what, path)
                return 2
    try:
        edge_params = EdgeBoxParams(edge_model=resolve_edges(recipe.edges, args.edge_model))
    except EdgeModelError as err:
        logging.error("infer: %s", err)
        return 2
    use_device(args.gpu)
    try:
        whole = tuple(WholeImageModel(prototxts[name], weights, args.allow_missing_weights, name)
                      for name, weights in members.items() if name != "deconvnet")
        deconvnet = (DeconvNetModel(args.model, members["deconvnet"], args.batch or args.top_k,
                                    args.allow_missing_weights, args.top_k) if "deconvnet" in members else None)
    except WeightsMismatch as err:
        logging.error("infer: %s", err)
        return 2
    if deconvnet is None and args.workers:
        logging.info("infer: no DeconvNet, no proposals to prepare ahead: one image after another")
        args.workers = 0
    if deconvnet is not None and args.workers:
        count, crop_bytes, score_bytes = queue_bytes(args.workers, args.top_k, deconvnet.size, deconvnet.classes)
        logging.info("infer: %d workers; %s", args.workers,
                     describe_bound(args.workers, args.top_k, deconvnet.size, deconvnet.classes))
    if args.gpu is None and (args.blas_threads or args.workers):
        threads = set_blas_threads(args.blas_threads or max(usable_cores() - args.workers, 1))
        logging.info("infer: Caffe's BLAS on %s thread(s)%s", threads,
                     f", beside {args.workers} workers" if args.workers else "")
    if deconvnet is not None and not args.batch:
        on_gpu = args.gpu is not None
        reserved = sum(m.device_bytes() for m in whole) if on_gpu else (
            count * (crop_bytes + score_bytes) if args.workers else 0)
        deconvnet.batch = deconvnet.choose_batch(args.top_k, on_gpu, reserved)
    crf = None
    if args.crf:
        base = MODEL_CRF["deeplab-largefov"] if list(members) == ["deeplab-largefov"] else DECONVNET_CRF
        crf = replace(base, **given_options(CRFParams, args, prefix="crf-"))
    pipeline = Pipeline(deconvnet, args.top_k, recipe.min_box_side, recipe.box_side_of, args.aggregate, crf, whole,
                        rule or recipe.ensemble, recipe.proposal_padding)
    proposals = ProposalCache(args.proposal_cache or args.out / "proposals", edge_params)
    recorded_recipe = asdict(recipe)
    if rule is None:  # no ensemble ran: its fields say nothing about these labels
        del recorded_recipe["ensemble"]
    else:
        recorded_recipe["ensemble"] = rule
    if "fcn8s" not in members:
        del recorded_recipe["fcn_variant"]
    fcn_record = (dict(variant=recipe.fcn_variant, ensemble=rule, model=str(fcn_model),
                       weights=str(members["fcn8s"])) if "fcn8s" in members else None)
    run_record.claim(args.out, dict(
        recipe=recorded_recipe, proposals=dict(edges_record(edge_params), top_k=args.top_k),
        model=str(args.model) if deconvnet else None, weights=str(members.get("deconvnet")) if deconvnet else None,
        aggregate=args.aggregate, crf=asdict(crf) if crf is not None else None, fcn=fcn_record,
        members={name: dict(model=str(prototxts[name]), weights=str(weights)) for name, weights in members.items()}),
        shard, listed, args.overwrite)
    outputs = OutputOptions(args.out, args.save_probs, args.overlays, args.voc_submission)
    try:
        report = segment_all(args, pipeline, proposals, outputs, items)
    except WorkerFailed as err:
        logging.error("infer: %s\ninfer: stopped; the images written so far are done (a rerun skips them)", err)
        return 1
    except KeyboardInterrupt:
        logging.error("infer: interrupted; the images written so far are done (a rerun skips them), the ones in "
                      "flight left no files")
        return 130
    if args.voc_submission and shard is not None and shard.count > 1:
        logging.info("infer: one shard of %d: results.tgz is left to a run without --shard once all are done "
                     "(it skips the images done and packs the folder)", shard.count)
    elif args.voc_submission:
        logging.info("wrote %s", submission_archive(args.out))
    if report.done:
        record = report.record()
        logging.info("per image: wall %.2fs; busy " % record["wall_seconds_per_image"]
                     + ", ".join(f"{k} {v:.2f}s" for k, v in record["busy_seconds_per_image"].items() if v))
        run_record.add_timings(args.out, shard, record)
        if args.timings:
            write_timings(args.timings, report, args.gpu)
    logging.info("%d segmented, %d already done, %d failed", report.done, report.skipped, len(report.failures))
    if report.failures:
        for line in report.failures:
            logging.error("failed: %s", line)
        return 1
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def segment_all(args, pipeline: Pipeline, proposals: ProposalCache, outputs: OutputOptions,
                items: list[tuple[str, Path]]) -> RunReport:
    """The run, serial or pipelined, with a progress bar; SIGTERM (scancel,
    kill) stops it as Ctrl-C does, with the same clean-up."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with tqdm(total=len(items), unit="img", desc="infer", dynamic_ncols=True) as bar:
            if args.workers:
                return PipelinedRun(pipeline, proposals, outputs, args.workers).run(items, args.overwrite,
                                                                                   bar.update)
            return run_serial(pipeline, proposals, items, outputs, args.overwrite, bar.update)
    finally:
        signal.signal(signal.SIGTERM, previous)


def write_timings(path: Path, report: RunReport, gpu: int | None) -> None:
    """Mean seconds per image of each step (busy time) and their sum, and
    the wall time per image, which is less than the sum with --workers."""
    record = report.record()
    per_image = record["busy_seconds_per_image"]
    result = dict(images=report.done, workers=report.workers, device="cpu" if gpu is None else f"gpu {gpu}",
                  blas_threads=blas_threads(),
                  seconds_per_image=dict(per_image, total=round(sum(per_image.values()), 4)),
                  wall_seconds_per_image=record["wall_seconds_per_image"])
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(run_tool(main, "infer"))

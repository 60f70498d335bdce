#!/usr/bin/env python3
"""The main job: DeconvNet end to end on the built-in synthetic dataset, with
a reduced network, on CPU, in minutes:

  synthetic VOC/SBD data -> stage-1 and stage-2 crop LMDBs (with proposals)
  -> VGG16 surgery (a random VGG16: the real one cannot be downloaded here)
  -> training stage 1 then stage 2 -> BatchNorm statistics -> inference with
  proposals, aggregation and CRF on the val images -> comp6 scoring.

--with-deeplab also trains a reduced DeepLab-LargeFOV (docs/DEEPLAB.md) on
crops of the same images, --with-fcn8s a reduced FCN-8s, and the report
compares each net alone, every pair and the triple (mean of probabilities;
the release's product for DeconvNet + FCN-8s), with and without the CRF.

Writes a run folder with report.md, plots, overlays and the Figure 6 panel,
and prints where it is. --quick is a tiny run for tests; the other flags
override single settings of the run (of --quick's, with --quick)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from deconvnet.common.cli import ROOT, add_options, given_options, option, run_tool, setup_logging
from deconvnet.common.constants import NUM_CLASSES, TEST_PROPOSALS
from deconvnet.common.recipes import RELEASE
from deconvnet.data.build_crops import BuildConfig, build
from deconvnet.data.proposals import EdgeBoxParams, ProposalCache, resolve_edges
from deconvnet.data.synthetic import SyntheticSpec, write_dataset
from deconvnet.data.voc import VOCReader
from deconvnet.eval.scoring import confusion, evaluate_dirs, score_table
from deconvnet.eval.scoring import scores as score_matrix
from deconvnet.infer.aggregation import paste_and_aggregate, proposal_batch, select_boxes
from deconvnet.infer.crf import CRFParams
from deconvnet.infer.ensembles import title, variant_labels, variants
from deconvnet.infer.figures import figure6
from deconvnet.infer.models import MEMBER_TITLES, DeconvNetModel, WholeImageModel
from deconvnet.infer.outputs import overlay, write_labels, write_png
from deconvnet.infer.pipeline import Pipeline
from deconvnet.net import nets
from deconvnet.net.architecture import Size
from deconvnet.net.bn_stats import write_statistics
from deconvnet.net.fold_bn import fold
from deconvnet.net.prototxt import write_reduced_stage
from deconvnet.net.solvers import Schedule
from deconvnet.net.surgery import build_init_model
from deconvnet.train.plots import parse_jsonl, plot
from deconvnet.train.reduced import PeerSchedule, random_vgg16, train_peer
from deconvnet.train.trainer import StageConfig, Trainer, validate
from deconvnet.visualize import views
from deconvnet.visualize.projector import Projector
from deconvnet.visualize.sources import load_images
from deconvnet.visualize.top9 import peaks

import caffe

LOG = logging.getLogger("demo")


@dataclass(frozen=True)
class DemoConfig:
    images: int = option(160, help="synthetic images")
    input_size: int = option(64, help="the reduced net's input (and crop) side")
    width_divisor: int = option(8, help="the reduced net's channel divisor")
    stored_size: int = option(72, help="crops are stored at this side, cropped to --input-size")  # 8 px of jitter
    seed: int = option(0, help="seed of data, weights and training")
    stage1_iters: int = option(1000, help="stage-1 iterations")
    stage2_iters: int = option(1500, help="stage-2 iterations")
    batch: int = option(8, help="examples per iteration")  # no iter_size: one pass per iteration
    val_interval: int = option(200, help="iterations between validations")
    val_batches: int = option(10, help="batches per validation")
    bn_batches: int = option(50, help="batches of the BatchNorm statistics")
    overlays: int = option(6, help="val images drawn as overlays")
    inside_units: int = option(4, help="conv5_3 units whose top-9 activations the report shows (the strongest)")
    with_deeplab: bool = option(False, help="also train a reduced DeepLab-LargeFOV and compare (about 5 more "
                                            "minutes on 2 cores)")
    with_fcn8s: bool = option(False, help="also train a reduced FCN-8s and compare")
    peer_crop: int = option(161, help="training crop side of DeepLab-LargeFOV and FCN-8s")
    peer_batch: int = option(4, help="their crops per update")
    peer_iters: int = option(1200, help="their updates")
    # Its fc6 and fc7 start random here (pretrained in the real recipe): 0.001 is too slow for
    # them, 0.01 collapses to all background.
    deeplab_lr: float = option(0.005, help="DeepLab-LargeFOV's base learning rate (x0.1 at 70%%)")
    fcn8s_lr: float = option(0.001, help="FCN-8s's base learning rate (x0.1 at 70%%): its skip layers "
                                         "diverge at DeepLab's")

    @property
    def peers(self) -> list[str]:
        return [n for n, on in (("deeplab-largefov", self.with_deeplab), ("fcn8s", self.with_fcn8s)) if on]

    @property
    def size(self) -> Size:
        return Size(self.input_size, self.width_divisor)


QUICK = DemoConfig(images=24, stage1_iters=40, stage2_iters=40, val_interval=20, val_batches=2,
                   bn_batches=4, overlays=2, peer_crop=65, peer_iters=10)
# The synthetic images' largest side is 256: the peers' val nets pad to this.
PEER_TEST_SIZE = 257


def run(out: Path, config: DemoConfig = DemoConfig()) -> dict:
    timings: dict[str, float] = {}
    started = time.time()

    def step(name: str, t0: float) -> None:
        timings[name] = time.time() - t0
        LOG.info("== %s done in %.0f s", name, timings[name])

    caffe.set_mode_cpu()
    caffe.set_random_seed(config.seed)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"

    t0 = time.time()
    write_dataset(data / "synthetic", SyntheticSpec(num_images=config.images, seed=config.seed))
    voc = data / "synthetic" / "VOCdevkit" / "VOC2012"
    sbd = data / "synthetic" / "benchmark_RELEASE" / "dataset"
    step("synthetic dataset", t0)

    t0 = time.time()
    # The release recipe's edges (structured when models/sed_model.yml.gz is there). Its
    # 112-px minimum box side is left out: it is half the full net's input, and the
    # reduced net's synthetic images are barely larger than that.
    edge_params = EdgeBoxParams(edge_model=resolve_edges(RELEASE.edges))
    dbs = {}
    for stage in (1, 2):
        for split, image_set, balance in (("train", "union-minus-voc-val", True), ("test", "voc:val", False)):
            name = f"stage{stage}_{split}"
            dbs[name] = data / "lmdb" / name
            build(BuildConfig(stage=stage, out=dbs[name], voc_root=voc, sbd_root=sbd, image_set=image_set,
                              stored_size=config.stored_size, balance=balance, seed=config.seed, workers=2,
                              proposal_cache=data / "proposals", edge_params=edge_params))
    step("crop datasets", t0)

    t0 = time.time()
    models = out / "models"
    models.mkdir(exist_ok=True)
    deploy = models / "deconvnet_reduced_deploy.prototxt"
    deploy.write_text(str(nets.deconvnet_deploy(batch=1, size=config.size)))
    vgg_prototxt, vgg_model = random_vgg16(config.size, models, config.seed)
    init = build_init_model("deconvnet", deploy, vgg_model, vgg_prototxt, models / "init.caffemodel",
                            seed=config.seed)
    step("VGG16 surgery", t0)

    weights = init
    solvers = {}
    for stage, iters in ((1, config.stage1_iters), (2, config.stage2_iters)):
        t0 = time.time()
        schedule = Schedule(max_iter=iters, stepsize=max(1, int(iters * 0.7)), iter_size=1,
                            batch_size=config.batch, snapshot=iters, test_interval=config.val_interval)
        solvers[stage] = write_reduced_stage(out / "prototxt", stage, dbs[f"stage{stage}_train"],
                                             dbs[f"stage{stage}_test"], config.size, schedule)
        trainer = Trainer(StageConfig(solver=solvers[stage], run_dir=out / "runs" / f"stage{stage}",
                                      weights=weights, val_interval=config.val_interval,
                                      val_batches=config.val_batches, snapshot_interval=0, keep_last=1,
                                      progress=sys.stderr.isatty()))
        weights = trainer.train()
        step(f"training stage {stage}", t0)

    t0 = time.time()
    bn_weights = models / "deconvnet_final_bnstats.caffemodel"
    write_statistics(out / "prototxt" / "stage2_train.prototxt", weights, bn_weights, config.bn_batches,
                     progress=False)
    test_net = str(out / "prototxt" / "stage2_test.prototxt")
    crops_val = {}
    for label, model in (("moving averages (caffe)", weights), ("re-estimated", bn_weights)):
        net = caffe.Net(test_net, str(model), caffe.TEST)
        crops_val[label] = validate(net, config.val_batches)
        del net
    step("BatchNorm statistics", t0)

    t0 = time.time()
    folded_deploy = models / "deconvnet_reduced_deploy_folded.prototxt"
    folded_weights = models / "deconvnet_folded.caffemodel"
    fold(deploy, bn_weights, folded_deploy, folded_weights)
    reader = VOCReader(voc)
    val_ids = reader.ids("val")
    proposals = ProposalCache(data / "proposals_infer", edge_params)
    folding = compare_folded(DeconvNetModel(deploy, bn_weights, batch=TEST_PROPOSALS),
                             DeconvNetModel(folded_deploy, folded_weights, batch=TEST_PROPOSALS), reader, val_ids,
                             proposals)
    step("folding BatchNorm", t0)

    t0 = time.time()
    # The synthetic images are 160-256 px: the release's 112-px minimum box
    # side is for 500-px photos, so the demo keeps every proposal.
    pipeline = Pipeline(DeconvNetModel(folded_deploy, folded_weights, batch=TEST_PROPOSALS), crf=CRFParams(),
                        min_box_side=0)
    labels_dir = out / "predictions" / "labels"
    for k, image_id in enumerate(val_ids):
        image = reader.image(image_id)
        result = pipeline.segment(image, proposals.get(image_id, image)[0])
        write_labels(labels_dir / f"{image_id}.png", result.labels)
        if k < config.overlays:
            write_png(out / "overlays" / f"{image_id}.png", overlay(image, result.labels, result.boxes))
    first = reader.image(val_ids[0])
    figure6(pipeline.model, first, proposals.get(val_ids[0], first)[0], out / "figure6.png")
    step("inference with CRF", t0)

    t0 = time.time()
    result, _ = evaluate_dirs(voc / "SegmentationClass", labels_dir, val_ids)
    table = score_table(result, "demo") + "\n"
    (out / "eval.txt").write_text(table)
    scores = result.as_json()
    (out / "scores.json").write_text(json.dumps(scores, indent=2) + "\n")
    background = out / "predictions" / "all_background"
    for image_id in val_ids:
        write_labels(background / f"{image_id}.png", np.zeros(reader.class_map(image_id).shape, np.uint8))
    baseline, _ = evaluate_dirs(voc / "SegmentationClass", background, val_ids)
    step("evaluation", t0)

    t0 = time.time()
    inside = inside_the_network(out, folded_deploy, folded_weights, config.inside_units)
    step("visualisation", t0)

    peers = None
    if config.peers:
        members = []
        for net in config.peers:
            t0 = time.time()
            schedule = PeerSchedule(crop=config.peer_crop, batch=config.peer_batch, iters=config.peer_iters,
                                    base_lr=config.deeplab_lr if net == "deeplab-largefov" else config.fcn8s_lr,
                                    width_divisor=config.width_divisor,
                                    test_size=PEER_TEST_SIZE, seed=config.seed)
            # The trained DeconvNet's encoder stands in for the ImageNet VGG16 the real peers start from.
            peer_deploy, peer_weights = train_peer(net, out / "peers" / net, voc, sbd, schedule,
                                                   (folded_deploy, folded_weights), progress=sys.stderr.isatty())
            members.append(WholeImageModel(peer_deploy, peer_weights, name=net))
            step(f"training {MEMBER_TITLES[net]}", t0)
        t0 = time.time()
        peers = ensemble_table(replace(pipeline, members=tuple(members), crf=None), reader, val_ids, proposals)
        step("ensembles", t0)

    plots = plot({f"stage{s}": parse_jsonl(out / "runs" / f"stage{s}" / "log.jsonl") for s in (1, 2)},
                 out / "plots")
    total = time.time() - started
    summary = dict(mean_iou=scores["mean_iou"], all_background_mean_iou=baseline.mean_iou,
                   pixel_accuracy=scores["pixel_accuracy"], val_images=len(val_ids), seconds=total,
                   crops_validation=crops_val, folding=folding, timings=timings, config=config.__dict__,
                   ensembles=peers, inside=inside)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_report(out, summary, table, plots, solvers)
    return summary


def inside_the_network(out: Path, model: Path, weights: Path, units: int) -> dict:
    """The report's Zeiler-Fergus figures (tools/visualize.py): conv1_1's
    filters, and the top-9 activations of the ``units`` strongest conv5_3
    units over the val images, projected, with their patches."""
    folder = out / "inside"
    filters = views.filters(Projector(model, weights, "conv1_1"), folder)
    projector = Projector(model, weights, "conv5_3")
    images = load_images(f"demo:{out}", projector.size)
    found = peaks(projector, images.images)
    top9 = views.top9(projector, images, found.strongest_units(units), folder, found, source="val")
    return dict(filters=f"inside/{filters['picture']}", top9=f"inside/{top9['picture']}",
                units=[int(u) for u in top9["units"]], images=len(images.names))


def ensemble_table(pipeline: Pipeline, reader: VOCReader, ids: list[str], proposals: ProposalCache) -> list[dict]:
    """Mean IoU of every variant (deconvnet.infer.ensembles) over ``ids``,
    without and with the CRF; each net's scores computed once per image."""
    found = variants(["deconvnet", *(m.name for m in pipeline.members)])
    matrices = {(v, crf): np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64) for v in found for crf in (False, True)}
    for image_id in ids:
        image = reader.image(image_id)
        truth = reader.class_map(image_id)
        scores = pipeline.net_scores(image, proposals.get(image_id, image)[0])
        for (variant, crf), matrix in matrices.items():
            matrix += confusion(truth, variant_labels(image, scores, variant, crf))
    return [dict(variant=title(v), nets=list(v[0]), rule=v[1],
                 mean_iou=score_matrix(matrices[v, False], len(ids)).mean_iou,
                 crf_mean_iou=score_matrix(matrices[v, True], len(ids)).mean_iou) for v in found]


def compare_folded(unfolded: DeconvNetModel, folded: DeconvNetModel, reader: VOCReader, ids: list[str],
                   proposals: ProposalCache) -> dict:
    """Forward seconds of both models on the same crops (each val image's
    proposals; the faster of two rounds) and the share of pixels whose
    aggregated labels agree."""
    seconds = {"unfolded": 0.0, "folded": 0.0}
    agree = total = 0
    for image_id in ids:
        image = reader.image(image_id)
        boxes = select_boxes(proposals.get(image_id, image)[0], image.shape, TEST_PROPOSALS, min_side=0)
        crops, enlarged = proposal_batch(image, boxes, unfolded.size)
        labels = {}
        for name, model in (("unfolded", unfolded), ("folded", folded)):
            rounds = []
            for _ in range(2):
                start = time.perf_counter()
                maps = model.scores(crops)
                rounds.append(time.perf_counter() - start)
            seconds[name] += min(rounds)
            labels[name] = paste_and_aggregate(maps, enlarged, image.shape, "max").argmax(axis=0)
        agree += int((labels["unfolded"] == labels["folded"]).sum())
        total += labels["folded"].size
    return dict(forward_s_per_image={k: v / len(ids) for k, v in seconds.items()},
                speedup=seconds["unfolded"] / max(seconds["folded"], 1e-9), label_agreement=agree / total)


def write_report(out: Path, summary: dict, table: str, plots: list[Path], solvers: dict) -> None:
    ratio = summary["mean_iou"] / max(summary["all_background_mean_iou"], 1e-9)
    lines = [
        "# DeconvNet demo run",
        "",
        f"Synthetic VOC-format data, reduced DeconvNet (input {summary['config']['input_size']}, widths "
        f"/{summary['config']['width_divisor']}), trained on CPU in two stages; inference with edge-box "
        "proposals, max aggregation and the dense CRF on the synthetic val images.",
        "",
        f"- **Mean IoU on val: {summary['mean_iou'] * 100:.1f}%** over {summary['val_images']} images "
        f"(pixel accuracy {summary['pixel_accuracy'] * 100:.1f}%)",
        f"- All-background baseline: {summary['all_background_mean_iou'] * 100:.1f}% mean IoU "
        f"(ours is {ratio:.1f}x)",
        f"- Total time: {summary['seconds'] / 60:.1f} min",
        "",
        "## Scores (comp6, as tools/eval_voc.py prints them)",
        "",
        "```",
        table.rstrip(),
        "```",
        "",
        "## BatchNorm statistics",
        "",
        "Validation crops (stage-2 test LMDB), mean IoU of the final model with Caffe's moving averages "
        "and with statistics re-estimated over training batches (tools/bn_stats.py):",
        "",
        "| BatchNorm statistics | crop mIoU | pixel accuracy |",
        "|---|---|---|",
    ]
    for label, result in summary["crops_validation"].items():
        lines.append(f"| {label} | {result['mean_iou'] * 100:.1f}% | {result['pixel_accuracy'] * 100:.1f}% |")
    fold = summary["folding"]
    per_image = fold["forward_s_per_image"]
    lines += ["", "## Folded BatchNorm (tools/fold_bn.py)", "",
              "Inference ran with BatchNorm and Scale folded into the (de)convolutions. Forward passes of each val "
              "image's proposals, both models on the same crops:", "",
              "| model | forward s per image |", "|---|---|",
              f"| unfolded | {per_image['unfolded']:.3f} |", f"| folded | {per_image['folded']:.3f} |", "",
              f"Folded is {fold['speedup']:.2f}x as fast; the aggregated labels agree on "
              f"{fold['label_agreement'] * 100:.3f}% of the pixels."]
    if summary.get("ensembles"):
        lines += ["", "## DeconvNet and its peers", "",
                  "Reduced DeepLab-LargeFOV and FCN-8s, their conv1_1 .. conv5_3 from the trained DeconvNet "
                  "(its BatchNorm folded in: the demo's stand-in for ImageNet features) and fc6/fc7 random, "
                  "trained on random crops of "
                  f"{summary['config']['peer_crop']} px of the same images ({summary['config']['peer_iters']} "
                  f"updates of {summary['config']['peer_batch']}), each alone and in every ensemble (mean of "
                  "probabilities; the release's product for DeconvNet + FCN-8s); the CRF with DeepLab's own "
                  "settings for DeepLab alone, DeconvNet's otherwise. Mean IoU on the val images:", "",
                  "| nets | mean IoU | with CRF |", "|---|---|---|",
                  f"| all background | {summary['all_background_mean_iou'] * 100:.1f}% | |"]
        lines += [f"| {row['variant']} | {row['mean_iou'] * 100:.1f}% | {row['crf_mean_iou'] * 100:.1f}% |"
                  for row in summary["ensembles"]]
    inside = summary["inside"]
    lines += ["", "## Inside the network (Zeiler and Fergus)", "",
              "The trained net's first-layer filters (conv1_1, BGR, each stretched on its own), and for the "
              f"conv5_3 units {', '.join(map(str, inside['units']))} (the strongest) their 9 strongest activations "
              f"over the {inside['images']} val images: each projected back to pixels through ReLU, the transposed "
              "filters and unpooling by the pooling switches (left), and the image patch it sees (right). "
              "tools/visualize.py draws these for any layer, and occlusion maps and snapshots too "
              "(docs/VISUALIZE.md).", "",
              f"![conv1_1 filters]({inside['filters']})", "", f"![conv5_3 top-9]({inside['top9']})"]
    lines += ["", "## Training", ""]
    lines += [f"![{p.stem}](plots/{p.name})" for p in plots]
    lines += ["", "Solvers: " + ", ".join(f"[stage {s}](prototxt/{p.name})" for s, p in solvers.items()),
              "", "## Figure 6: aggregation of proposals", "", "![figure 6](figure6.png)", "",
              "## Overlays (val images: labels and the proposals used)", ""]
    lines += [f"![{p.stem}](overlays/{p.name})" for p in sorted((out / "overlays").glob("*.png"))]
    lines += ["", "## Time per step", "", "| step | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in summary["timings"].items()]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="run folder (default: output/demo/<date-time>)")
    parser.add_argument("--quick", action="store_true", help="a tiny run for tests (under 2 minutes)")
    add_options(parser.add_argument_group("settings (default: the full demo's, or --quick's)"), DemoConfig,
                overrides=True)
    args = parser.parse_args(argv)
    setup_logging()
    config = replace(QUICK if args.quick else DemoConfig(), **given_options(DemoConfig, args))
    out = args.out or ROOT / "output" / "demo" / time.strftime("%Y%m%d-%H%M%S")
    summary = run(out, config)
    print(f"mean IoU {summary['mean_iou'] * 100:.1f}% (all-background baseline "
          f"{summary['all_background_mean_iou'] * 100:.1f}%) in {summary['seconds'] / 60:.1f} min")
    for row in summary["ensembles"] or []:
        print(f"  {row['variant']}: mean IoU {row['mean_iou'] * 100:.1f}%, with CRF {row['crf_mean_iou'] * 100:.1f}%")
    print(f"report: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, "demo"))

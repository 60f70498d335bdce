"""Stage 1 of the pipeline, data (docs/PAPER.md, section 2): readers of
PASCAL VOC 2012 and SBD (``voc``), image sets (``image_sets``), the built-in
synthetic dataset (``synthetic``) and the stand-in archives made from it
(``stand_in``), edge-box proposals (``proposals``),
stage-1/2 crop geometry (``crops``), DeepLab-LargeFOV's whole-image crops
(``image_crops``), the crop LMDB format (``crop_db``),
class balancing (``balance``), the dataset builder (``build_crops``),
verified downloads (``download``), merging sharded builds
(``merge_shards``) and the data layers' ``param_str`` contracts
(``layer_params``).

May import: deconvnet.common."""

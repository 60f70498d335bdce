"""Facts shared by every stage, each stated once: the 21 PASCAL VOC classes,
the void label, VGG16's pixel mean and the crop sizes (docs/PAPER.md,
sections 1 and 2)."""
from __future__ import annotations

CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
           "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
           "sheep", "sofa", "train", "tvmonitor")
NUM_CLASSES = len(CLASSES)
# "Void" in VOC's label PNGs: ignored by the loss and by scoring.
VOID = 255
# VGG16's BGR pixel mean, as the authors' release and FCN use.
MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
# Crops are stored at this side and randomly cropped to the net's input.
STORED_SIZE = 250
INPUT_SIZE = 224
# Edge-box proposals: the top 50 are segmented at test time (section 4), and
# stage 2's crops are drawn from the top 2000 (section 3).
TEST_PROPOSALS = 50
STAGE2_PROPOSALS = 2000

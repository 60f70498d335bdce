"""Stage 3 of the pipeline, training (docs/PAPER.md, section 3): the
pycaffe trainer of one stage, with validation mIoU, the step and plateau
learning-rate rules, snapshots and resumption (``trainer``), the same on
several GPUs of a node, one process per GPU with NCCL (``data_parallel``),
what the training tools share (``launch``: --gpus checks, exit codes), the
demo's reduced nets and its whole-image peers (``reduced``),
and plots of its logs and of plain ``caffe train`` logs (``plots``), and
solver files checked before Caffe reads them (``solver_check``).

May import: deconvnet.common, deconvnet.data, deconvnet.net, deconvnet.eval."""

"""Benchmarking, outside the pipeline: command-line programs that time the
network on a device and report it. The PyTorch side of the GPU kit
(``torch_benchmark``: training and folded-inference timings of the PyTorch
twin) and the kit's report (``gpu_kit_report``: results.json and
results.md from a run of engine/gpu_kit/run.sh). Both travel in the GPU
kit, so they import only the standard library, torch, and the kit's copies
of deconvnet.common and deconvnet.net. ``gpu_kit_inputs`` writes, at the
kit's build, the data its Python steps (training, inference) carry, and
``gpu_kit_checks`` checks the Python pipeline there before the first GPU
call.

May import: deconvnet.common, deconvnet.data (gpu_kit_inputs and _checks),
deconvnet.net."""

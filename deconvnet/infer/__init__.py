"""Stage 4 of the pipeline, inference (docs/PAPER.md, section 4): proposal
crops and aggregation (``aggregation``), the networks (``models``:
DeconvNet on proposals; FCN-8s and DeepLab-LargeFOV on whole images),
the CPU and GPU batch from the memory they need (``memory``),
the dense CRF (``crf``), the folder's run.json (``run_record``), the whole
per-image pipeline with its ensembles, in three stages (``pipeline``),
every ensemble of a set of nets for comparison tables (``ensembles``), a
list of images run serially or pipelined over worker processes
(``pipelined``), output files (``outputs``) and the paper's figures
(``figures``).

May import: deconvnet.common, deconvnet.data, deconvnet.net."""

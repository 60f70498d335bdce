"""Stage 4 of the pipeline, inference (docs/PAPER.md, section 4): proposal
crops and aggregation (``aggregation``), the two networks (``models``),
the CPU and GPU batch from the memory they need (``memory``),
the dense CRF (``crf``), the folder's run.json (``run_record``), the whole
per-image pipeline with the FCN-8s ensemble, in three stages
(``pipeline``), a list of images run serially or pipelined over worker
processes (``pipelined``), output files (``outputs``) and the paper's
figures (``figures``).

May import: deconvnet.common, deconvnet.data, deconvnet.net."""

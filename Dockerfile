# DeconvNet in Caffe, with CUDA, cuDNN and NCCL (sm_80, 86, 89, 90 + PTX).
# Caffe is built by the same scripts and flags as the local set-up
# (scripts/setup.sh --use-cuda -> engine/build_caffe.sh --cuda), from an
# upstream checkout of BVLC/caffe at the pinned commit.
#   docker build -t deconvnet .
#   docker run --gpus all --rm deconvnet caffe device_query -gpu 0
FROM nvidia/cuda:13.0.0-devel-ubuntu24.04

ARG CAFFE_COMMIT=9b89154
ENV DEBIAN_FRONTEND=noninteractive \
    CAFFE_SOURCE=/opt/caffe-src \
    GLOG_minloglevel=1

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# git fetches Caffe; every other package comes from scripts/setup.sh.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && git clone https://github.com/BVLC/caffe.git "$CAFFE_SOURCE" \
 && git -C "$CAFFE_SOURCE" checkout "$CAFFE_COMMIT"

WORKDIR /opt/deconvnet
COPY . .

# The build tree is not needed once Caffe is installed into .cache/caffe.
RUN bash scripts/setup.sh --use-cuda \
 && rm -rf /var/lib/apt/lists/* /root/.cache/pip .cache/caffe/cuda-*/build .cache/caffe/cuda-*/src

ENV PATH=/opt/deconvnet/.venv/bin:$PATH
VOLUME ["/opt/deconvnet/data", "/opt/deconvnet/models", "/opt/deconvnet/runs", "/opt/deconvnet/output"]
CMD ["python", "tools/demo.py"]

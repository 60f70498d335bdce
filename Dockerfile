# DeconvNet in Caffe on Debian 12, with CUDA 13, cuDNN 9 and NCCL
# (sm_80/86/89/90 + PTX). Caffe is built by scripts/setup.sh --use-cuda: the
# same script, pins, patches and Debian source package as the README and CI.
#   docker build --network host -t deconvnet .
#   docker run --gpus all --rm deconvnet caffe device_query -gpu 0
# Without an image registry, make the base first: scripts/debian_base.sh.
# The GPU driver comes from the host (NVIDIA Container Toolkit, --gpus all);
# without one, everything runs on the CPU.
ARG BASE_IMAGE=debian:bookworm

# --- build: toolchain, -dev packages, CUDA toolkit wheels, build trees -------
FROM ${BASE_IMAGE} AS build
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Certificate authorities of TLS-intercepting proxies, before any HTTPS.
COPY docker/ca-certificates/ /tmp/ca-certificates/
COPY docker/install-ca-certificates.sh /usr/local/sbin/
RUN install-ca-certificates.sh /tmp/ca-certificates

# Caffe and the Python requirements first: this layer, the long one, is
# reused until the pins, patches, set-up or requirements change.
# Your own Caffe source instead of the pinned Debian package: a tarball or
# checkout under engine/, e.g. --build-arg CAFFE_SOURCE=engine/caffe.tar.gz.
ARG CAFFE_SOURCE=
WORKDIR /opt/deconvnet
COPY requirements.txt pyproject.toml ./
COPY engine/ engine/
COPY scripts/setup.sh scripts/
RUN bash scripts/setup.sh --use-cuda

# Then the project, installed into .venv by the same (now quick) command, and
# a list of the shared libraries' Debian packages for the runtime stage.
COPY . .
RUN bash scripts/setup.sh --use-cuda \
 && bash docker/prune.sh /opt/deconvnet /opt/runtime-packages.txt

# --- runtime: the run-time libraries and the built tree --------------------
FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    GLOG_minloglevel=1 \
    PATH=/opt/deconvnet/.venv/bin:$PATH \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    NVIDIA_REQUIRE_CUDA="cuda>=13.0 driver>=580"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

COPY docker/ca-certificates/ /tmp/ca-certificates/
COPY docker/install-ca-certificates.sh /usr/local/sbin/
COPY --from=build /opt/runtime-packages.txt /tmp/
RUN install-ca-certificates.sh /tmp/ca-certificates \
 && apt-get update \
 && xargs -a /tmp/runtime-packages.txt apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt

WORKDIR /opt/deconvnet
COPY --from=build /opt/deconvnet /opt/deconvnet
VOLUME ["/opt/deconvnet/data", "/opt/deconvnet/models", "/opt/deconvnet/runs", "/opt/deconvnet/output"]
CMD ["python", "tools/demo.py"]

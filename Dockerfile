# GPU image for real training with fusionseg.
#   docker build -t fusionseg .
#   docker run --gpus all --shm-size 16g \
#     -v /path/to/datasets:/data:ro -v /path/to/weights:/weights:ro -v /path/to/outputs:/outputs \
#     fusionseg fit --config configs/ade20k.yaml
# Mounts: /data (datasets in their official layouts), /weights (official checkpoint files),
# /outputs (logs, TensorBoard events, checkpoints). The configs in configs/ point there.
ARG BASE_IMAGE=pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    SAM2_BUILD_CUDA=0

WORKDIR /opt/fusionseg
COPY pyproject.toml README.md ./
COPY fusionseg ./fusionseg
COPY configs ./configs

# faiss-cpu and faiss-gpu-cu12 ship the same `faiss` module: install the package with its extras,
# then leave only the GPU build so k-means runs on the GPU. Versions are the ranges pinned in
# pyproject.toml, so the image follows the package.
# hadolint ignore=DL3013
RUN pip install ".[gpu,sam2]" \
    && pip uninstall -y faiss-cpu \
    && pip install --force-reinstall --no-deps "faiss-gpu-cu12>=1.8" \
    && fusionseg encoders

RUN useradd --create-home --uid 1000 fusionseg \
    && mkdir -p /data /weights /outputs \
    && chown fusionseg:fusionseg /outputs
USER 1000:1000
WORKDIR /outputs
VOLUME ["/data", "/weights", "/outputs"]

ENTRYPOINT ["fusionseg"]
CMD ["--help"]

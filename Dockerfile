# hft-search: one image for the workers and the dashboard of docker-compose.yml.
#
#   docker build -t hft-search .                                # CUDA build of torch (default)
#   docker build -t hft-search --build-arg TORCH_VARIANT=cpu .  # CPU-only, a much smaller image
#
# TORCH_VARIANT is a wheel index of https://download.pytorch.org/whl/ (cpu, cu126, cu128, ...): pick the
# newest CUDA your host driver supports (`nvidia-smi` shows it). torch goes in first, from that index, so that
# installing the package below finds it satisfied and does not pull the default build from PyPI.
FROM python:3.11-slim

ARG TORCH_VARIANT=cu128

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TOKENIZERS_PARALLELISM=false \
    HF_HOME=/work/.huggingface

RUN pip install --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" torch

WORKDIR /opt/hft_search
COPY pyproject.toml README.md ./
COPY hft_search ./hft_search
RUN pip install ".[postgres,demo,dashboard,ray]"

# Not root: a worker only needs its working folder (the fold cache and the Hugging Face cache live there).
RUN useradd --create-home --uid 1000 hft && mkdir -p /work && chown hft:hft /work
USER hft
WORKDIR /work

ENTRYPOINT ["hft-search"]
CMD ["--help"]

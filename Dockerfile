# Images of the transcription server and of the tools that make its models.
#
#   docker build -t w2v-asr .                                  the server: onnxruntime, no torch (target runtime)
#   docker build --target tools -t w2v-asr-tools .            + torch: python -m export / python -m training
#   docker build -t w2v-asr:gpu \                              the server on NVIDIA GPUs
#       --build-arg BASE_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04 --build-arg ONNXRUNTIME=onnxruntime-gpu .
#
# Both stages start from the same base, so the virtual environment built in one runs in the other.
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS build
ENV DEBIAN_FRONTEND=noninteractive
# python3-dev and a C/C++ toolchain: kenlm compiles from source (with CMake, which pip fetches).
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Dependencies come from pyproject.toml alone, before any source: code edits reuse these layers.
ARG ONNXRUNTIME=onnxruntime
COPY pyproject.toml docker/requirements.py /build/
RUN python3 /build/requirements.py serve --onnxruntime ${ONNXRUNTIME} > /build/serve.txt \
    && pip install -r /build/serve.txt

FROM ${BASE_IMAGE} AS runtime
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 libstdc++6 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /home/asr asr
COPY --from=build /opt/venv /opt/venv
# Only the torch-free parts the server imports.
COPY model/ /app/model/
COPY export/ /app/export/
COPY service/ /app/service/
# The default model (spoken digit strings): served when ASR_MODEL names none.
COPY models/digits/ /app/models/digits/
ENV PATH=/opt/venv/bin:$PATH PYTHONPATH=/app PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/home/asr/.cache/huggingface ASR_CACHE_DIR=/home/asr/.cache/w2v-asr \
    ASR_HOST=0.0.0.0 ASR_PORT=8000
WORKDIR /home/asr
USER asr
EXPOSE 8000
# /ready answers 200 once the model is loaded and warmed up; a model can take a while to load.
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python3", "-m", "service.healthcheck"]
# uvicorn stops on SIGTERM: it stops accepting, finishes requests in flight, then exits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["python3", "-m", "service"]

FROM build AS tools
# torch from its CPU index unless told otherwise (e.g. https://download.pytorch.org/whl/cu130);
# wheels placed in docker/wheels/ (say, a torch downloaded once) are used first.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG ONNXRUNTIME=onnxruntime
# `python -m training synth` speaks with espeak-ng and flite.
RUN apt-get update \
    && apt-get install -y --no-install-recommends espeak-ng flite \
    && rm -rf /var/lib/apt/lists/*
COPY docker/wheels/ /build/wheels/
RUN python3 /build/requirements.py export train --onnxruntime ${ONNXRUNTIME} > /build/tools.txt \
    && pip install --find-links /build/wheels --extra-index-url ${TORCH_INDEX} -r /build/tools.txt
COPY . /app/
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/asr asr
# Any user may run it (`--user "$(id -u):$(id -g)"` writes files the host user owns): caches go to /tmp.
ENV PYTHONPATH=/app PYTHONUNBUFFERED=1 HOME=/tmp HF_HOME=/tmp/huggingface
WORKDIR /home/asr
USER asr
# docker run --rm --user "$(id -u):$(id -g)" -v "$PWD/models:/models" w2v-asr-tools \
#     export onnx --model /models/my-checkpoint --out /models/onnx
ENTRYPOINT ["python3", "-m"]
CMD ["export", "--help"]

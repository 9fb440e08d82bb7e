# syntax=docker/dockerfile:1.7
# Two images from one source tree:
#   docker build --target operator -t kubenas-operator:0.1.0 .   # the controller, no torch
#   docker build --target trainer  -t kubenas-trainer:0.1.0 .    # the built-in trainer, torch+CUDA
# Each installs its dependencies into a virtual environment in a build stage, copies only that
# environment into a slim runtime stage and installs the project over it there. Both run as the
# numeric non-root user 65532 (the chart's and the operator's default runAsUser), so
# runAsNonRoot can verify it, with a passwd entry: containerd adds none, and kopf (through
# getpass) asks for the user's name.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS source
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY trainer/ trainer/

# The dependencies come first, from pyproject.toml alone (the project itself is an empty
# stand-in here), so a change to the code or the README reinstalls the project, not torch.
FROM ${PYTHON_IMAGE} AS dependencies
WORKDIR /src
COPY pyproject.toml ./
RUN mkdir -p operator/kubenas trainer/kubenas_trainer \
 && touch README.md operator/kubenas/__init__.py trainer/kubenas_trainer/__init__.py \
 && python -m venv /opt/kubenas

# --- operator ---------------------------------------------------------------------------------
FROM dependencies AS operator-dependencies
RUN /opt/kubenas/bin/pip install --no-cache-dir --disable-pip-version-check .

# The runtime stage takes the dependencies' environment as one layer, which stays cached, and
# installs the project over the stand-in in a small layer of its own.
FROM ${PYTHON_IMAGE} AS operator
COPY --from=operator-dependencies /opt/kubenas /opt/kubenas
COPY --from=source /src/ /tmp/kubenas-src/
RUN /opt/kubenas/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps \
      --force-reinstall /tmp/kubenas-src \
 && rm -rf /tmp/kubenas-src \
 && echo 'kubenas:x:65532:65532:kubenas:/nonexistent:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'kubenas:x:65532:' >> /etc/group \
 && ! /opt/kubenas/bin/python -c "import torch" 2>/dev/null
ENV PATH=/opt/kubenas/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["kubenas"]
CMD ["operator"]

# --- trainer ----------------------------------------------------------------------------------
FROM dependencies AS trainer-dependencies
# PyPI's Linux x86_64 torch wheels bring their CUDA runtime (nvidia-* wheels); point this at
# https://download.pytorch.org/whl/cu124 (or cpu) to pin another build.
ARG TORCH_INDEX_URL=https://pypi.org/simple
RUN /opt/kubenas/bin/pip install --no-cache-dir --disable-pip-version-check \
      --extra-index-url "${TORCH_INDEX_URL}" ".[trainer]"

FROM ${PYTHON_IMAGE} AS trainer
COPY --from=trainer-dependencies /opt/kubenas /opt/kubenas
COPY --from=source /src/ /tmp/kubenas-src/
RUN /opt/kubenas/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps \
      --force-reinstall /tmp/kubenas-src \
 && rm -rf /tmp/kubenas-src \
 && echo 'kubenas:x:65532:65532:kubenas:/tmp:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'kubenas:x:65532:' >> /etc/group \
 && install -d -o 65532 -g 65532 /kubenas/checkpoints
# HOME for caches (datasets, torch) that a read-only root filesystem would refuse elsewhere.
# /kubenas/checkpoints (trial.checkpointDir's default) is writable, so an experiment runs
# without a volume; ASHA promotions across pods need one mounted there (docs/operate.md).
ENV PATH=/opt/kubenas/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
WORKDIR /tmp
USER 65532:65532
# The operator runs trials as `python -m kubenas_trainer` (the experiment's trial.command).
ENTRYPOINT ["python", "-m", "kubenas_trainer"]

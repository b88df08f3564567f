# capture-engine as a SageMaker Processing / Model Monitor (bring your own container) image.
#   make image                      # or: docker build -t capture-engine .
# Two stages: the wheel is built and installed into a virtual environment in the first, and only that
# environment (no pip, no build backend, no compilers) is copied into the slim runtime image.
ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY schemas ./schemas
RUN python -m pip install --no-cache-dir build \
 && python -m build --wheel --outdir /dist . \
 && python -m venv /opt/capture-engine \
 && /opt/capture-engine/bin/pip install --no-cache-dir "$(ls /dist/*.whl)[s3,report]" \
 && /opt/capture-engine/bin/pip uninstall --yes pip setuptools wheel || true

FROM python:${PYTHON_VERSION}-slim
# pip and setuptools of the base image are build tools too: the engine runs from its own environment.
RUN python -m pip uninstall --yes pip setuptools wheel || true \
 && useradd --uid 1000 --user-group --create-home --shell /usr/sbin/nologin engine \
 && mkdir -p /opt/ml/config /opt/ml/output/metrics/cloudwatch /opt/ml/processing/input /opt/ml/processing/output \
 && chown -R engine:engine /opt/ml
COPY --from=build /opt/capture-engine /opt/capture-engine
ENV PATH=/opt/capture-engine/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER engine
WORKDIR /home/engine
# Exec form: the engine is PID 1 and gets SageMaker's SIGTERM itself. Without arguments, and with Model
# Monitor's environment (dataset_format or dataset_source) set, it runs `capture-engine container`.
ENTRYPOINT ["python", "-m", "engine"]

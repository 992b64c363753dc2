# syntax=docker/dockerfile:1
# tierroute's serving image. The builder stage installs the package and its pinned serving
# dependencies (pyproject.toml, without the `train` and `dev` extras) into a virtualenv; the
# final stage holds only that virtualenv, the router model bundle and a non-root user. Every
# dependency installs from a wheel, so neither stage needs a compiler.
#   docker build -t tierroute:0.1.0 .
#   docker run --rm -p 50051:50051 -p 9464:9464 tierroute:0.1.0
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY clients/python ./clients/python
# A regular (not editable) install copies the package into the virtualenv, so the final
# stage needs no source tree. pip and setuptools are removed after: installers are build
# tools, and nothing installs anything at run time.
RUN /opt/venv/bin/pip install ./clients/python . \
    && /opt/venv/bin/pip uninstall --yes pip setuptools

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="tierroute" \
      org.opencontainers.image.description="Routes each LLM query to the cheapest model tier that answers it correctly" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric id, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
RUN groupadd --system --gid 10001 tierroute \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/tierroute \
       --no-create-home --shell /usr/sbin/nologin tierroute \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/tierroute
COPY --from=builder /opt/venv /opt/venv
COPY model_export/bundle /opt/tierroute/model
# The default configuration ships inside the package (tierroute/default_config.toml); an
# override file is mounted and named by TIERROUTE_CONFIG (deploy/k8s/configmap.yaml).
# The working directory is the one writable place: the SQLite query log and the query-log
# spool default to relative paths there (Kubernetes mounts an emptyDir on it).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TIERROUTE_MODEL_DIR=/opt/tierroute/model \
    TIERROUTE_PORT=50051 \
    TIERROUTE_HTTP_PORT=8080 \
    TIERROUTE_TELEMETRY_PROMETHEUS_HOST=0.0.0.0 \
    TIERROUTE_TELEMETRY_PROMETHEUS_PORT=9464
WORKDIR /var/lib/tierroute
USER 10001:10001
EXPOSE 50051 8080 9464
# grpc_health_probe is a downloaded binary; this probe is a few lines of Python in the package.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "tierroute.healthprobe", "--addr", "127.0.0.1:50051", "--timeout", "4"]
ENTRYPOINT ["tierroute", "serve", "--host", "0.0.0.0"]

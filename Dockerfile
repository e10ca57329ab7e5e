# syntax=docker/dockerfile:1
# One image for every Selfex service: `selfex run SERVICE` picks which (default: the gateway).
#   docker build -t selfex .
#   docker run --rm -e SELFEX_KAFKA_BOOTSTRAP=... -e SELFEX_MONGO_URI=... selfex run blocking

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
# pyproject.toml names README.md; the wildcard copies it when present (setuptools only warns without it).
COPY pyproject.toml README.md* ./
# The composition root, the ground and the services; never bench/ (benchmarks run from a clone).
COPY selfex ./selfex
COPY shared ./shared
COPY services ./services
RUN /opt/venv/bin/pip install .

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 selfex \
 && useradd --system --uid 10001 --gid selfex --home-dir /app --no-create-home \
            --shell /usr/sbin/nologin selfex
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["selfex"]
CMD ["run", "gateway"]

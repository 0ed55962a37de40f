# Multi-stage: build a virtualenv, then run it as a non-root user.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY engine ./engine
RUN python -m venv /venv && /venv/bin/pip install --no-cache-dir .

FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --home /app engine && mkdir -p /app/data && chown engine /app/data
COPY --from=build /venv /venv
COPY policies /app/policies
WORKDIR /app
# Numeric (the `engine` user above): Kubernetes' runAsNonRoot can only verify a numeric user (hadolint DL3066).
USER 10001
ENV PATH=/venv/bin:$PATH
EXPOSE 9095
VOLUME ["/app/data"]
# Embedded Redis keeps its append-only file in /app/data; set ESCALATION_REDIS_URL to use an external one.
CMD ["escalation-engine", "serve", "--policies", "/app/policies", "--data-dir", "/app/data", "--listen", "0.0.0.0:9095"]

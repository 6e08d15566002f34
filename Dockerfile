# The streamer worker image: slim, non-root, with a health check on the metrics port.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    STREAMER_METRICS_PORT=9464 \
    STREAMER_METRICS_HOST=0.0.0.0 \
    STREAMER_OIP_PORT=8080 \
    STREAMER_OIP_HOST=0.0.0.0 \
    STREAMER_MODELS_DIR=/app/models \
    STREAMER_STATE_DIR=/app/state

WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY streamer ./streamer
RUN pip install . && useradd --system --uid 10001 --home /app streamer
COPY --chown=streamer:streamer models ./models
COPY --chown=streamer:streamer schemas ./schemas
RUN mkdir -p /app/state && chown streamer:streamer /app/state

USER streamer
EXPOSE 9464 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"STREAMER_METRICS_PORT\"]}/health', timeout=2)"
CMD ["streamer", "worker"]

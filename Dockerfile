# Telltale worker / producer image (for docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY telltale ./telltale
COPY producers ./producers
COPY streams ./streams
COPY detectors ./detectors
COPY sinks ./sinks
RUN pip install --no-cache-dir ".[worker]"
WORKDIR /data
ENTRYPOINT ["telltale"]
CMD ["worker"]

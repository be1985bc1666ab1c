# The rfm console script (SPEC section 8) in a container; default command: the stream worker.
#   docker build -t rfm-stream .
#   docker run --rm -e RFM_KAFKA_BOOTSTRAP=... -e RFM_REDIS_URL=... rfm-stream          # rfm worker
#   docker run --rm ... rfm-stream export --segment at_risk                              # any rfm command
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY . .
RUN pip install --no-cache-dir . \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin rfm

# non-root; Faust keeps its small data dir under $HOME/.cache/rfm/faust
USER rfm
WORKDIR /home/rfm

ENTRYPOINT ["rfm"]
CMD ["worker"]

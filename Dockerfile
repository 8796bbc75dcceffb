# The fairclick image: the package installed once, at build time, run as a user of its own.
#   docker build -t fairclick .      (docker-compose.yml builds it for the tracker and the worker)
# Pinned: a rebuild gets the same Python (bump the tag on purpose, after reading its notes).
FROM python:3.12.8-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FAIRCLICK_DATA_DIR=/var/lib/fairclick

# Only what the wheel is built from (.dockerignore keeps the rest out of the context).
WORKDIR /build
COPY pyproject.toml README.md ./
COPY fairclick ./fairclick
COPY tracker ./tracker
COPY mailer ./mailer
COPY templates ./templates
RUN pip install --no-cache-dir --root-user-action=ignore . && rm -rf /build

# The data dir holds the click spool (clicks taken while PostgreSQL was away, replayed when
# it is back): a volume, so it outlives the container. 0700: the spool names messages.
RUN useradd --system --uid 10001 --home-dir "$FAIRCLICK_DATA_DIR" --shell /usr/sbin/nologin fairclick \
    && install -d -o fairclick -g fairclick -m 0700 "$FAIRCLICK_DATA_DIR"
VOLUME ["/var/lib/fairclick"]
USER fairclick
WORKDIR /var/lib/fairclick

# 8080: the public tracker. 9180: /metrics and /readyz for operators (publish on loopback only).
EXPOSE 8080 9180
ENV FAIRCLICK_OPS_LISTEN=0.0.0.0:9180
ENTRYPOINT ["fairclick"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]

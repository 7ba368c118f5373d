# stagehold: the Slack bot (`stagehold serve`) in HTTP mode on port 3000, or Socket Mode when
# SLACK_APP_TOKEN is set (port 3000 then serves /healthz, /readyz and /metrics only). Mount a volume at /data for the SQLite ledger, or set
# STAGEHOLD_DATABASE_URL to PostgreSQL; mount change packages at /packages.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    STAGEHOLD_DATABASE_URL=sqlite:////data/stagehold.db \
    STAGEHOLD_PACKAGES_DIR=/packages \
    STAGEHOLD_PORT=3000

RUN groupadd --system stagehold && useradd --system --gid stagehold --home-dir /app stagehold \
    && mkdir -p /app /data /packages && chown stagehold:stagehold /data /packages

WORKDIR /app
# Dependencies first, from pyproject.toml alone: this layer is rebuilt only when they change,
# never by a code edit.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt
COPY README.md ./
COPY bot ./bot
COPY handlers ./handlers
COPY execution ./execution
COPY ledger ./ledger
COPY templates ./templates
COPY examples ./examples
RUN pip install --no-deps . && stagehold validate examples/payments-cutover/package.yaml >/dev/null

USER stagehold
EXPOSE 3000
VOLUME ["/data"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import os,urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('STAGEHOLD_PORT','3000'), timeout=4).status == 200 else 1)"
CMD ["stagehold", "serve"]

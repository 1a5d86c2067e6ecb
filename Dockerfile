# syntax=docker/dockerfile:1
#
# One image for every part of the archive (docker-compose.yml, docs/operations.md):
#   archive serve --no-worker   the HTTP API (the default command is `archive serve`)
#   archive worker              the lifecycle worker (purge, sweep, Object Lock reconciling)
#   archive db upgrade          the migration job
# and for the operator's commands (`archive tokens create ...`, `archive keys rotate ...`).
#
#   docker build -t council-archive .

# -- 1. GOV.UK Frontend for the staff pages, from npm (pinned by web/package-lock.json) -----------
FROM node:22-bookworm-slim AS web-assets
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
# Runtime dependencies only: axe-core (a devDependency) is for the browser tests.
RUN npm ci --omit=dev --no-audit --no-fund --loglevel=error

# -- 2. The package and its pinned dependencies, in a virtual environment ---------------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/archive
COPY pyproject.toml README.md /src/
COPY archive /src/archive
COPY storage /src/storage
COPY ingest /src/ingest
COPY lifecycle /src/lifecycle
COPY web /src/web
# Every dependency has a binary wheel for CPython 3.11 on Linux: no compiler needed.
RUN /opt/archive/bin/pip install /src

# -- 3. The runtime image ------------------------------------------------------------------------
FROM python:3.11-slim-bookworm
# ffmpeg and ffprobe from Debian (found on PATH before the imageio-ffmpeg wheel's binary);
# tini as PID 1 hands SIGTERM to the archive and reaps ffmpeg processes.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends ffmpeg tini \
    && rm -rf /var/lib/apt/lists/*
# A system user without a login shell. /var/lib/archive is the data folder; keys/ (mode 0700)
# is where docker-compose.yml mounts the volume holding the keyring and the signing key: a new
# named volume takes this folder's owner and mode.
RUN groupadd --system --gid 10001 archive \
    && useradd --system --uid 10001 --gid archive --home-dir /var/lib/archive \
        --shell /usr/sbin/nologin archive \
    && install --directory --owner=archive --group=archive --mode=0700 \
        /var/lib/archive /var/lib/archive/keys
COPY --from=build /opt/archive /opt/archive
# Only what the pages serve (web/pages/__init__.py: GOVUK): the built CSS and JavaScript, the
# fonts and images. web.pages looks for them beside the installed web package.
COPY --from=web-assets \
    /src/web/node_modules/govuk-frontend/dist/govuk/govuk-frontend.min.css \
    /src/web/node_modules/govuk-frontend/dist/govuk/govuk-frontend.min.js \
    /opt/archive/lib/python3.11/site-packages/web/node_modules/govuk-frontend/dist/govuk/
COPY --from=web-assets \
    /src/web/node_modules/govuk-frontend/dist/govuk/assets \
    /opt/archive/lib/python3.11/site-packages/web/node_modules/govuk-frontend/dist/govuk/assets
ENV PATH=/opt/archive/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ARCHIVE_DATA_DIR=/var/lib/archive \
    ARCHIVE_HOST=0.0.0.0 \
    ARCHIVE_PORT=8080
# Fail the build, not the first page view, if the templates, the pages' own static files or
# GOV.UK Frontend did not make it into the installed package.
RUN python -c "from web.pages import GOVUK, STATIC, TEMPLATES; \
missing = [str(p) for p in (TEMPLATES / 'base.html', STATIC / 'app.css', \
GOVUK / 'govuk-frontend.min.css', GOVUK / 'assets') if not p.exists()]; \
assert not missing, f'not installed: {missing}'" \
    && ffmpeg -hide_banner -version > /dev/null
USER archive
WORKDIR /var/lib/archive
EXPOSE 8080
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["archive", "serve"]

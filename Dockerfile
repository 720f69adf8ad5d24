# dispatchd container image. How to build and run it: docs/container.md.
#
# Nothing is fetched during the build: dispatchd, its plugins and all their dependencies are installed
# offline from wheels built beforehand on the host (their CPython version must match the base's):
#     pip wheel --wheel-dir dist/wheels '.[uvloop]' plugins/jsonfile
#     docker build -t dispatchd .                         # official python:3.12-slim base
#     podman build --format docker --build-arg BASE=localhost/py-base:bookworm -t dispatchd .
#
# Stopping: the daemon is PID 1 and drains on SIGTERM: HTTP requests in flight (up to 5 s), then each
# dispatcher's batch in hand (server.shutdown_timeout, 8 s by default). Give it a grace period longer
# than both, e.g. `docker run --stop-timeout 20` / `podman stop -t 20` / compose `stop_grace_period: 20s`
# (Kubernetes' default of 30 s is enough), or it is killed mid-drain. Nothing accepted is lost then
# either: it is still in the spool, and delivered after the next start.

ARG BASE=python:3.12-slim
FROM ${BASE}

# Extra Debian packages, none by default (the build then needs no network at all).
ARG EXTRA_APT_PACKAGES=""
# Installed from the wheels next to dispatchd; add your own plugins' distribution names here.
ARG PLUGINS="dispatchd-jsonfile"

RUN if [ -n "$EXTRA_APT_PACKAGES" ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends $EXTRA_APT_PACKAGES \
        && rm -rf /var/lib/apt/lists/*; \
    fi

# A fixed uid/gid, so that a bind-mounted data directory can be chowned to it on the host.
RUN groupadd --gid 10001 dispatchd \
    && useradd --uid 10001 --gid dispatchd --home-dir /var/lib/dispatchd \
        --no-create-home --shell /usr/sbin/nologin dispatchd \
    && install -d -o dispatchd -g dispatchd -m 0750 /var/lib/dispatchd

# A venv works the same on both bases: the official image's Python in /usr/local and Debian's python3
# (with python3-venv) in the local one. The wheels are bind-mounted, so they leave no layer behind.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# WHEELS_DIGEST (make image passes a digest of the wheels): Podman/Buildah does not count a bind
# mount's contents in its layer cache key, so without it a rebuild after a code change would reuse
# the layer with the old dispatchd.
ARG WHEELS_DIGEST=""
RUN --mount=type=bind,source=dist/wheels,target=/tmp/wheels \
    echo "wheels ${WHEELS_DIGEST}" \
    && python3 -m venv /opt/dispatchd \
    && /opt/dispatchd/bin/pip install --no-index --find-links /tmp/wheels "dispatchd[uvloop]" $PLUGINS

COPY config/dispatchd.toml /etc/dispatchd/dispatchd.toml

# The shipped config reads ${DISPATCHD_HOST:-127.0.0.1} and ${DISPATCHD_DATA:-var}.
# PATH is spelled out: an image imported from a rootfs has none to extend.
ENV PATH=/opt/dispatchd/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    DISPATCHD_HOST=0.0.0.0 \
    DISPATCHD_DATA=/var/lib/dispatchd \
    DISPATCHD_CONFIG=/etc/dispatchd/dispatchd.toml

USER dispatchd
WORKDIR /var/lib/dispatchd
# The spool (accepted, not yet delivered events) and the SQLite event store: keep it across restarts.
VOLUME ["/var/lib/dispatchd"]
EXPOSE 8080

# No curl in slim images: Python's urllib, ignoring any proxy variables. Set DISPATCHD_HEALTHCHECK_URL
# if the config listens on another port. (Podman keeps HEALTHCHECK only with `build --format docker`.)
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/opt/dispatchd/bin/python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open(os.environ.get('DISPATCHD_HEALTHCHECK_URL', 'http://127.0.0.1:8080/healthz'), timeout=4)"]

# Exec form: dispatchd is PID 1 and receives SIGTERM itself (it installs its own handler and drains).
STOPSIGNAL SIGTERM
CMD ["dispatchd", "serve", "-c", "/etc/dispatchd/dispatchd.toml"]

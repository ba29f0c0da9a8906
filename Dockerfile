# The balancer image: aiohttp, uvloop, httptools, PyYAML, prometheus-client; no pyechonext (the
# backends have their own image, Dockerfile.backend). Runs as a non-root user (uid 10001).
#   docker build -t echonext-balancer .
# Where no registry is reachable, build a base from Debian packages and pass it:
#   make image    (deploy/base-image.sh, then --build-arg BASE=localhost/echonext-base:trixie)
ARG BASE=python:3.12-slim
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
# a virtual environment: the same on python:3.12-slim and on a Debian python3 (PEP 668)
RUN python3 -m venv /opt/venv
WORKDIR /app

# Dependencies first, so that a code change does not reinstall them.
COPY pyproject.toml README.md ./
COPY balancer/__init__.py balancer/__init__.py
COPY backends/__init__.py backends/__init__.py
RUN pip install . && pip uninstall -y echonext-balancer

COPY balancer balancer
# backends.probe (standard library only) is the container health check
COPY backends/probe.py backends/probe.py
RUN pip install --no-deps . && rm -rf /app/build \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin balancer
USER 10001

EXPOSE 8080 9901
CMD ["balancer", "run", "-c", "/etc/balancer/balancer.yaml"]

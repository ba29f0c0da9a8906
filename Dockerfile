# One image for the balancer and the EchoNext demo backends (deployment.yml runs both).
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

# Dependencies first, so that a code change does not reinstall them.
COPY pyproject.toml README.md ./
COPY balancer/__init__.py balancer/__init__.py
COPY backends/__init__.py backends/__init__.py
RUN pip install . && pip uninstall -y echonext-balancer

COPY balancer balancer
COPY backends backends
COPY config config
RUN pip install --no-deps . && useradd --system --no-create-home balancer
USER balancer

EXPOSE 8080 9901
CMD ["balancer", "run", "-c", "/etc/balancer/balancer.yaml"]

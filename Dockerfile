# FeatureGap: the dashboard and REST API on port 8000, data in the /data volume.
#   docker build -t featuregap .
#   docker run -p 8000:8000 -v featuregap-data:/data -e FEATUREGAP_API_TOKEN=... featuregap
# Add --demo to the command (docker run ... featuregap featuregap serve --host 0.0.0.0 --demo)
# to load the sample photos into an empty store.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FEATUREGAP_DATA_DIR=/data

WORKDIR /srv/featuregap

# torch and torchvision first, CPU wheels, pinned exactly like pyproject.toml: this layer
# is the big one and changes least.
RUN pip install --index-url https://download.pytorch.org/whl/cpu \
        torch==2.14.1 torchvision==0.29.1

COPY pyproject.toml README.md ./
COPY app ./app
COPY templates ./templates
COPY static ./static
COPY vendor ./vendor
COPY models ./models
# Editable: the app finds templates/, static/ and models/ next to its package.
RUN pip install -e . \
    && useradd --create-home --uid 10001 featuregap \
    && mkdir -p /data && chown featuregap /data

USER featuregap
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import os, urllib.request as r; r.urlopen(r.Request('http://127.0.0.1:8000/api/health', headers={'Authorization': 'Bearer ' + os.environ.get('FEATUREGAP_API_TOKEN', '')}), timeout=4)" || exit 1

CMD ["featuregap", "serve", "--host", "0.0.0.0", "--port", "8000"]

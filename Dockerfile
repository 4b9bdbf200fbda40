# carewatch image for the central processor (and, with EXTRA=edge, a gateway agent).
# The gateway normally runs the agent from a virtualenv under systemd (deploy/systemd);
# this image is for the central side and for trying carewatch with docker compose.
FROM python:3.11-slim
ARG EXTRA=all
WORKDIR /opt/carewatch
COPY pyproject.toml README.md ./
COPY carewatch ./carewatch
COPY device_profiles ./device_profiles
COPY edge_agent ./edge_agent
COPY stream ./stream
COPY simulators ./simulators
RUN pip install --no-cache-dir ".[${EXTRA}]" \
    && useradd --system --home /var/lib/carewatch carewatch \
    && mkdir -p /var/lib/carewatch && chown carewatch /var/lib/carewatch
USER carewatch
VOLUME /var/lib/carewatch
ENTRYPOINT ["carewatch"]

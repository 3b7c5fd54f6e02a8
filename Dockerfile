# Leveret in a container (docs/deploying.md):
#   docker build -t leveret .
#   docker run -d --name leveret -p 5672:5672 -p 15672:15672 -v leveret-data:/var/lib/leveret \
#     -e LEVERET_DEFAULT_USER=admin -e LEVERET_DEFAULT_PASS=a-long-random-password leveret
# The default user is made on the first start (an empty volume); guest, the default otherwise, can
# only log in from inside the container.
FROM python:3.12-slim

RUN useradd --system --uid 10001 --home-dir /var/lib/leveret --shell /usr/sbin/nologin leveret \
 && mkdir -p /var/lib/leveret && chown leveret:leveret /var/lib/leveret

WORKDIR /opt/leveret-src
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN pip install --no-cache-dir . && rm -rf /opt/leveret-src
COPY packaging/healthcheck.py /usr/local/bin/leveret-healthcheck

USER leveret
WORKDIR /var/lib/leveret
VOLUME ["/var/lib/leveret"]
EXPOSE 5672 15672 15692

HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
  CMD ["python", "/usr/local/bin/leveret-healthcheck"]

# --host 0.0.0.0: reachable through the published ports. SIGTERM (docker stop) stops it cleanly.
ENTRYPOINT ["leveret", "server", "--host", "0.0.0.0", "--data-dir", "/var/lib/leveret"]

# gateway: slim Python, non-root, `gateway serve`, health check on /healthz.
# Build: docker build -t gateway .   Run: mount the config at /etc/gateway/gateway.toml and give
# secrets as environment variables or mounted files (nothing secret is in the image).
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY constraints ./constraints
COPY gateway ./gateway
# Wheels for the gateway and every dependency. lxml and xmlsec each carry their own libxml2:
# the constraints pin a pair built on the same one (see constraints/lxml-xmlsec.txt), and
# --only-binary keeps pip from compiling either against some other libxml2.
RUN python -m pip install --no-cache-dir --upgrade pip \
 && python -m pip wheel --no-cache-dir --wheel-dir /wheels \
      --only-binary lxml,xmlsec -c constraints/lxml-xmlsec.txt .

FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /wheels /wheels
# Only the wheels built above (no second resolution from the index), then a smoke test that
# fails the build, not the first sign-in, if lxml and xmlsec disagree on libxml2.
RUN python -m pip install --no-cache-dir --no-index --find-links /wheels gateway \
 && rm -rf /wheels \
 && python -c "import lxml.etree, xmlsec, gateway.cli" \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin gateway
COPY scripts/healthcheck.py /usr/local/lib/gateway-healthcheck.py
USER 10001
EXPOSE 8000
# Follows the port `gateway serve` was started with (--port in CMD or in `docker run ... serve
# --port N`), and https when --tls-cert is given.
HEALTHCHECK --interval=15s --timeout=5s --start-period=15s --retries=3 \
  CMD ["python", "/usr/local/lib/gateway-healthcheck.py"]
ENTRYPOINT ["gateway"]
CMD ["serve", "--config", "/etc/gateway/gateway.toml", "--host", "0.0.0.0", "--port", "8000"]

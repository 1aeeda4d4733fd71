# voicefork fork server image.
# Builder: compiles python-ESL with SWIG 4 (its -classic option is dropped through a
# setuptools config file) and a 128 KiB receive buffer per connection instead of 6.5 MB (as
# the justfile's bootstrap does; why there), and installs voicefork into a venv. Runtime: the
# venv only, as a non-root user, with the config and the TTS spool as volumes.

FROM python:3.11-slim-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends swig g++ \
 && rm -rf /var/lib/apt/lists/*
ENV VIRTUAL_ENV=/opt/voicefork PATH=/opt/voicefork/bin:$PATH
RUN python -m venv $VIRTUAL_ENV
RUN pip download --no-cache-dir --no-deps --no-binary :all: -d /tmp/esl python-ESL==1.4.18 \
 && tar -xzf /tmp/esl/python-ESL-1.4.18.tar.gz -C /tmp/esl \
 && sed -i 's/^#define BUF_START 65536 \* 100$/#define BUF_START 65536 * 2/' /tmp/esl/python-ESL-1.4.18/esl.h \
 && grep -q '^#define BUF_START 65536 \* 2$' /tmp/esl/python-ESL-1.4.18/esl.h \
 && printf '[build_ext]\nswig_opts = -c++ -DMULTIPLICITY -threads -I.\n' > /tmp/esl.cfg \
 && DIST_EXTRA_CONFIG=/tmp/esl.cfg pip install --no-cache-dir /tmp/esl/python-ESL-1.4.18 \
 && rm -rf /tmp/esl /tmp/esl.cfg
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fs_dialplan ./fs_dialplan
COPY fork_server ./fork_server
COPY testbed ./testbed
COPY templates ./templates
RUN pip install --no-cache-dir . uvloop

FROM python:3.11-slim-bookworm
# libstdc++ is needed by python-ESL's compiled module.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libstdc++6 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app voicefork \
 && mkdir -p /app/config /var/spool/voicefork \
 && chown voicefork /var/spool/voicefork
COPY --from=builder /opt/voicefork /opt/voicefork
COPY templates /app/templates
ENV PATH=/opt/voicefork/bin:$PATH PYTHONUNBUFFERED=1
WORKDIR /app
USER voicefork
VOLUME ["/app/config", "/var/spool/voicefork"]
EXPOSE 8099
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8099/healthz').status == 200 else 1)"
ENTRYPOINT ["voicefork-server", "--config", "/app/config/voicefork.yaml", "--uvloop"]

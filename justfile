# voicefork tasks. Every recipe bootstraps .venv by itself on a fresh Debian machine.
set shell := ["bash", "-euo", "pipefail", "-c"]

venv := ".venv"
py := venv / "bin/python"
config := "config/voicefork.yaml"

# The main job: one emulated call end to end on the built-in defaults (see README).
default: demo

# One call through the emulated FreeSWITCH, the fork server and the script connector; writes build/demo/*.wav.
demo: bootstrap
    {{py}} -m testbed.demo

# Create .venv with the package, its dev extras and python-ESL (SWIG workaround and a 128 KiB receive buffer, see README).
bootstrap:
    #!/usr/bin/env bash
    set -euo pipefail
    stamp="{{venv}}/.voicefork-bootstrap"
    esl_stamp="{{venv}}/.voicefork-esl-buf128k"  # python-ESL built with the patched esl.h below
    if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ -f "$esl_stamp" ] && {{py}} -c "import ESL" 2>/dev/null; then exit 0; fi
    missing=""
    command -v swig >/dev/null || missing="$missing swig"
    command -v espeak-ng >/dev/null || missing="$missing espeak-ng"
    dpkg -s python3-dev >/dev/null 2>&1 || python3 -c "import sysconfig,os,sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()['include'],'Python.h')) else 1)" || missing="$missing python3-dev"
    command -v g++ >/dev/null || missing="$missing g++"
    if [ -n "$missing" ]; then
        echo "bootstrap: installing Debian packages:$missing"
        SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
        $SUDO apt-get update -qq && $SUDO apt-get install -y -qq $missing >/dev/null
    fi
    [ -x {{py}} ] || python3 -m venv {{venv}}
    {{py}} -m pip install -q --upgrade pip >/dev/null
    echo "bootstrap: installing voicefork with dev extras into {{venv}}"
    {{py}} -m pip install -q -e '.[dev]'
    if [ ! -f "$esl_stamp" ] || ! {{py}} -c "import ESL" 2>/dev/null; then
        # libesl's esl.h gives every connection a 6.5 MB receive buffer (BUF_START 65536 * 100) whose
        # heads walk to its end before moving back, so each connection's RSS grows with its traffic up
        # to 6.5 MB (4 command + 1 event connections: +33 MB). 128 KiB holds any read (64 KiB) plus a
        # partial event; a larger event still grows it (realloc). Test: tests/fork_server/test_esl_client.py.
        echo "bootstrap: building python-ESL 1.4.18 with SWIG 4 (setuptools config drops -classic), 128 KiB receive buffer"
        tmp="$(mktemp -d)"
        {{py}} -m pip download -q --no-deps --no-binary :all: -d "$tmp" python-ESL==1.4.18
        tar -xzf "$tmp"/python-ESL-1.4.18.tar.gz -C "$tmp"
        sed -i 's/^#define BUF_START 65536 \* 100$/#define BUF_START 65536 * 2/' "$tmp/python-ESL-1.4.18/esl.h"
        grep -q '^#define BUF_START 65536 \* 2$' "$tmp/python-ESL-1.4.18/esl.h"  # the patch applied, or stop here
        printf '[build_ext]\nswig_opts = -c++ -DMULTIPLICITY -threads -I.\n' > "$tmp/esl.cfg"
        DIST_EXTRA_CONFIG="$tmp/esl.cfg" {{py}} -m pip install -q --force-reinstall --no-deps "$tmp/python-ESL-1.4.18"
        rm -rf "$tmp"
        touch "$esl_stamp"
    fi
    touch "$stamp"

# Validate the config and render it in memory (every XML file parsed back and checked); writes nothing.
check config=config: bootstrap
    {{py}} -m fs_dialplan check --config {{config}}

# Render FreeSWITCH's XML (secrets from the environment: VOICEFORK_ESL_PASSWORD, VOICEFORK_FORK_PASSWORD).
render config=config out="build/fs-conf": bootstrap
    {{py}} -m fs_dialplan render --config {{config}} --out {{out}}

# Write the config's JSON Schema (YAML language servers complete and check the config with it); the committed copy is config/voicefork.schema.json.
schema out="build/voicefork.schema.json": bootstrap
    {{py}} -m fs_dialplan schema --out {{out}}

# Benchmarks that print numbers (no pass/fail): the resampler against soxr, rendering 10,000 routes, and
# the caller-audio hot path in one process, the ESL clients' cost per command and event (python-ESL with
# and without its framing guard, the asyncio client), and capacity: N calls through the fork server against a bare
# websockets relay (`just bench --quick` for CI; other args go to `python -m testbed.bench.capacity`,
# e.g. `just bench --calls 100,500 --workers 2 --esl asyncio`).
bench *args: bootstrap
    {{py}} -m testbed.bench_resample {{ if args =~ '--quick' { "2" } else { "" } }}
    {{py}} -m testbed.bench_render 10000
    {{py}} -m testbed.bench.hotpath
    {{py}} -m testbed.bench.esl {{ if args =~ '--quick' { "--commands 500 --events 1000 --repeat 1" } else { "" } }}
    {{py}} -m testbed.bench.capacity {{args}}

# Run the fork server with the example config.
serve config=config *args: bootstrap
    {{py}} -m fork_server --config {{config}} {{args}}

# The full chaos churn (issue 6): calls starting and ending for 10 minutes at 100 concurrent; prints tasks, fds, threads, RSS and spool figures (CI runs 30 s at 50).
chaos seconds="600" concurrent="100": bootstrap
    {{py}} -m testbed.churn --seconds {{seconds}} --concurrent {{concurrent}}

# Fuzzing (issue 6) with a large budget: 5000 examples per property (CI runs 100); about 3 minutes.
fuzz *args: bootstrap
    HYPOTHESIS_PROFILE=fuzz {{py}} -m pytest -q -p no:cacheprovider tests/chaos/test_fuzz.py tests/chaos/test_security.py {{args}}

# The test suite (unit, property, integration, end to end, chaos).
test *args: bootstrap
    {{py}} -m pytest -q {{args}}

# voicefork tasks. Every recipe bootstraps .venv by itself on a fresh Debian machine.
set shell := ["bash", "-euo", "pipefail", "-c"]

venv := ".venv"
py := venv / "bin/python"
config := "config/voicefork.yaml"

# The main job: one emulated call end to end on the built-in defaults (see README).
default: demo

# One call through the emulated FreeSWITCH, the fork server and the script connector; writes build/demo/*.wav.
# `just demo --twilio`: the same call with a Pipecat bot written for Twilio Media Streams as the connector.
demo *args: bootstrap
    #!/usr/bin/env bash
    set -euo pipefail
    if [[ " {{args}} " == *" --twilio "* ]]; then just pipecat-env; fi
    {{py}} -m testbed.demo {{args}}

# Create .venv with the package, its dev extras and python-ESL (SWIG workaround and a 128 KiB receive buffer, see README).
# A few progress lines; pip's and python-ESL's build output go to .venv/bootstrap.log, whose tail is shown if a step fails.
bootstrap:
    #!/usr/bin/env bash
    set -euo pipefail
    stamp="{{venv}}/.voicefork-bootstrap"
    esl_stamp="{{venv}}/.voicefork-esl-buf128k"  # python-ESL built with the patched esl.h below
    if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ -f "$esl_stamp" ] && {{py}} -c "import ESL" 2>/dev/null; then exit 0; fi
    log="$PWD/{{venv}}/bootstrap.log"
    step() {  # run one step quietly; on failure name the log and show its end
        if ! "$@" >>"$log" 2>&1; then
            echo "bootstrap: FAILED: $* (see $log; its last lines:)" >&2
            tail -n 20 "$log" >&2
            exit 1
        fi
    }
    missing=""
    command -v swig >/dev/null || missing="$missing swig"
    command -v espeak-ng >/dev/null || missing="$missing espeak-ng"
    dpkg -s python3-dev >/dev/null 2>&1 || python3 -c "import sysconfig,os,sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()['include'],'Python.h')) else 1)" || missing="$missing python3-dev"
    command -v g++ >/dev/null || missing="$missing g++"
    command -v haproxy >/dev/null || missing="$missing haproxy"  # the scale-out cluster test (tests/freeswitch/test_cluster.py)
    [ -x {{py}} ] || python3 -m venv {{venv}}
    : >"$log"
    if [ -n "$missing" ]; then
        echo "bootstrap: installing Debian packages:$missing"
        SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
        step $SUDO apt-get update -qq
        step env DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
    fi
    echo "bootstrap: installing voicefork with its dev extras into {{venv}} (log: {{venv}}/bootstrap.log)"
    step {{py}} -m pip install --upgrade pip
    step {{py}} -m pip install -e '.[dev]'
    if [ ! -f "$esl_stamp" ] || ! {{py}} -c "import ESL" 2>/dev/null; then
        # libesl's esl.h gives every connection a 6.5 MB receive buffer (BUF_START 65536 * 100) whose
        # heads walk to its end before moving back, so each connection's RSS grows with its traffic up
        # to 6.5 MB (4 command + 1 event connections: +33 MB). 128 KiB holds any read (64 KiB) plus a
        # partial event; a larger event still grows it (realloc). Test: tests/fork_server/test_esl_client.py.
        echo "bootstrap: building python-ESL 1.4.18 with SWIG 4 (setuptools config drops -classic), 128 KiB receive buffer"
        tmp="$(mktemp -d)"
        step {{py}} -m pip download --no-deps --no-binary :all: -d "$tmp" python-ESL==1.4.18
        tar -xzf "$tmp"/python-ESL-1.4.18.tar.gz -C "$tmp"
        sed -i 's/^#define BUF_START 65536 \* 100$/#define BUF_START 65536 * 2/' "$tmp/python-ESL-1.4.18/esl.h"
        grep -q '^#define BUF_START 65536 \* 2$' "$tmp/python-ESL-1.4.18/esl.h"  # the patch applied, or stop here
        printf '[build_ext]\nswig_opts = -c++ -DMULTIPLICITY -threads -I.\n' > "$tmp/esl.cfg"
        step env DIST_EXTRA_CONFIG="$tmp/esl.cfg" {{py}} -m pip install --force-reinstall --no-deps "$tmp/python-ESL-1.4.18"
        rm -rf "$tmp"
        touch "$esl_stamp"
    fi
    touch "$stamp"
    echo "bootstrap: done"

# Build (or reuse) a real FreeSWITCH 1.10.12 with mod_audio_fork from ../shared/freeswitch into
# ~/.cache/voicefork (about 10 minutes the first time, under a second after); prints the FREESWITCH_BIN to use.
freeswitch:
    testbed/build_freeswitch.sh

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
# With `--switch real` the same N also go through a real FreeSWITCH (FREESWITCH_BIN, else `just freeswitch`'s).
# `just bench --protocol twilio`: CPU and bytes per 20 ms frame of twilio (mu-law, base64, JSON) against voicefork.v1.
bench *args: bootstrap
    #!/usr/bin/env bash
    set -euo pipefail
    if [[ " {{args}} " == *" --protocol "* ]]; then  # the connector protocols side by side, nothing else
        [[ " {{args}} " == *" --protocol twilio "* ]] || { echo "bench: --protocol takes twilio (compared with voicefork.v1)" >&2; exit 2; }
        {{py}} -m testbed.bench.protocol
        exit 0
    fi
    if [[ " {{args}} " == *" --switch real "* ]] && [ -z "${FREESWITCH_BIN:-}" ]; then
        out="$(testbed/build_freeswitch.sh | tee /dev/stderr)"
        export FREESWITCH_BIN="${out##*FREESWITCH_BIN=}"
    fi
    {{py}} -m testbed.bench_resample {{ if args =~ '--quick' { "2" } else { "" } }}
    {{py}} -m testbed.bench_render 10000
    {{py}} -m testbed.bench.hotpath
    {{py}} -m testbed.bench.esl {{ if args =~ '--quick' { "--commands 500 --events 1000 --repeat 1" } else { "" } }}
    {{py}} -m testbed.bench.capacity {{args}}

# Scale-out on loopback (issue 17): 2 real FreeSWITCH x 2 fork servers behind HAProxy, all from one
# YAML; prints calls and CPU per switch and per fork server (`just cluster --calls 40 --window 30`).
cluster *args: bootstrap
    #!/usr/bin/env bash
    set -euo pipefail
    if [ -z "${FREESWITCH_BIN:-}" ]; then
        out="$(testbed/build_freeswitch.sh | tee /dev/stderr)"
        export FREESWITCH_BIN="${out##*FREESWITCH_BIN=}"
    fi
    {{py}} -m testbed.cluster {{args}}

# Run the fork server with the example config.
serve config=config *args: bootstrap
    {{py}} -m fork_server --config {{config}} {{args}}

# The full chaos churn (issue 6): calls starting and ending for 10 minutes at 100 concurrent; prints tasks, fds, threads, RSS and spool figures (CI runs 30 s at 50).
chaos seconds="600" concurrent="100": bootstrap
    {{py}} -m testbed.churn --seconds {{seconds}} --concurrent {{concurrent}}

# Fuzzing (issue 6) with a large budget: 5000 examples per property (CI runs 100); about 3 minutes.
fuzz *args: bootstrap
    HYPOTHESIS_PROFILE=fuzz {{py}} -m pytest -q -p no:cacheprovider tests/chaos/test_fuzz.py tests/chaos/test_security.py {{args}}

# The Pipecat venv the Twilio tests run a real Pipecat bot in (tests/e2e/test_pipecat.py, `just demo --twilio`).
# Its own venv: pipecat-ai 1.14.0 pins soxr~=1.0.0 (ours is 1.1, which the resampler numbers were
# measured with) and pulls onnxruntime and numba (~500 MB) that voicefork never imports.
# Output goes to .venv-pipecat/install.log; a stamp makes the next run instant. Without it the
# Pipecat tests skip, except under CI=true, where this recipe fails.
pipecat-env:
    #!/usr/bin/env bash
    set -euo pipefail
    venv=".venv-pipecat"
    stamp="$venv/.voicefork-pipecat-1.14.0"
    if [ -f "$stamp" ] && "$venv/bin/python" -c "import pipecat.serializers.twilio, uvicorn" 2>/dev/null; then exit 0; fi
    echo "pipecat-env: installing pipecat-ai 1.14.0 into $venv (log: $venv/install.log)"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    log="$venv/install.log"
    if ! "$venv/bin/python" -m pip install 'pipecat-ai[websocket]==1.14.0' 'uvicorn>=0.32,<1' >>"$log" 2>&1; then
        echo "pipecat-env: FAILED to install pipecat-ai (see $log; its last lines:)" >&2
        tail -n 20 "$log" >&2
        if [ "${CI:-}" = true ]; then exit 1; fi
        echo "pipecat-env: the Pipecat tests will be skipped (CI=true makes this an error)" >&2
        exit 0
    fi
    touch "$stamp"
    echo "pipecat-env: done"

# The test suite (unit, property, integration, end to end on the emulator AND on a real FreeSWITCH, chaos).
# Uses $FREESWITCH_BIN if set, else builds or reuses `just freeswitch` (a fresh machine adds ~10 minutes once).
# Without FreeSWITCH sources the real-switch tests are skipped, except under CI=true, where they fail.
test *args: bootstrap pipecat-env
    #!/usr/bin/env bash
    set -euo pipefail
    if [ -z "${FREESWITCH_BIN:-}" ]; then
        if out="$(testbed/build_freeswitch.sh | tee /dev/stderr)"; then
            export FREESWITCH_BIN="${out##*FREESWITCH_BIN=}"
        elif [ "${CI:-}" = true ]; then
            echo "just test: CI=true needs the real FreeSWITCH; the build above failed" >&2; exit 1
        else
            echo "just test: no real FreeSWITCH (see above): tests/freeswitch will be skipped" >&2
        fi
    fi
    {{py}} -m pytest -q {{args}}

#!/usr/bin/env bash
# Build a real FreeSWITCH 1.10.12 for the tests and benchmarks (`just freeswitch`), from the
# archives in ../shared/freeswitch (their README gives the versions and the build recipe this
# follows), into a cache OUTSIDE the clone:
#   ${VOICEFORK_FS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/voicefork}/freeswitch-<key>
# <key> hashes the archives' SHA256SUMS lines and this script, so a changed input rebuilds and an
# unchanged one returns in well under a second. Nothing built here is ever committed.
#
# Result:
#   <prefix>/bin/freeswitch          FreeSWITCH with the drachtio mod_audio_fork (MIT), the design's module
#   <prefix>/mod-jambonz/            the same module set with the jambonz mod_audio_fork instead
#                                    (bidirectional audio; AGPL outside jambonz, so only ever opt-in)
# The last line printed is FREESWITCH_BIN=<prefix>/bin/freeswitch.
#
# One progress line per stage; the compilers' output goes to <cache>/build-<key>.log.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# The sources: $VOICEFORK_FS_SOURCES, else ../shared/freeswitch beside the clone, else /work/shared/freeswitch.
src="${VOICEFORK_FS_SOURCES:-}"
if [ -z "$src" ]; then
    for d in "$here/../../shared/freeswitch" /work/shared/freeswitch; do
        [ -f "$d/SHA256SUMS" ] && { src="$d"; break; }
    done
    src="${src:-$here/../../shared/freeswitch}"
fi
script="$here/$(basename "$0")"
jobs="${VOICEFORK_FS_JOBS:-$(nproc)}"

die() { echo "just freeswitch: $*" >&2; exit 1; }

[ -f "$src/SHA256SUMS" ] || die "no FreeSWITCH sources at $src (expected ../shared/freeswitch with SHA256SUMS; set VOICEFORK_FS_SOURCES to their folder, or point FREESWITCH_BIN at your own build)"
src="$(cd "$src" && pwd)"
archives=(freeswitch-1.10.12.tar.xz sofia-sip-1.13.17.tar.xz spandsp-0c7bceb.tar.xz
          drachtio-freeswitch-modules-88e1465.tar.xz jambonz-freeswitch-modules-30f2189-mod_audio_fork.tar.xz)
for a in "${archives[@]}"; do
    [ -f "$src/$a" ] || die "missing $src/$a (see $src/README.md)"
    grep -q "  $a\$" "$src/SHA256SUMS" || die "$a is not listed in $src/SHA256SUMS"
done

cache="${VOICEFORK_FS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/voicefork}"
key="$( { for a in "${archives[@]}"; do grep "  $a\$" "$src/SHA256SUMS"; done; sha256sum < "$script"; } | sha256sum | cut -c1-16)"
prefix="$cache/freeswitch-$key"
stamp="$prefix/.voicefork-complete"
log="$cache/build-$key.log"

if [ -f "$stamp" ] && [ -x "$prefix/bin/freeswitch" ]; then
    echo "just freeswitch: cached at $prefix"
    echo "FREESWITCH_BIN=$prefix/bin/freeswitch"
    exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/.lock-$key"
flock 9  # two builds of the same key wait for each other instead of clobbering the prefix
if [ -f "$stamp" ] && [ -x "$prefix/bin/freeswitch" ]; then
    echo "just freeswitch: cached at $prefix (built meanwhile)"
    echo "FREESWITCH_BIN=$prefix/bin/freeswitch"
    exit 0
fi

t0=$SECONDS
stage_t=$SECONDS
stage() { echo "just freeswitch: [$(( SECONDS - t0 ))s] $*"; stage_t=$SECONDS; }
run() {  # run a build step with its output in the log; on failure show the log's tail
    if ! "$@" >>"$log" 2>&1; then
        echo "just freeswitch: FAILED: $* (last lines of $log):" >&2
        tail -n 25 "$log" >&2
        exit 1
    fi
}
: >"$log"
stage "building FreeSWITCH 1.10.12 into $prefix (about 10 minutes on 2 cores; log: $log)"

stage "checking archives against SHA256SUMS"
(cd "$src" && for a in "${archives[@]}"; do grep "  $a\$" SHA256SUMS; done | sha256sum -c --quiet -) \
    || die "archives in $src do not match SHA256SUMS"

pkgs=(build-essential autoconf automake libtool libtool-bin pkg-config yasm nasm libssl-dev
      libcurl4-openssl-dev libpcre3-dev libspeex-dev libspeexdsp-dev libsqlite3-dev libedit-dev
      libldns-dev libjpeg-dev zlib1g-dev libopus-dev libsndfile1-dev uuid-dev libtiff-dev
      libwebsockets-dev libboost-dev)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
    stage "installing Debian build packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    run $SUDO apt-get update -qq
    run env DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

work="$(mktemp -d "$cache/work-$key.XXXXXX")"
trap 'rm -rf "$work"' EXIT
rm -rf "$prefix"
deps="$prefix/deps"

stage "unpacking"
for a in "${archives[@]}"; do run tar -xJf "$src/$a" -C "$work"; done

stage "sofia-sip 1.13.17"
(cd "$work/sofia-sip-1.13.17" && run ./bootstrap.sh && run ./configure --prefix="$deps" --disable-static \
    && run make -j"$jobs" && run make install)

stage "spandsp 0c7bceb"
(cd "$work/spandsp-0c7bceb" && run ./bootstrap.sh && run ./configure --prefix="$deps" --disable-static \
    && run make -j"$jobs" && run make install)

fs="$work/freeswitch-1.10.12"
stage "FreeSWITCH: adding the drachtio mod_audio_fork, trimming modules.conf, bootstrap"
cp -r "$work/drachtio-freeswitch-modules-88e1465/modules/mod_audio_fork" "$fs/src/mod/applications/mod_audio_fork"
sed -i 's#^\(\s*\)src/mod/applications/mod_abstraction/Makefile#&\n\1src/mod/applications/mod_audio_fork/Makefile#' "$fs/configure.ac"
grep -q 'src/mod/applications/mod_audio_fork/Makefile' "$fs/configure.ac" || die "could not add mod_audio_fork to configure.ac"
cat >"$fs/modules.conf" <<'EOF'
applications/mod_audio_fork
applications/mod_commands
applications/mod_conference
applications/mod_dptools
applications/mod_expr
applications/mod_hash
dialplans/mod_dialplan_xml
endpoints/mod_loopback
endpoints/mod_sofia
event_handlers/mod_event_socket
formats/mod_native_file
formats/mod_sndfile
formats/mod_tone_stream
loggers/mod_console
loggers/mod_logfile
say/mod_say_en
EOF
(cd "$fs" && run ./bootstrap.sh -j)

stage "FreeSWITCH: configure"
(cd "$fs" && run env PKG_CONFIG_PATH="$deps/lib/pkgconfig" ./configure --prefix="$prefix" --disable-fhs \
    --disable-libvpx --disable-libyuv LDFLAGS="-Wl,-rpath,$deps/lib -Wl,-rpath,$prefix/lib")

stage "FreeSWITCH: make -j$jobs (the long one, ~2-5 minutes)"
(cd "$fs" && run make -j"$jobs")

stage "FreeSWITCH: make install"
(cd "$fs" && run make install)

# jambonz's Makefile.am needs its patched configure.ac (USE_AVX2/USE_SSE2 conditionals), so it is
# built standalone against the installed FreeSWITCH (shared/freeswitch/README.md): its .c as C (g++
# refuses its void* casts), its .cpp as C++11, linked with no undefined symbol.
stage "jambonz mod_audio_fork (standalone, into $prefix/mod-jambonz)"
jm="$work/jambonz-freeswitch-modules-30f2189/mod_audio_fork"
jdir="$prefix/mod-jambonz"
mkdir -p "$jdir"
jpc="$prefix/lib/pkgconfig:$deps/lib/pkgconfig"
jcflags="$(PKG_CONFIG_PATH="$jpc" pkg-config --cflags freeswitch libwebsockets speexdsp) -fPIC -O2 -msse2 -DUSE_SSE2"
jlibs="$(PKG_CONFIG_PATH="$jpc" pkg-config --libs freeswitch libwebsockets speexdsp)"
(cd "$jm" && for f in *.c; do run gcc $jcflags -c "$f" -o "${f%.c}.o"; done \
    && for f in *.cpp; do run g++ -std=c++11 $jcflags -c "$f" -o "${f%.cpp}.o"; done \
    && run g++ -shared -Wl,--no-undefined -o "$jdir/mod_audio_fork.so" ./*.o $jlibs \
           -Wl,-rpath,"$deps/lib" -Wl,-rpath,"$prefix/lib")
for m in "$prefix"/mod/*.so; do
    [ "$(basename "$m")" = mod_audio_fork.so ] || ln -sf "$m" "$jdir/"
done

stage "checking the result"
for m in mod_audio_fork mod_sofia mod_event_socket mod_commands mod_dptools mod_dialplan_xml mod_sndfile \
         mod_native_file mod_tone_stream mod_conference mod_hash mod_loopback; do
    [ -f "$prefix/mod/$m.so" ] || die "$m.so was not built (see $log)"
done
"$prefix/bin/freeswitch" -version >>"$log" 2>&1 || die "the built freeswitch does not run (see $log)"
touch "$stamp"
stage "done in $(( SECONDS - t0 )) s"
echo "FREESWITCH_BIN=$prefix/bin/freeswitch"

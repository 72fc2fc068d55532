#!/usr/bin/env bash
# Build both images here, without Docker's engine or a registry, and run their smoke tests.
#
#   bash docker/build_local.sh            # base (once), CPU image, GPU image (WITH_SC2=0)
#   bash docker/build_local.sh cpu        # just one of them: cpu | gpu
#
# 1. A Debian bookworm base from debootstrap, imported with `podman import` as
#    localhost/knife-base:bookworm (skipped when that image exists; KNIFE_REBUILD_BASE=1).
# 2. `podman build --isolation=chroot` of docker/Dockerfile.cpu and docker/Dockerfile.gpu on
#    that base, through their `test` stage (pytest + a real 200-step trial run in a RUN step:
#    `podman run` does not work on this machine), then tagged knife-marl:cpu / knife-marl:gpu.
#    The GPU image gets WITH_SC2=0 (no Blizzard download here) and the CPU torch wheel.
# 3. Checks that the CA bundle (a build secret) left no trace in the images.
#
# Environment: TORCH_WHEEL (the CPU torch 2.13.0 cp311 wheel; default: found on disk),
# CA_BUNDLE (default: $SSL_CERT_FILE, else /etc/ssl/certs/ca-certificates.crt),
# NICE (default: "nice -n 19 ionice -c3": builds yield the cores to other work).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BASE_IMAGE=localhost/knife-base:bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CA_BUNDLE=${CA_BUNDLE:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
read -r -a NICE <<<"${NICE-nice -n 19 ionice -c3}"
TARGETS=("${@:-cpu gpu}")
read -r -a TARGETS <<<"${TARGETS[*]}"
T0=$SECONDS

say() { printf '\n== %s (%ds)\n' "$*" "$((SECONDS - T0))"; }

need_tools() {
    local missing=()
    command -v podman >/dev/null || missing+=(podman)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    if ((${#missing[@]})); then
        say "installing ${missing[*]} (Debian packages)"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
    fi
}

make_base() {
    if [[ -z ${KNIFE_REBUILD_BASE:-} ]] && podman image exists "$BASE_IMAGE"; then
        say "base $BASE_IMAGE exists (KNIFE_REBUILD_BASE=1 makes it again)"
        return
    fi
    say "debootstrap bookworm -> $BASE_IMAGE"
    local rootfs
    rootfs=$(mktemp -d /var/tmp/knife-base.XXXXXX)
    "${NICE[@]}" debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 \
        || { tail -20 "$rootfs.log"; exit 1; }
    rm -f "$rootfs.log"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import \
        --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
}

torch_wheel() {
    if [[ -n ${TORCH_WHEEL:-} ]]; then
        echo "$TORCH_WHEEL"
        return
    fi
    local found
    found=$(find /opt/wheels "$HOME/.cache/pip" /root/.cache/pip /tmp \
        -name 'torch-2.13.0+cpu-cp311-*.whl' 2>/dev/null | head -1 || true)
    if [[ -z $found ]]; then
        local dir
        dir=$(mktemp -d)
        "${NICE[@]}" pip download --no-deps -d "$dir" --index-url https://download.pytorch.org/whl/cpu \
            'torch==2.13.0+cpu' >&2
        found=$(ls "$dir"/torch-*.whl)
    fi
    echo "$found"
}

build() {  # build FLAVOUR: the test stage, then the runtime image (from the same cache)
    local flavour=$1 wheel
    wheel=$(torch_wheel)
    local args=(
        --isolation=chroot --ulimit nproc=32768:32768 --ulimit nofile=20000:20000
        --format docker --layers
        -f "$ROOT/docker/Dockerfile.$flavour"
        --build-arg "BASE=$BASE_IMAGE"
        --build-arg "TORCH_SPEC=torch==2.13.0+cpu"
        --build-arg "TORCH_INDEX_URL=https://pypi.org/simple"
        --build-arg "TORCH_FIND_LINKS=/wheels"
        --build-arg "KNIFE_CODE_VERSION=$(git -C "$ROOT" describe --always --dirty 2>/dev/null)"
        --volume "$(dirname "$wheel"):/wheels:ro"
        --secret "id=ca,src=$CA_BUNDLE"
    )
    [[ $flavour == gpu ]] && args+=(--build-arg WITH_SC2=0)
    say "build knife-marl:$flavour through its test stage (torch wheel: $(basename "$wheel"))"
    "${NICE[@]}" podman build "${args[@]}" --target test -t "knife-marl:$flavour-test" "$ROOT"
    say "tag knife-marl:$flavour (the runtime stage, cached)"
    "${NICE[@]}" podman build "${args[@]}" --target runtime -t "knife-marl:$flavour" "$ROOT" \
        >/dev/null
    no_secret_inside "knife-marl:$flavour"
}

no_secret_inside() {  # the CA bundle was a build secret: not in a layer, not in ENV
    local image=$1 mnt
    if podman image inspect "$image" --format '{{json .Config.Env}}' | grep -q -e PIP_CERT \
        -e SSL_CERT_FILE -e /run/secrets; then
        echo "error: $image has the build's CA settings in its environment" >&2
        exit 1
    fi
    mnt=$(podman image mount "$image")
    if [[ -e $mnt/run/secrets/ca ]]; then
        podman image unmount "$image" >/dev/null
        echo "error: $image contains /run/secrets/ca" >&2
        exit 1
    fi
    podman image unmount "$image" >/dev/null
    echo "ok: no CA bundle in $image"
}

need_tools
[[ -s $CA_BUNDLE ]] || { echo "error: CA bundle $CA_BUNDLE missing" >&2; exit 1; }
make_base
for flavour in "${TARGETS[@]}"; do
    case $flavour in
        cpu | gpu) build "$flavour" ;;
        *) echo "usage: $0 [cpu] [gpu]" >&2; exit 2 ;;
    esac
done
say "done: $(podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep knife-marl | tr '\n' ' ')"

#!/usr/bin/env bash
# `make image`: build the agent image from ./Containerfile with buildah.
#
# Needs no Docker engine and no registry. Unless BASE_IMAGE names an image to pull, a
# minimal Debian base with python3 is bootstrapped from Debian packages (debootstrap),
# kept in the image store (rebuilt only when missing or REBUILD_BASE=1) and passed to
# the Containerfile as BASE_IMAGE. buildah and debootstrap are installed with apt-get
# when missing (as root).
#
# Everything lives under .image/ (removed by `make clean`):
#   .image/storage, .image/run     buildah's store (vfs driver: no overlay mounts needed)
#   .image/build.env               what was built and where: read by tests/image
#   .image/<name>-<version>.oci.tar  the image as an OCI archive (`skopeo copy` / `podman load`)
#
# Environment (all optional):
#   IMAGE          tag to build              (localhost/k8s-gpu-mcp-agent:<version>)
#   BASE_IMAGE     pullable base to use instead of the local one,
#                  e.g. docker.io/library/python:3.13-slim-trixie
#   REBUILD_BASE=1 bootstrap the local base again (picks up Debian security updates)
#   DEBIAN_SUITE   (trixie)   DEBIAN_MIRROR (http://deb.debian.org/debian)
#   DEBIAN_SECURITY_MIRROR      (http://deb.debian.org/debian-security)
#   CA_BUNDLE      CA certificates pip trusts in the build (/etc/ssl/certs/ca-certificates.crt)
#
# Use the store by hand:  buildah --root .image/storage --runroot .image/run \
#                           --storage-driver vfs images
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=$PWD/.image
SUITE=${DEBIAN_SUITE:-trixie}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
VERSION=$(sed -n 's/^version *= *"\(.*\)"/\1/p' pyproject.toml | head -n 1)
NAME=k8s-gpu-mcp-agent
IMAGE=${IMAGE:-localhost/$NAME:$VERSION}
LOCAL_BASE=localhost/k8s-gpu-mcp-base:$SUITE
ARCHIVE=$STATE/$NAME-$VERSION.oci.tar
BUILDAH=(buildah --root "$STATE/storage" --runroot "$STATE/run" --storage-driver vfs)
# chroot isolation: no runc, no user namespaces; works inside an unprivileged-ish VM.
export BUILDAH_ISOLATION=chroot

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'build-image: %s\n' "$*" >&2; exit 1; }

ensure_tools() {
    local missing=()
    command -v buildah >/dev/null || missing+=(buildah)
    if [ -z "${BASE_IMAGE:-}" ]; then
        command -v debootstrap >/dev/null || missing+=(debootstrap)
    fi
    [ ${#missing[@]} -eq 0 ] && return
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        die "need ${missing[*]}: install them (Debian: apt-get install ${missing[*]}) and rerun"
    fi
    log "installing ${missing[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# A failed base build must not leave a half-made container (a full copy, with vfs).
BASE_CTR=
remove_base_container() {
    [ -z "$BASE_CTR" ] || "${BUILDAH[@]}" rm "$BASE_CTR" >/dev/null 2>&1 || true
}

have_image() { "${BUILDAH[@]}" inspect --type image "$1" >/dev/null 2>&1; }

# Debian minbase + python3, security updates applied, then trimmed the way
# debian:*-slim is (no docs but copyright files, no man pages, locales or apt lists).
build_local_base() {
    local ctr mnt
    ctr=$("${BUILDAH[@]}" from scratch)
    BASE_CTR=$ctr
    trap remove_base_container EXIT
    mnt=$("${BUILDAH[@]}" mount "$ctr")
    log "debootstrap $SUITE (minbase + python3) from $MIRROR (log: .image/base.log)"
    debootstrap --variant=minbase --include=python3 "$SUITE" "$mnt" "$MIRROR" \
        >"$STATE/base.log" 2>&1 || die "debootstrap failed: see .image/base.log"

    cat >"$mnt/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF
    # Packages installed later (builder stages, images built on this one) stay slim too.
    cat >"$mnt/etc/dpkg/dpkg.cfg.d/slim-excludes" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
    cat >"$mnt/etc/apt/apt.conf.d/slim-clean" <<'EOF'
APT::Install-Recommends "false";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
Acquire::Languages "none";
EOF
    log "applying $SUITE-updates and $SUITE-security"
    "${BUILDAH[@]}" run --env DEBIAN_FRONTEND=noninteractive "$ctr" -- \
        sh -c 'apt-get update -qq && apt-get -y -qq upgrade && apt-get clean' \
        >>"$STATE/base.log" 2>&1 || die "updating the base failed: see .image/base.log"

    log "trimming the base"
    # A mount left in the rootfs (debootstrap mounts /proc and /sys in it) would be
    # copied into the layer by commit: a snapshot of this machine's /proc. Once seen.
    local target
    awk -v root="$mnt/" 'index($5, root) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
        while read -r target; do umount -l "$target"; done
    (
        cd "$mnt"
        find proc sys dev -mindepth 1 -delete \
            || die "cannot empty /proc, /sys and /dev of the base rootfs $mnt"
        rm -rf var/lib/apt/lists/* var/cache/apt/* var/cache/debconf/*-old var/lib/dpkg/*-old \
            var/log/* tmp/* var/tmp/* usr/share/man/* usr/share/info/* usr/share/locale/* \
            usr/share/lintian usr/share/linda
        find usr/share/doc -mindepth 1 ! -type d ! -name copyright -delete
        find usr/share/doc -mindepth 1 -type d -empty -delete
        # The runtime provides /dev, resolv.conf and hostname; keep the host's out.
        : >etc/resolv.conf
        : >etc/hostname
    )
    "${BUILDAH[@]}" config \
        --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 --cmd '["/bin/bash"]' \
        --label "org.opencontainers.image.description=Debian $SUITE minbase with python3, bootstrapped locally for k8s-gpu-mcp" \
        "$ctr"
    "${BUILDAH[@]}" umount "$ctr" >/dev/null
    "${BUILDAH[@]}" commit --quiet --rm "$ctr" "$LOCAL_BASE" >/dev/null
    BASE_CTR=
    trap - EXIT
}

main() {
    [ -n "$VERSION" ] || die "no version in pyproject.toml"
    ensure_tools
    mkdir -p "$STATE"

    local base=${BASE_IMAGE:-} pull=missing
    if [ -z "$base" ]; then
        base=$LOCAL_BASE
        pull=never
        if [ "${REBUILD_BASE:-0}" = 1 ] || ! have_image "$base"; then
            build_local_base
        else
            log "using cached base $base (REBUILD_BASE=1 rebuilds it)"
        fi
    fi

    [ -f README.md ] || die "README.md is missing (pyproject.toml names it as the readme)"
    local revision source
    revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
    source=$(git remote get-url origin 2>/dev/null || true)
    local args=(--build-arg "BASE_IMAGE=$base" --build-arg "VERSION=$VERSION"
        --build-arg "REVISION=$revision")
    [ -n "$source" ] && args+=(--build-arg "SOURCE_URL=$source")
    # pip in the build stage must trust what this machine trusts (TLS-inspecting proxies).
    local ca=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
    [ -f "$ca" ] && args+=(--secret "id=ca-certificates,src=$ca")

    log "building $IMAGE on $base"
    "${BUILDAH[@]}" bud --pull="$pull" "${args[@]}" -f Containerfile -t "$IMAGE" . >&2
    # Replaced tags leave dangling images; with vfs each is a full copy.
    "${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true

    rm -f "$ARCHIVE"
    "${BUILDAH[@]}" push --quiet "$IMAGE" "oci-archive:$ARCHIVE:$IMAGE" >&2
    cat >"$STATE/build.env" <<EOF
IMAGE=$IMAGE
BASE_IMAGE=$base
VERSION=$VERSION
STORAGE_ROOT=$STATE/storage
STORAGE_RUNROOT=$STATE/run
STORAGE_DRIVER=vfs
OCI_ARCHIVE=$ARCHIVE
EOF
    local size
    size=$("${BUILDAH[@]}" images --format '{{.Size}}' "$IMAGE" | head -n 1)
    log "built $IMAGE: $size unpacked; $(du -h "$ARCHIVE" | cut -f1) as $ARCHIVE"
}

main "$@"

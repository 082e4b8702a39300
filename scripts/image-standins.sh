#!/usr/bin/env bash
# Local stand-ins for the two base images of the top-level Dockerfile, for machines
# that reach no image registry (this one and CI): registry/tests/image.rs runs it
# before `docker build`.
#
#   debian:bookworm-slim   a minimal Debian bookworm (debootstrap --variant=minbase)
#   rust:1.95-bookworm     the same plus gcc, libc6-dev and ca-certificates, the host's
#                          Rust toolchain (the one rustup points at) and the host's cargo
#                          registry (index and .crate files), with CARGO_NET_OFFLINE=true
#                          so `cargo build --locked` inside it needs no network
#
# An image already in the daemon is left alone (a real one pulled from a registry
# included), so running this again costs two `docker image inspect`s. The debootstrap
# root filesystems are cached as tarballs; the toolchain is copied afresh each time the
# builder stand-in is made, so it is the host's current one. Only the stand-in sets
# CARGO_NET_OFFLINE: the Dockerfile stays what a connected user builds.
#
# The Debian mirror is the one apt on this machine already uses, read from
# /etc/apt/sources.list.d/*.sources and *.list and /etc/apt/sources.list.
#
# Environment:
#   VALV_DOCKER           the docker CLI (default: docker on PATH); DOCKER_HOST as usual
#   VALV_STANDINS_CACHE   where the rootfs tarballs and downloaded .debs are kept
#                         (default /var/cache/valv-standins)
#   VALV_STANDINS_MIRROR  a Debian mirror URL to use instead of apt's
# Needs root (debootstrap), debootstrap, tar and rustc (for the toolchain's location).
set -euo pipefail

DOCKER=${VALV_DOCKER:-docker}
CACHE=${VALV_STANDINS_CACHE:-/var/cache/valv-standins}
SUITE=bookworm
SLIM=debian:bookworm-slim
BUILDER=rust:1.95-bookworm
# Marks both images as stand-ins, so nobody takes them for the real ones.
STANDIN_LABEL="LABEL org.opencontainers.image.description=\"local stand-in made by valv's scripts/image-standins.sh\""

say() { printf 'image-standins: %s\n' "$*"; }
have_image() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

need_slim=1 need_builder=1
have_image "$SLIM" && need_slim=0
have_image "$BUILDER" && need_builder=0
if ((need_slim == 0 && need_builder == 0)); then
    say "$SLIM and $BUILDER are in the daemon already; nothing to do"
    exit 0
fi
((need_slim == 0)) && say "$SLIM is in the daemon already; leaving it"
((need_builder == 0)) && say "$BUILDER is in the daemon already; leaving it"

# The first bookworm mirror apt is configured with: deb822 stanzas (Types: deb,
# Suites: bookworm, not Enabled: no), then one-line `deb [options] URI bookworm …`.
apt_mirror() {
    local f m
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -r "$f" ]] || continue
        m=$(awk -v suite="$SUITE" '
            BEGIN { RS = ""; FS = "\n" }
            {
                types = ""; uris = ""; suites = ""; enabled = "yes"
                for (i = 1; i <= NF; i++) {
                    line = $i
                    if (line ~ /^[ \t]*#/) continue
                    split(line, kv, ":")
                    key = tolower(kv[1]); value = substr(line, length(kv[1]) + 2)
                    gsub(/^[ \t]+|[ \t]+$/, "", value)
                    if (key == "types") types = value
                    else if (key == "uris") uris = value
                    else if (key == "suites") suites = value
                    else if (key == "enabled") enabled = tolower(value)
                }
                if (enabled == "no" || (" " types " ") !~ / deb /) next
                if ((" " suites " ") !~ (" " suite " ")) next
                split(uris, u, /[ \t]+/)
                if (u[1] != "") { print u[1]; exit }
            }' "$f")
        if [[ -n "$m" ]]; then
            echo "$m"
            return
        fi
    done
    for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list; do
        [[ -r "$f" ]] || continue
        m=$(awk -v suite="$SUITE" '
            $1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                if ($(i + 1) == suite) { print $i; exit }
            }' "$f")
        if [[ -n "$m" ]]; then
            echo "$m"
            return
        fi
    done
}

# debootstrap into a temp dir and cache the result as $1 (a tarball); $2 = extra
# debootstrap arguments. Downloaded .debs are kept for the next run.
make_rootfs() {
    local tarball=$1 extra=$2 mirror dir
    if [[ -s "$tarball" ]]; then
        say "using the cached root filesystem $tarball"
        return
    fi
    mirror=${VALV_STANDINS_MIRROR:-$(apt_mirror)}
    if [[ -z "$mirror" ]]; then
        say "no Debian $SUITE mirror in apt's sources; set VALV_STANDINS_MIRROR" >&2
        exit 1
    fi
    command -v debootstrap >/dev/null || {
        say "debootstrap is not installed (apt-get install debootstrap)" >&2
        exit 1
    }
    mkdir -p "$CACHE/debs"
    dir=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    say "debootstrap --variant=minbase${extra:+ $extra} $SUITE (mirror from apt's sources: $mirror)"
    # shellcheck disable=SC2086 # $extra is a list of options
    if ! debootstrap --variant=minbase --cache-dir="$CACHE/debs" $extra "$SUITE" "$dir" "$mirror" \
        >"$dir.log" 2>&1; then
        tail -n 30 "$dir.log" >&2
        rm -rf "$dir"
        exit 1
    fi
    # Slim, as the real image is: no package lists, documentation or man pages.
    find "$dir/var/lib/apt/lists" -mindepth 1 -maxdepth 1 ! -name partial -exec rm -rf {} +
    rm -rf "$dir"/var/cache/apt/*.bin \
        "$dir"/var/cache/apt/archives/*.deb "$dir"/usr/share/doc/* "$dir"/usr/share/man/* \
        "$dir"/usr/share/info/* "$dir"/var/log/*.log "$dir"/var/log/apt/*
    # mktemp made the directory 0700; it becomes the image's /, which every user
    # must be able to traverse.
    chmod 0755 "$dir"
    tar --numeric-owner -C "$dir" -cf "$tarball.part" .
    mv "$tarball.part" "$tarball"
    rm -rf "$dir" "$dir.log"
    say "cached $tarball ($(du -h "$tarball" | cut -f1))"
}

mkdir -p "$CACHE"
START=$(date +%s)

if ((need_slim)); then
    make_rootfs "$CACHE/$SUITE-minbase.tar" ""
    "$DOCKER" import --change "$STANDIN_LABEL" \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' "$CACHE/$SUITE-minbase.tar" "$SLIM" >/dev/null
    say "imported $SLIM ($("$DOCKER" image inspect --format '{{.Size}}' "$SLIM" | numfmt --to=iec))"
fi

if ((need_builder)); then
    sysroot=$(rustc --print sysroot)
    toolchain=$(basename "$sysroot")
    rust_version=$(rustc --version)
    make_rootfs "$CACHE/$SUITE-build.tar" "--include=gcc,libc6-dev,ca-certificates"
    cargo_home=${CARGO_HOME:-$HOME/.cargo}
    stage=$(mktemp -d "$CACHE/builder.XXXXXX")
    trap 'rm -rf "$stage"' EXIT
    tar -C "$stage" -xf "$CACHE/$SUITE-build.tar"
    chmod 0755 "$stage"
    # The toolchain without its documentation (rust-docs, about half of it).
    mkdir -p "$stage/usr/local/rustup/toolchains/$toolchain" "$stage/usr/local/cargo/bin"
    tar -C "$sysroot" --exclude=./share/doc -cf - . |
        tar -C "$stage/usr/local/rustup/toolchains/$toolchain" -xf -
    # The registry's index and .crate files; cargo unpacks the sources it needs itself.
    for part in index cache; do
        if [[ -d "$cargo_home/registry/$part" ]]; then
            mkdir -p "$stage/usr/local/cargo/registry"
            cp -a "$cargo_home/registry/$part" "$stage/usr/local/cargo/registry/"
        fi
    done
    bin="/usr/local/rustup/toolchains/$toolchain/bin"
    tar --numeric-owner -C "$stage" -cf - . |
        "$DOCKER" import --change "$STANDIN_LABEL" \
            --change "ENV PATH=/usr/local/cargo/bin:$bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
            --change 'ENV CARGO_HOME=/usr/local/cargo' \
            --change 'ENV RUSTUP_HOME=/usr/local/rustup' \
            --change 'ENV CARGO_NET_OFFLINE=true' \
            --change 'CMD ["bash"]' - "$BUILDER" >/dev/null
    rm -rf "$stage"
    trap - EXIT
    say "imported $BUILDER: $rust_version ($toolchain), registry from $cargo_home, offline ($("$DOCKER" image inspect --format '{{.Size}}' "$BUILDER" | numfmt --to=iec))"
fi
say "done in $(($(date +%s) - START)) s"

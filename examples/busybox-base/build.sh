#!/usr/bin/env bash
# Make the local base image `paas-local/busybox:1` from Debian's busybox-static, with no registry:
# a root filesystem holding only busybox and its applet links, imported with `docker import`.
# The offline examples and the tests build FROM it.
#   examples/busybox-base/build.sh [image-name]
set -euo pipefail
image=${1:-paas-local/busybox:1}
busybox=${BUSYBOX:-/bin/busybox}
if docker image inspect "$image" >/dev/null 2>&1; then
  echo "$image exists"
  exit 0
fi
if [[ $(ldd "$busybox" 2>&1 || true) != *"not a dynamic executable"* ]]; then
  echo "error: $busybox is not a static binary: install Debian's busybox-static" >&2
  exit 1
fi
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
mkdir -p "$rootfs"/{bin,etc,tmp,www}
cp "$busybox" "$rootfs/bin/busybox"
for applet in $("$busybox" --list); do
  [ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
chmod 1777 "$rootfs/tmp"
tar -C "$rootfs" -c . | docker import --change 'ENV PATH=/bin' --change 'CMD ["/bin/sh"]' - "$image" >/dev/null
echo "built $image"
